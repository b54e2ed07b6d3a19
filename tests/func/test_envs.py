"""Environments: package closures in the key, the nondeterminism alarm, uv-built stage environments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from reprobuild.envs import uv_binary
from tests.conftest import git, stages_run, write_tree
from tests.wheels import make_wheel


def uv() -> str:
    return uv_binary()


# -- the package closure -------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "tinydep", "1.0")
    make_wheel(folder, "tinydep", "2.0")
    make_wheel(folder, "tinyextra", "1.0")
    make_wheel(folder, "tinyapp", "1.0", ("tinydep>=1", 'tinyextra; extra == "fancy"'))
    return folder


@pytest.fixture
def venv(tmp_path, wheels) -> Path:
    """A real virtual environment whose python runs this reprobuild, with tinyapp 1.0 and
    tinydep 1.0 installed from local wheels (no network)."""
    root = tmp_path / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(root)], check=True)
    purelib = Path(
        subprocess.run(
            [
                str(root / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # reprobuild and its libraries from the test's own environment, after the venv's own packages
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "zz_outer.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    install(root, wheels, "tinyapp==1.0", "tinydep==1.0")
    return root


def install(venv: Path, wheels: Path, *reqs: str) -> None:
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "--no-index",
            "--find-links",
            str(wheels),
            *reqs,
        ],
        check=True,
    )


def rb(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "reprobuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def closure_workspace(tmp_path: Path, packages: str) -> Path:
    root = tmp_path / "repo"
    write_tree(
        root,
        {
            "reprobuild.yaml": f"""\
                env: {{packages: {packages}}}
                stages:
                  s:
                    cmd: echo hi > o.txt
                    outs: [o.txt]
                """
        },
    )
    git(root, "init", "-q")
    return root


def test_key_changes_for_a_dependency_of_a_listed_package(tmp_path, venv, wheels):
    root = closure_workspace(tmp_path, "[tinyapp]")
    r = rb(venv, root, "build")
    assert r.returncode == 0, r.stderr
    lock = (root / "reprobuild.lock").read_text()
    assert "packages: {tinyapp: '1.0', tinydep: '1.0'}" in lock  # the closure, sorted
    assert "tinyextra" not in lock  # an extra nobody asked for
    assert rb(venv, root, "status").stdout.strip() == "1 stage up to date"

    install(venv, wheels, "tinydep==2.0")  # the same tinyapp, a new requirement under it
    st = rb(venv, root, "status")
    assert "env changed: tinydep 1.0 -> 2.0 (via tinyapp)" in st.stdout, st.stdout
    r = rb(venv, root, "build")
    assert r.returncode == 0 and "running s" in r.stdout
    assert "packages: {tinyapp: '1.0', tinydep: '2.0'}" in (root / "reprobuild.lock").read_text()


def test_extras_are_honoured_and_the_closure_is_cached(tmp_path, venv, wheels):
    install(venv, wheels, "tinyextra==1.0")
    root = closure_workspace(tmp_path, "['tinyapp[fancy]']")
    assert rb(venv, root, "build").returncode == 0
    lock = (root / "reprobuild.lock").read_text()
    assert "packages: {tinyapp: '1.0', tinydep: '1.0', tinyextra: '1.0'}" in lock
    cached = json.loads((root / "cache" / "packages.json").read_text())
    (mine,) = cached["interpreters"].values()
    assert mine["closures"]["tinyapp[fancy]"]["tinyextra"] == "1.0"
    assert mine["via"]["tinyapp[fancy]"] == {"tinydep": ["tinyapp"], "tinyextra": ["tinyapp"]}


def test_packages_all_takes_every_installed_distribution(tmp_path, venv, wheels):
    root = closure_workspace(tmp_path, "all")
    assert rb(venv, root, "build").returncode == 0
    lock = (root / "reprobuild.lock").read_text()
    for name in ("tinyapp: '1.0'", "tinydep: '1.0'", "pyyaml:", "networkx:", "xxhash:"):
        assert name in lock
    install(venv, wheels, "tinyextra==1.0")  # one more distribution: every stage is stale
    st = rb(venv, root, "status")
    assert "env changed: tinyextra (none) -> 1.0" in st.stdout, st.stdout


# -- the alarm --------------------------------------------------------------------------

ALARM_PIPELINE = {
    # the output depends on a variable the key does not list
    "reprobuild.yaml": """\
        stages:
          coretype:
            cmd: python -c "import os; print(os.environ.get('OPENBLAS_CORETYPE'))" > out.txt
            outs: [out.txt]
          after:
            cmd: cat out.txt > after.txt
            deps: [out.txt]
            outs: [after.txt]
        """
}


def build(ws, coretype: str, *args: str):
    old = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        return ws.run("build", *args)
    finally:
        if old is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = old


def test_same_key_different_bytes_raises_the_alarm(ws):
    ws.write(ALARM_PIPELINE)
    assert build(ws, "Haswell").code == 0
    lock = ws.read("reprobuild.lock")
    r = build(ws, "SkylakeX", "--force", "coretype")
    assert r.code == 0  # a warning, not a failure
    assert "gave different bytes for a key built before" in r.err
    assert "coretype" in r.err and "earlier result: run record" in r.err
    old = json.loads(ws.read(".reprobuild/alarms.json"))["stages"]["coretype"]["outs"]["out.txt"]
    assert f"out out.txt: {old[0]} -> {old[1]}" in r.err
    assert "machine: OPENBLAS_CORETYPE: Haswell -> SkylakeX" in r.err  # the profile difference
    assert ws.read("out.txt") == "SkylakeX\n"  # nothing rerun or overwritten because of it
    assert ws.read("reprobuild.lock") != lock

    st = ws.run("status")  # kept: status lists it while the key is the locked one
    assert st.code == 0 and "known unreproducible" in st.out and "coretype" in st.out
    doc = json.loads(ws.run("status", "--json").out)
    assert list(doc["unreproducible"]) == ["coretype"]
    v = ws.run("verify", "coretype")
    assert "known unreproducible" in v.out

    # --strict: the same surprise fails the build (CI), and nothing of it is recorded
    lock = ws.read("reprobuild.lock")
    r = build(ws, "Zen", "--force", "--strict")
    assert r.code == 1
    assert "nondeterministic (--strict)" in r.err
    assert "machine: OPENBLAS_CORETYPE: SkylakeX -> Zen" in r.err
    assert "after" not in stages_run(r)  # downstream of the failure: not run
    assert ws.read("reprobuild.lock") == lock

    # a change of the stage's key: the alarm no longer applies
    ws.write({"reprobuild.yaml": ALARM_PIPELINE["reprobuild.yaml"].replace("print(", "print( ")})
    assert build(ws, "Zen").code == 0
    assert "known unreproducible" not in ws.run("status").out


def test_alarm_against_a_committed_lockfile_from_another_machine(ws):
    """A fresh clone: outs and cache missing, the lockfile's key matches, the bytes do not."""
    ws.write(ALARM_PIPELINE)
    assert build(ws, "Haswell").code == 0
    shutil.rmtree(ws.root / "cache")
    (ws.root / "out.txt").unlink()
    r = build(ws, "SkylakeX")
    assert r.code == 0 and "earlier result: lockfile" in r.err
    assert "machine profile is unknown" in r.err
    assert stages_run(r) == ["coretype", "after"]
    r = build(ws, "SkylakeX")  # same machine again: silence
    assert r.code == 0 and "different bytes" not in r.err


