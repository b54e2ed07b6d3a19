"""The quick start on a fresh clone: the committed fraud pipeline rebuilds to the committed lockfile."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, git

pytest.importorskip("polars")
pytest.importorskip("sklearn")


@pytest.mark.slow
def test_fresh_clone_builds_the_fraud_pipeline_and_git_status_stays_clean(tmp_path):
    """From scratch (no outputs, empty cache), as the README's quick start does, at the
    committed 100,000 rows; with OPENBLAS_CORETYPE set otherwise than on this machine, as
    another machine of the same kind may have it."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    head = git(REPO, "rev-parse", "HEAD").strip()
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(REPO), str(clone))
    git(clone, "checkout", "-q", head)
    # a user's shell: importing dask.distributed (other tests do) sets PYTHONHASHSEED=6640
    # in this process, and the fraud pipeline records that variable in its key
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REPROBUILD_") and k != "PYTHONHASHSEED"
    }
    env["OPENBLAS_CORETYPE"] = "SkylakeX" if env.get("OPENBLAS_CORETYPE") != "SkylakeX" else "Zen"
    r = subprocess.run(
        [sys.executable, "-m", "reprobuild", "build", "-j", "2", "-f", "pipelines/fraud"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "different bytes" not in r.stderr, r.stderr  # no alarm against the committed lockfile
    assert git(clone, "status", "--porcelain") == "", git(clone, "diff")
    st = subprocess.run(
        [sys.executable, "-m", "reprobuild", "status", "-f", "pipelines/fraud"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert st.stdout.strip() == "10 stages up to date", st.stdout
