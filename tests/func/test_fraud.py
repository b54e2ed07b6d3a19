"""The fraud-detection showcase, at a small row count: cached, incremental, bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.conftest import REPO, stages_run

pytest.importorskip("polars")
pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow  # builds the fraud pipeline (tens of seconds)

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


def test_report_names_every_stage_and_the_selected_models_lineage(fraud, capsys):
    import re

    root, _ = fraud
    r = cli(root, capsys, "report", "-o", "report.html", "--lineage", "models/best.pkl")
    assert r.code == 0, r.err
    page = (root / "report.html").read_text()
    dag = page[page.index('<div class="dag">') : page.index("</svg>")]
    for name in ALL:  # in the graph's picture, and a section of its own
        assert f">{name}<" in dag and f'id="stage-{name}"' in page
    assert "Nothing: all 10 stages are up to date." in page
    assert "Made by <b>select</b>" in page
    lineage = re.findall(r'<tr class="lineage-stage"><td>([^<]+)</td>', page)
    assert sorted(lineage) == sorted(ALL)  # the selected model depends on every stage
    selected = json.loads((root / "reports/best.json").read_text())["selected"]
    assert f"models/{selected}.pkl" in page
    assert "reports/boosting.json" in page and "recall" in page  # the metrics table


@pytest.mark.browser
def test_plots_page_in_chromium_overlays_the_three_pr_curves(fraud, capsys, tmp_path):
    from tests.browser import open_page

    root, _ = fraud
    r = cli(root, capsys, "plots", "show")
    assert r.code == 0 and r.err == "", r.err
    page = open_page(
        (root / "reprobuild_plots/index.html").as_uri(),
        tmp_path / "fraud-plots.png",
        "document.querySelectorAll('.vl-chart svg').length === 3",
    )
    try:
        assert page.console_errors == [] and page.exceptions == [] and page.requests == []
        count = "document.querySelectorAll('#plot-{} svg .mark-{}.role-mark path').length"
        assert page.evaluate(count.format(1, "line")) == 3  # one curve per model
        assert page.evaluate(count.format(2, "rect")) == 12  # three 2x2 confusion matrices
        assert page.evaluate(count.format(3, "rect")) == 3  # a recall bar per model
    finally:
        page.close()