def test_a_deterministic_stage_raises_no_alarm(ws):
    ws.write(ALARM_PIPELINE)
    assert build(ws, "Haswell").code == 0
    r = build(ws, "Haswell", "--force", "--strict")
    assert r.code == 0 and "different bytes" not in r.err
    assert not (ws.root / ".reprobuild" / "alarms.json").exists()


def test_run_records_keep_the_machine_profile_and_old_records_still_restore(ws):
    ws.write(ALARM_PIPELINE)
    assert build(ws, "Haswell").code == 0
    lock = ws.read("reprobuild.lock")
    key = lock.split("key: ")[2].split()[0]  # coretype sorts after `after`
    record_path = ws.root / "cache" / "runs" / key[:2] / key[2:]
    record = json.loads(record_path.read_text())
    profile = record["profile"]
    assert profile["vars"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert profile["cpus"] >= 1 and profile["machine"] and "cpu" in profile
    assert "profile" not in lock and "Haswell" not in lock  # the lockfile stays machine-independent
    # a record written before profiles existed is still used
    del record["profile"]
    record_path.write_text(json.dumps(record))
    (ws.root / "out.txt").unlink()
    (ws.root / "after.txt").unlink()
    r = build(ws, "Haswell")
    assert r.code == 0 and stages_run(r) == [] and ws.read("out.txt") == "Haswell\n"


# -- hermetic environments -----------------------------------------------------------------

ENV_PIPELINE = """\
    env: {requirements: requirements.lock}
    stages:
      one:
        cmd: python -c "import sys, tinydep; print(sys.prefix, tinydep.__version__)" > one.txt
        outs: [one.txt]
      two:
        cmd: python -c "import sys, tinydep; print(sys.prefix, tinydep.__version__)" > two.txt
        outs: [two.txt]
    """


def requirements(version: str, wheels: Path) -> str:
    return f"--no-index\n--find-links {wheels}\ntinyapp==1.0\ntinydep=={version}\n"


def env_workspace(root: Path, wheels: Path) -> Path:
    write_tree(
        root,
        {"reprobuild.yaml": ENV_PIPELINE, "requirements.lock": requirements("1.0", wheels)},
    )
    git(root, "init", "-q")
    return root


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobuild", *args], cwd=cwd, capture_output=True, text=True
    )


