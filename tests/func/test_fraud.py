"""The fraud-detection showcase, at a small row count: cached, incremental, bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.conftest import REPO, stages_run

pytest.importorskip("polars")
pytest.importorskip("sklearn")

FRAUD = REPO / "pipelines" / "fraud"
ROWS = 8000  # ~8 s a build with -j 2; large enough for the models to learn
ALL = [
    "generate",
    "prepare",
    "featurize",
    "train@logreg",
    "train@forest",
    "train@boosting",
    "evaluate@logreg",
    "evaluate@forest",
    "evaluate@boosting",
    "select",
]


@pytest.fixture(scope="module")
def fraud(tmp_path_factory):
    """The pipeline copied into a fresh git repository, sized down, built once."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("fraud") / "repo"
    shutil.copytree(
        FRAUD,
        root,
        ignore=shutil.ignore_patterns(
            "data", "models", "reports", "reprobuild.lock", ".reprobuild", "__pycache__"
        ),
    )
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("rows: 100000", f"rows: {ROWS}"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    first = subprocess.run(
        [sys.executable, "-m", "reprobuild", "build", "-j", "2"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert first.returncode == 0, first.stderr
    return root, first


def outputs(root):
    """sha256 of every output file and of the lockfile."""
    files = [p for d in ("data", "models", "reports") for p in (root / d).rglob("*") if p.is_file()]
    files.append(root / "reprobuild.lock")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def cli(root, capsys, *args):
    from tests.conftest import Workspace

    return Workspace(root, capsys).run(*args)


def test_first_build_runs_every_stage_and_the_models_learn(fraud):
    root, first = fraud
    assert sorted(stages_run(type("R", (), {"out": first.stdout})())) == sorted(ALL)
    for model in ("logreg", "forest", "boosting"):
        m = json.loads((root / f"reports/{model}.json").read_text())
        assert m["roc_auc"] > 0.75, (model, m)
        assert 0 < m["recall"] <= 1 and {"precision", "f1", "pr_auc"} <= set(m)
    best = json.loads((root / "reports/best.json").read_text())
    assert (root / "models/best.pkl").read_bytes() == (
        root / f"models/{best['selected']}.pkl"
    ).read_bytes()


def test_second_build_runs_nothing(fraud, capsys):
    root, _ = fraud
    r = cli(root, capsys, "build")
    assert r.code == 0 and stages_run(r) == [] and "10 up to date" in r.out


def test_one_hyperparameter_reruns_that_model_only(fraud, capsys):
    root, _ = fraud
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("n_estimators: 150", "n_estimators: 60"))
    try:
        st = cli(root, capsys, "status", "--json")
        doc = json.loads(st.out)
        assert doc["stale"] == ["train@forest", "evaluate@forest", "select"]
        assert (
            "param changed: train.models.forest.n_estimators 150 -> 60"
            in doc["stages"]["train@forest"]["reasons"]
        )
        r = cli(root, capsys, "build")
        assert r.code == 0 and stages_run(r) == ["train@forest", "evaluate@forest", "select"]
    finally:
        (root / "params.yaml").write_text(params)
    r = cli(root, capsys, "build")  # back to the old params: restored from the cache, not run
    assert stages_run(r) == [] and r.code == 0


def test_from_scratch_rebuild_is_byte_identical(fraud, capsys):
    root, _ = fraud
    before = outputs(root)
    for d in ("data", "models", "reports", "cache", ".reprobuild"):
        shutil.rmtree(root / d)
    (root / "reprobuild.lock").unlink()
    r = cli(root, capsys, "build", "-j", "2")
    assert r.code == 0 and sorted(stages_run(r)) == sorted(ALL)
    assert outputs(root) == before


def test_verify_all_reproducible(fraud, capsys):
    root, _ = fraud
    r = cli(root, capsys, "verify", "--all")
    assert r.code == 0, r.out
    assert "10 of 10 stages reproducible" in r.out


def test_predict_scores_new_claims(fraud):
    import subprocess
    import sys

    root, _ = fraud
    proc = subprocess.run(
        [sys.executable, "predict.py", "data/raw/claims.parquet", "--limit", "5"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
