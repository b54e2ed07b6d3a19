"""The public API and start-up weight."""

import os
import re
import subprocess
import sys
import time

import reprobuild

# packaging parses requirements only when the package closure cache is cold
HEAVY = re.compile(
    r"\b(polars|sklearn|dask|distributed|fsspec|s3fs|pandas|numpy|packaging|threadpoolctl|uv"
    r"|altair|vl_convert|jsonschema|narwhals|jinja2)\b"  # the plots extra and its dependencies
)

NOOP_NEEDS_NONE = re.compile(
    r"\| +(concurrent\.futures|logging|typing|socket|shutil|tempfile|yaml|networkx|rich)$", re.M
)


def test_public_api_is_pinned():
    assert sorted(reprobuild.__all__) == sorted(
        [
            "__version__",
            "BuildOptions",
            "Project",
            "build",
            "plan",
            "checkout",
            "commit",
            "Reporter",
            "ReprobuildError",
        ]
    )
    assert callable(reprobuild.build) and callable(reprobuild.plan)
    assert issubclass(reprobuild.ReprobuildError, Exception)
    assert reprobuild.BuildOptions().jobs == 1


def imported_by(args, cwd):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reprobuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    return set(HEAVY.findall(proc.stderr)), proc


def test_help_and_noop_status_stay_light(tmp_path):
    (tmp_path / "reprobuild.yaml").write_text(
        "env: {packages: [numpy]}\nstages:\n  s:\n    cmd: printf 'a,b\\n1,2\\n' > o.csv\n"
        "    outs: [o.csv]\n    plots: [o.csv]\n"
    )
    old = time.time() - 60  # out of the racy window, so that the plan cache is trusted
    os.utime(tmp_path / "reprobuild.yaml", (old, old))
    heavy, proc = imported_by(["--help"], tmp_path)
    assert proc.returncode == 0 and heavy == set()
    heavy, proc = imported_by(["build", "-q"], tmp_path)  # a stage with plots runs
    assert proc.returncode == 0 and heavy == set(), heavy
    # the out leaves the racy window now, not between the measured runs below (where the
    # stat cache would then learn it, and saving it loads tempfile)
    os.utime(tmp_path / "o.csv", (old, old))
    imported_by(["status"], tmp_path)  # keeps the plan (the first build had no state folder yet)
    for args in (["status"], ["build"]):  # and a no-op build
        heavy, proc = imported_by(args, tmp_path)
        assert proc.returncode == 0 and heavy == set(), (args, heavy)
        # nothing runs, so no executor (concurrent.futures, which loads logging) and no typing
        stdlib = set(NOOP_NEEDS_NONE.findall(proc.stderr))
        assert stdlib == set(), (args, stdlib)


def test_trusted_keys_do_not_load_cryptography_at_start_up(tmp_path):
    key = "ed25519:" + "A" * 43 + "="
    (tmp_path / "reprobuild.yaml").write_text(
        f"trusted_keys: [{key}]\nstages:\n  s:\n    cmd: echo > o\n    outs: [o]\n"
    )
    subprocess.run([sys.executable, "-m", "reprobuild", "build", "-q"], cwd=tmp_path, check=True)
    for args in (["--help"], ["status"], ["build"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "reprobuild", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-500:]
        assert "cryptography" not in proc.stderr, args