def test_uv_environment_made_once_for_two_stages_and_two_workspaces(tmp_path, wheels):
    cache = tmp_path / "shared-cache"
    a = env_workspace(tmp_path / "a", wheels)
    b = env_workspace(tmp_path / "b", wheels)
    # both workspaces at once, two stages each (-j 2): four stages want the environment
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reprobuild", "build", "-j", "2", "--cache-dir", str(cache)],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ws in (a, b)
    ]
    outputs = [p.communicate() for p in procs]
    ra, rb_ = (
        subprocess.CompletedProcess(p.args, p.returncode, *o)
        for p, o in zip(procs, outputs, strict=True)
    )
    assert ra.returncode == 0 and rb_.returncode == 0, ra.stderr + rb_.stderr
    made = (ra.stdout + rb_.stdout).count("with uv (once")
    assert made == 1, ra.stdout + rb_.stdout
    (env,) = [p for p in (cache / "envs").iterdir() if p.is_dir()]
    for ws, name in ((a, "one"), (a, "two"), (b, "one"), (b, "two")):
        prefix, version = (ws / f"{name}.txt").read_text().split()
        assert Path(prefix) == env and version == "1.0"  # the stage ran in it
    lock = (a / "reprobuild.lock").read_text()
    assert "packages: {tinyapp: '1.0', tinydep: '1.0'}" in lock
    assert "requirements: {requirements.lock:" in lock
    assert (b / "reprobuild.lock").read_text() == lock

    v = run_cli(a, "verify", "--cache-dir", str(cache))  # re-runs aside, in the same environment
    assert v.returncode == 0 and "2 of 2 stages reproducible" in v.stdout, v.stdout + v.stderr

    # gc keeps what a kept lockfile refers to
    gc = run_cli(a, "gc", "--cache-dir", str(cache))
    assert gc.returncode == 0 and env.is_dir()

    # a new lock: its hash is in the key, a new environment is made, and used
    (a / "requirements.lock").write_text(requirements("2.0", wheels))
    st = run_cli(a, "status", "--cache-dir", str(cache))
    assert "env changed: tinydep 1.0 -> 2.0" in st.stdout
    r = run_cli(a, "build", "--cache-dir", str(cache))
    assert r.returncode == 0 and r.stdout.count("with uv (once") == 1
    prefix, version = (a / "one.txt").read_text().split()
    assert version == "2.0" and Path(prefix) != env and Path(prefix).parent == env.parent
    # b's lockfile still names the old one: both survive gc; then b moves on and the old goes
    assert run_cli(a, "gc", "--cache-dir", str(cache)).returncode == 0
    (b / "requirements.lock").write_text(requirements("2.0", wheels))
    r = run_cli(b, "build", "--cache-dir", str(cache))
    assert r.returncode == 0 and "with uv (once" not in r.stdout
    gc = run_cli(b, "gc", "--cache-dir", str(cache))
    assert gc.returncode == 0
    # gc sees only its own workspace's lockfiles: a's and b's now both name the new one
    assert not env.exists() and Path(prefix).is_dir()


