"""`push`, `pull` and `build --pull` through the CLI, against a folder remote and an S3 server on loopback."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.conftest import Workspace, git, stages_restored, stages_run
from tests.s3server import assert_remote_usable, remote_files, remote_fs

pytest.importorskip("fsspec", reason="remotes need fsspec (pip install -e '.[test]' brings it)")

OUTS = ["out/a.txt", "out/sub/0.txt", "out/sub/1.txt", "out/sub/2.txt", "single.txt", "total.txt"]

PIPE = {
    "reprobuild.yaml": """\
        stages:
          make:
            cmd: python make.py ${n}
            outs: [out/, single.txt]
          total:
            cmd: python total.py
            deps: [out/, single.txt]
            outs: [total.txt]
        """,
    "params.yaml": "n: 3\n",
    "make.py": """\
        import os, sys
        n = int(sys.argv[1])
        os.makedirs("out/sub", exist_ok=True)
        for i in range(n):
            open(f"out/sub/{i}.txt", "w").write(f"file {i} of {n}\\n" * (i + 1))
        open("out/a.txt", "w").write("a\\n")
        open("single.txt", "w").write(f"{n}\\n")
        """,
    "total.py": """\
        import pathlib
        files = sorted(pathlib.Path("out").rglob("*.txt")) + [pathlib.Path("single.txt")]
        pathlib.Path("total.txt").write_text("".join(p.read_text() for p in files))
        """,
    ".gitignore": "out/\nsingle.txt\ntotal.txt\n",  # outputs travel through the remote, not git
}


@pytest.fixture
def built(ws):
    """A workspace that built the pipeline and committed its lockfile."""
    ws.write(PIPE)
    r = ws.run("build")
    assert r.code == 0, r.err
    ws.commit_all("built")
    return ws


def clone(ws: Workspace, name: str = "clone") -> Workspace:
    """A fresh `git clone` of the workspace's repository: same lockfile, no outputs, empty cache."""
    target = ws.root.parent / name
    git(ws.root.parent, "clone", "-q", str(ws.root), str(target))
    assert not (target / "cache").exists() and not (target / "single.txt").exists()
    return Workspace(target, ws.capsys)


def same_outputs(a: Workspace, b: Workspace) -> None:
    for rel in OUTS:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel


def test_push_then_build_pull_in_a_clone_runs_nothing(built, remote_url):
    r = built.run("push", "--remote", remote_url)
    assert r.code == 0, r.err
    assert (
        "pushed 7 objects" in r.out and "2 run records" in r.out
    )  # 5 files, 1 manifest, total.txt
    assert assert_remote_usable(remote_url) == 2
    again = built.run("push", "--remote", remote_url)
    assert (
        again.code == 0 and "pushed 0 objects" in again.out and "9 were already there" in again.out
    )

    other = clone(built)
    r = other.run("build", "--pull", "--remote", remote_url)
    assert r.code == 0, r.err
    assert stages_run(r) == [] and stages_restored(r) == ["make", "total"]
    same_outputs(built, other)
    assert other.run("status", "--check").code == 0
    assert other.read("reprobuild.lock") == built.read("reprobuild.lock")


def test_pull_checks_out_what_the_lockfile_names(built, remote_url):
    built.run("push", "--remote", remote_url)
    other = clone(built)
    r = other.run("pull", "--remote", remote_url)
    assert r.code == 0, r.err
    assert "pulled 7 objects" in r.out and "3 restored" in r.out
    same_outputs(built, other)
    assert other.run("status", "--check").code == 0
    assert stages_run(other.run("build")) == []
    r = other.run("pull", "--remote", remote_url)
    assert "pulled 0 objects" in r.out and "3 already in place" in r.out


def test_pull_of_a_target_brings_only_its_stages(built, tmp_path):
    url = str(tmp_path / "remote")
    built.run("push", "--remote", url)
    other = clone(built)
    r = other.run("pull", "--remote", url, "make")
    assert r.code == 0, r.err
    assert (other.root / "single.txt").exists() and not (other.root / "total.txt").exists()


def test_push_of_a_target_pushes_it_and_its_upstream(built, tmp_path):
    url = str(tmp_path / "remote")
    r = built.run("push", "--remote", url, "make")
    assert r.code == 0 and "pushed 6 objects" in r.out and "1 run records" in r.out
    other = clone(built)
    r = other.run("build", "--pull", "--remote", url)
    assert stages_restored(r) == ["make"] and stages_run(r) == ["total"]
    same_outputs(built, other)