def test_a_failed_environment_fails_the_stage_with_uvs_message(tmp_path, wheels):
    root = env_workspace(tmp_path / "w", wheels)
    (root / "requirements.lock").write_text(requirements("9.9", wheels))
    r = run_cli(root, "build")
    assert r.returncode == 1
    assert "failed one: uv pip failed" in " ".join(r.stderr.split())
    assert "uv pip failed" in r.stderr and "tinydep" in r.stderr, r.stderr
    assert not [p for p in (root / "cache" / "envs").iterdir() if p.is_dir()]
    assert not any((root / "cache" / "tmp").iterdir())  # no half-made environment left


def test_environment_on_dask_workers(tmp_path, wheels):
    pytest.importorskip("distributed")
    root = env_workspace(tmp_path / "w", wheels)
    r = run_cli(root, "build", "--executor", "dask", "-j", "2")
    assert r.returncode == 0, r.stderr
    (env,) = [p for p in (root / "cache" / "envs").iterdir() if p.is_dir()]
    assert Path((root / "one.txt").read_text().split()[0]) == env


def test_requirements_file_must_exist(tmp_path):
    root = tmp_path / "w"
    write_tree(root, {"reprobuild.yaml": ENV_PIPELINE})
    r = run_cli(root, "status")
    assert r.returncode == 2
    assert "reprobuild.yaml:1" in r.stderr and "requirements.lock' does not exist" in r.stderr


def test_environment_from_a_pyproject_and_uv_lock_pair(tmp_path, wheels):
    root = tmp_path / "w"
    write_tree(
        root,
        {
            "envproj/pyproject.toml": f"""\
                [project]
                name = "stage-env"
                version = "0"
                requires-python = ">=3.11"
                dependencies = ["tinydep==1.0"]

                [tool.uv]
                no-index = true
                find-links = ["{wheels}"]
                """,
            "reprobuild.yaml": """\
                stages:
                  a:
                    cmd: python -c "import sys, tinydep; print(sys.prefix, tinydep.__version__)" > a.txt
                    outs: [a.txt]
                    env: {requirements: envproj/uv.lock}
                """,
        },
    )
    subprocess.run([uv(), "lock", "-q"], cwd=root / "envproj", check=True)
    git(root, "init", "-q")
    r = run_cli(root, "build")
    assert r.returncode == 0, r.stderr
    prefix, version = (root / "a.txt").read_text().split()
    assert Path(prefix).parent == root / "cache" / "envs" and version == "1.0"
    lock = (root / "reprobuild.lock").read_text()
    assert "packages: {tinydep: '1.0'}" in lock  # the project itself is not installed
    assert "envproj/pyproject.toml:" in lock and "envproj/uv.lock:" in lock


def test_alarm_against_a_remotes_run_record_with_pull(tmp_path, capsys):
    pytest.importorskip("fsspec")
    from tests.conftest import Workspace

    remote = tmp_path / "remote"
    remote.mkdir()
    first = Workspace(tmp_path / "first", capsys)
    first.root.mkdir()
    git(first.root, "init", "-q")
    first.write(ALARM_PIPELINE)
    assert build(first, "Haswell").code == 0
    assert first.run("push", "--remote", str(remote)).code == 0

    second = Workspace(tmp_path / "second", capsys)  # another machine: its own cache
    second.root.mkdir()
    git(second.root, "init", "-q")
    second.write(ALARM_PIPELINE)
    r = build(second, "Zen", "--force", "--pull", "--remote", str(remote))
    assert r.code == 0 and "earlier result: remote run record" in r.err, r.err
    assert "machine: OPENBLAS_CORETYPE: Haswell -> Zen" in r.err  # the remote record's profile


def test_always_run_stages_raise_no_alarm(ws):
    """They declare that their result depends on more than their key (a clock, here)."""
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  stamp:
                    cmd: python -c "import time; print(time.time_ns())" > now.txt
                    outs: [now.txt]
                    always_run: true
                """
        }
    )
    assert ws.run("build").code == 0
    r = ws.run("build", "--strict")
    assert r.code == 0 and "different bytes" not in r.err


def test_missing_packaging_names_the_extra(tmp_path):
    # packaging reads requirement markers; it is in [envs] and [fraud], not the core
    root = closure_workspace(tmp_path, "[rich]")  # rich has requirements to read
    code = (
        "import sys; sys.modules['packaging'] = None\n"
        "sys.modules['packaging.requirements'] = None\n"
        "from reprobuild.cli.main import main\n"
        "sys.exit(main(['build']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: env.packages needs packaging to read requirement markers: "
        "pip install 'reprobuild[envs]'"
    ]
    assert not (root / "reprobuild.lock").exists()