def test_tampered_object_is_refused_and_the_stage_rebuilt(built, remote_url, caplog):
    built.run("push", "--remote", remote_url)
    digest = yaml.safe_load(built.read("reprobuild.lock"))["stages"]["make"]["outs"]["single.txt"][
        "hash"
    ]
    fs, root = remote_fs(remote_url)
    fs.pipe_file(f"{root}/objects/{digest[:2]}/{digest[2:]}", b"evil\n")

    other = clone(built)
    r = other.run("build", "--pull", "--remote", remote_url)
    assert r.code == 0, r.err
    assert stages_run(r) == ["make"] and stages_restored(r) == ["total"]
    same_outputs(built, other)
    assert "does not match its hash" in r.err + caplog.text
    assert b"evil" not in (other.root / "cache/objects" / digest[:2] / digest[2:]).read_bytes()


def test_truncated_object_in_a_folder_is_refused_by_pull(built, tmp_path):
    url = str(tmp_path / "remote")
    built.run("push", "--remote", url)
    # the biggest file of out/ loses its tail on the remote
    path = max(remote_files(url, "objects").values(), key=os.path.getsize)
    data = open(path, "rb").read()
    os.chmod(path, 0o644)
    open(path, "wb").write(data[: len(data) // 2])

    other = clone(built)
    r = other.run("pull", "--remote", url)
    assert r.code == 1
    assert "does not match its hash" in r.err and "missing from the remote: make: out" in r.err
    assert (other.root / "single.txt").exists() and not (other.root / "out").exists()
    r = other.run("build")
    assert stages_run(r) == ["make"]  # its outs could not all be restored
    same_outputs(built, other)


def test_run_record_naming_other_paths_is_not_used(built, tmp_path):
    url = str(tmp_path / "remote")
    built.run("push", "--remote", url)
    records = remote_files(url, "runs")
    for path in records.values():  # point every record at a path outside the workspace
        doc = json.loads(open(path).read())
        doc["outs"] = {"../../escape.txt": next(iter(doc["outs"].values()))}
        os.chmod(path, 0o644)
        open(path, "w").write(json.dumps(doc))
    other = clone(built)
    r = other.run("build", "--pull", "--remote", url)
    assert r.code == 0 and stages_run(r) == ["make", "total"]
    assert not (other.root.parent / "escape.txt").exists()


class Interrupted(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("fail_at", [2, 6])
def test_interrupted_push_leaves_the_remote_usable(built, remote_url, monkeypatch, fail_at):
    """Ctrl-C during the upload of the objects: no run record names an absent object,
    a clone still builds right, and the next push completes the remote."""
    from reprobuild.remote import Remote

    real = Remote._publish  # every upload passes here (objects, manifests, run records)
    calls = []

    def flaky(self, *args, **kw):
        calls.append(args)
        if len(calls) == fail_at:
            raise Interrupted()
        return real(self, *args, **kw)

    monkeypatch.setattr(Remote, "_publish", flaky)
    r = built.run("push", "--remote", remote_url, "-j", "1")
    assert r.code == 130
    assert_remote_usable(remote_url)
    assert len(remote_files(remote_url, "objects")) == fail_at - 1

    first = clone(built, "first")
    r = first.run("build", "--pull", "--remote", remote_url)
    assert r.code == 0 and stages_run(r) == ["make", "total"]  # nothing could be restored
    same_outputs(built, first)

    monkeypatch.setattr(Remote, "_publish", real)
    r = built.run("push", "--remote", remote_url)
    assert r.code == 0 and f"{fail_at - 1} were already there" in r.out
    assert assert_remote_usable(remote_url) == 2
    second = clone(built, "second")
    r = second.run("build", "--pull", "--remote", remote_url)
    assert stages_run(r) == [] and stages_restored(r) == ["make", "total"]


def test_push_failure_before_run_records_is_one_line_and_usable(built, tmp_path, monkeypatch):
    """The network goes away after the objects, before the run records."""
    url = str(tmp_path / "remote")
    fs, _ = remote_fs(url)

    def down(self, path, *args, **kw):
        raise ConnectionError(f"connection to {url} reset")

    monkeypatch.setattr(type(fs), "pipe_file", down)
    r = built.run("push", "--remote", url)
    assert r.code == 2 and r.err.startswith("error: remote ") and "connection" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert remote_files(url, "runs") == {}
    monkeypatch.undo()
    other = clone(built)
    assert stages_run(other.run("build", "--pull", "--remote", url)) == ["make", "total"]


def test_stray_temp_files_on_a_folder_remote_are_harmless(built, tmp_path):
    url = tmp_path / "remote"
    built.run("push", "--remote", str(url))
    (url / "tmp").mkdir(exist_ok=True)
    (url / "tmp" / "half-written").write_bytes(b"half")
    other = clone(built)
    assert stages_restored(other.run("build", "--pull", "--remote", str(url))) == ["make", "total"]


def test_remote_precedence_cli_then_env_then_pipeline_file(built, tmp_path, monkeypatch):
    """`remote:` relative to the pipeline's folder; REPROBUILD_REMOTE over it; --remote over both."""
    (built.root / "reprobuild.yaml").write_text(
        built.read("reprobuild.yaml") + "remote: ../by-file\n"
    )
    built.commit_all("remote")
    assert built.run("push").code == 0
    assert (tmp_path / "by-file" / "runs").is_dir()
    monkeypatch.setenv("REPROBUILD_REMOTE", str(tmp_path / "by-env"))
    assert built.run("push").code == 0
    assert (tmp_path / "by-env" / "runs").is_dir()
    assert built.run("push", "--remote", str(tmp_path / "by-cli")).code == 0
    assert (tmp_path / "by-cli" / "runs").is_dir()
    monkeypatch.delenv("REPROBUILD_REMOTE")
    other = clone(built)
    (other.root / "sub").mkdir()
    # run from a subfolder: `remote:` is relative to the pipeline file, not to the current folder
    r = Workspace(other.root / "sub", built.capsys).run("build", "--pull", "-f", str(other.root))
    assert r.code == 0, r.err
    assert stages_restored(r) == ["make", "total"], r.out


def test_push_all_pushes_every_cached_object(built, tmp_path):
    built.write({"params.yaml": "n: 4\n"})
    built.run("build")  # the cache now also holds n=4's outputs; the lockfile names only them
    url = str(tmp_path / "remote")
    names = built.run("push", "--remote", url)
    everything = built.run("push", "--remote", str(tmp_path / "all"), "--all")
    assert everything.code == 0
    assert len(remote_files(str(tmp_path / "all"), "objects")) > len(remote_files(url, "objects"))
    assert len(remote_files(str(tmp_path / "all"), "runs")) == 4
    assert "2 run records" in names.out
    assert built.run("push", "--all", "make").code == 2


def test_push_names_what_the_local_cache_lacks(built, tmp_path):
    shutil.rmtree(built.root / "cache/objects")
    r = built.run("push", "--remote", str(tmp_path / "remote"))
    assert r.code == 1
    assert "missing from the local cache, not pushed: make: out" in r.err
    assert remote_files(str(tmp_path / "remote"), "runs") == {}


def test_build_pull_without_a_remote_is_a_usage_error(built):
    r = built.run("build", "--pull")
    assert r.code == 2 and "no remote configured" in r.err and "REPROBUILD_REMOTE" in r.err


def test_missing_folder_remote_is_an_error_for_reading(built, tmp_path):
    r = built.run("pull", "--remote", str(tmp_path / "nowhere"))
    assert r.code == 2 and "does not exist" in r.err


def test_credentials_in_a_url_are_never_printed(built, monkeypatch):
    r = built.run("push", "--remote", "nosuchfs://alice:s3cr3t@example.invalid/cache")
    assert r.code == 2 and r.err.startswith("error: ")
    assert "s3cr3t" not in r.err and "alice" not in r.err
    assert "s3cr3t" not in built.read("reprobuild.lock")


def test_missing_s3_backend_names_the_extra(built, monkeypatch):
    import importlib
    import sys

    registry = importlib.import_module(
        "fsspec.registry"
    )  # the module; `fsspec.registry` is a mapping
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    r = built.run("push", "--remote", "s3://bucket/cache")
    assert r.code == 2 and "reprobuild[s3]" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_missing_fsspec_names_the_extra(built, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    r = built.run("build", "--pull", "--remote", "/tmp/anything")
    assert r.code == 2 and "reprobuild[remote]" in r.err


def test_s3_errors_are_one_line(built, s3_env):
    r = built.run("push", "--remote", "s3://no-such-bucket-here/cache")
    assert r.code == 2 and "error: remote s3://no-such-bucket-here/cache:" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_status_does_not_import_fsspec(built):
    import subprocess
    import sys

    code = (
        "import sys; from reprobuild.cli.main import main; main(['status']); "
        "assert 'fsspec' not in sys.modules and 'reprobuild.remote' not in sys.modules, 'imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=built.root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_pull_without_a_remote_says_how_to_configure_one(built, tmp_path):
    other = clone(built)
    r = other.run("pull")
    assert r.code == 2 and "no remote configured" in r.err and "REPROBUILD_REMOTE" in r.err
