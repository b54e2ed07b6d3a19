"""Integrity under faults and hostile input, and `verify`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from reprobuild import lockfile
from tests.conftest import stages_run

PIPE = {
    "reprobuild.yaml": """\
        stages:
          first:
            cmd: python make.py first ${n} > first.txt
            outs: [first.txt]
          folder:
            cmd: python make.py folder ${n} dir
            deps: [first.txt]
            outs: [dir/]
          last:
            cmd: cat first.txt dir/a.txt > last.txt
            deps: [first.txt, dir/]
            outs: [last.txt]
        """,
    "params.yaml": "n: 1\n",
    "make.py": """\
        import os, sys
        what, n = sys.argv[1], int(sys.argv[2])
        if what == "first":
            print("first", n)
        else:
            os.makedirs(sys.argv[3], exist_ok=True)
            for name in "ab":
                open(os.path.join(sys.argv[3], name + ".txt"), "w").write(f"{name} {n}\\n" * 1000)
        """,
}

POINTS = [
    f"{what}:{step}"
    for what in ("object", "run-record", "manifest", "lockfile", "statcache")
    for step in ("tmp-written", "renamed")
]


def assert_consistent(ws):
    """Lockfile parses; the cache holds no corrupt object; a rebuild finishes the job."""
    if (ws.root / "reprobuild.lock").exists():
        _, problem = lockfile.read(ws.root / "reprobuild.lock")
        assert problem is None
    assert ws.run("cache", "verify").code == 0
    r = ws.run("build")
    assert r.code == 0, r.err
    assert ws.run("status", "--check").code == 0
    assert ws.read("last.txt").startswith("first 2\n")
    assert not list(ws.root.glob(".tmp-*"))


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_every_write_leaves_old_or_new_state(ws, point):
    ws.write(PIPE)
    assert ws.run("build").code == 0
    time.sleep(1.05)  # outputs leave the stat cache's racy window, so it is written too
    ws.write({"params.yaml": "n: 2\n"})
    r = ws.run_process("build", env={**os.environ, "REPROBUILD_FAULT": point})
    assert r.returncode == -signal.SIGKILL, (point, r.stderr)
    assert_consistent(ws)


@pytest.mark.parametrize(
    "point", ["object:tmp-written", "lockfile:tmp-written", "run-record:tmp-written"]
)
def test_disk_full_is_a_clear_error_and_loses_nothing(ws, point):
    ws.write(PIPE)
    ws.run("build")
    lock_before = ws.read("reprobuild.lock")
    ws.write({"params.yaml": "n: 2\n"})
    r = ws.run_process("build", env={**os.environ, "REPROBUILD_FAULT": "enospc@" + point})
    assert r.returncode in (1, 2)
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert lockfile.read(ws.root / "reprobuild.lock")[1] is None
    if point == "lockfile:tmp-written":
        assert ws.read("reprobuild.lock") == lock_before
    assert list((ws.root / "cache/tmp").iterdir()) == []
    assert ws.read("params.yaml") == "n: 2\n"  # inputs untouched
    assert_consistent(ws)


def test_kill_9_mid_stage(ws):
    ws.write(PIPE)
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "cmd: python make.py folder ${n} dir",
                "cmd: python make.py folder ${n} dir && sleep 61.37",
            )
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "build"],
        cwd=ws.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while not (ws.root / "dir/b.txt").exists():
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-9", "-f", "sleep 61.37"])
    proc.wait()
    stages, problem = lockfile.read(ws.root / "reprobuild.lock")
    assert problem is None and list(stages) == ["first"]
    st = ws.run("status")
    assert "folder" in st.out and "first" not in st.out.split("folder")[0]
    # the partial output of the killed stage never entered the cache
    assert ws.run("cache", "verify").out.startswith("checked 1 objects")
    ws.write({"reprobuild.yaml": PIPE["reprobuild.yaml"].replace("        ", "")})
    assert stages_run(ws.run("build")) == ["folder", "last"]


def test_dep_changed_while_running_is_not_recorded(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: cat in.txt > out.txt && echo more >> in.txt\n"
            "    deps: [in.txt]\n    outs: [out.txt]\n",
            "in.txt": "data\n",
        }
    )
    r = ws.run("build")
    assert r.code == 1 and "inputs changed while it ran (dep changed: in.txt)" in r.err
    assert not (ws.root / "reprobuild.lock").exists() or "s:" not in ws.read("reprobuild.lock")


def test_gc_during_build_waits_and_keeps_its_objects(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: sleep 2 && echo x > out.txt\n    outs: [out.txt]\n"
        }
    )
    build = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "build"],
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 10
    while not (ws.root / "cache/lock").exists():
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    gc = ws.run_process("gc")
    assert build.wait(timeout=30) == 0
    assert gc.returncode == 0 and "waiting for running builds" in gc.stderr
    os.unlink(ws.root / "out.txt")
    assert ws.run("checkout").code == 0 and ws.read("out.txt") == "x\n"


def test_two_workspaces_share_one_cache(tmp_path, capsys):
    from tests.conftest import Workspace, write_tree

    cache = tmp_path / "shared-cache"
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        write_tree(root, PIPE)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reprobuild", "--cache-dir", str(cache), "build"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for root in roots
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert (roots[0] / "reprobuild.lock").read_text() == (roots[1] / "reprobuild.lock").read_text()
    ws = Workspace(roots[0], capsys)
    assert ws.run("--cache-dir", str(cache), "cache", "verify").code == 0
    fresh = Workspace(tmp_path / "c", capsys)
    write_tree(fresh.root, PIPE)
    r = fresh.run("--cache-dir", str(cache), "build")
    assert stages_run(r) == [] and r.code == 0  # everything restored from the shared cache


def test_verify_passes_deterministic_and_names_nondeterministic(ws):
    ws.write(PIPE)
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml")
            + """\
  noisy:
    cmd: python -c "import os; open('noisy.txt','w').write('run ' + os.urandom(4).hex() + '\\\\n')"
    outs: [noisy.txt]
"""
        }
    )
    assert ws.run("build").code == 0
    before = ws.read("reprobuild.lock")
    r = ws.run("verify", "first", "folder", "last")
    assert r.code == 0 and "3 of 3 stages reproducible" in r.out
    r = ws.run("verify")
    assert r.code == 1
    assert "DIFFERS       noisy" in r.out and "out noisy.txt differs" in r.out
    # the two random hex strings start at offset 4; they may share their first digits
    assert re.search(r"first differing byte at offset ([4-9]|1[01])\b", r.out) and "-run " in r.out
    assert ws.read("reprobuild.lock") == before  # the workspace was not touched


def test_verify_uses_locked_inputs_not_the_workspace(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.write({"first.txt": "edited by hand\n"})  # an upstream out edited after the build
    r = ws.run("verify", "last")
    assert r.code == 0, r.out  # last re-ran on the locked first.txt, restored from the cache


def test_verify_calls_stale_stages_unverifiable_not_nondeterministic(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.write({"params.yaml": "n: 7\n"})
    r = ws.run("verify", "first")
    assert (
        r.code == 1 and "UNVERIFIABLE  first: stale (cmd changed, param changed: n 1 -> 7)" in r.out
    )
    assert "DIFFERS" not in r.out


def test_verify_copies_a_custom_params_file(ws):
    ws.write(
        {
            "reprobuild.yaml": "params: conf.yaml\nstages:\n  s:\n    cmd: python read.py\n"
            "    params: [k]\n    outs: [o.txt]\n",
            "conf.yaml": "k: 5\n",
            "read.py": "open('o.txt', 'w').write(open('conf.yaml').read())\n",
        }
    )
    assert ws.run("build").code == 0
    r = ws.run("verify")
    assert r.code == 0, r.out


def test_python_package_dep_folder_is_not_changed_by_bytecode(ws, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: python -m src.train\n    deps: [src/]\n    outs: [o]\n",
            "src/__init__.py": "",
            "src/helper.py": "X = 1\n",
            "src/train.py": "from src.helper import X\nopen('o', 'w').write(str(X))\n",
        }
    )
    r = ws.run_process(
        "build", env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    )
    assert r.returncode == 0, r.stderr
    assert (ws.root / "src/__pycache__").exists()
    assert ws.run("status", "--check").code == 0


def test_dangling_symlink_and_loop_in_a_folder_dep(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: ls d > o\n    deps: [d/]\n    outs: [o]\n",
            "d/real.txt": "x",
        }
    )
    os.symlink("missing-target", ws.root / "d/dangling")
    os.symlink(".", ws.root / "d/loop")
    r = ws.run("build")
    assert r.code == 0, r.err
    assert ws.run("status", "--check").code == 0


def test_restored_folder_keeps_normal_permissions(ws):
    ws.write(PIPE)
    ws.run("build")
    import shutil

    mode = (ws.root / "dir").stat().st_mode & 0o777
    shutil.rmtree(ws.root / "dir")
    ws.run("checkout")
    assert (ws.root / "dir").stat().st_mode & 0o777 == mode


def test_group_commit_one_sync_per_batch_and_before_the_lockfile(ws, monkeypatch):
    """Stage objects and run records are not fsynced one by one; the cache is synced
    before every lockfile write that could name them."""
    from reprobuild import cache as cache_mod
    from reprobuild import lockfile as lockfile_mod

    n = 20
    ws.write(
        {
            "reprobuild.yaml": "stages:\n"
            + "".join(
                f"  s{i}:\n    cmd: echo {i} > o{i}.txt\n    outs: [o{i}.txt]\n" for i in range(n)
            )
        }
    )
    events, fsyncs = [], []
    real_fsync, real_sync, real_write = os.fsync, cache_mod.sync_filesystem, lockfile_mod.write
    real_insert = cache_mod.Cache.insert
    monkeypatch.setattr(
        os, "fsync", lambda fd: fsyncs.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    monkeypatch.setattr(
        cache_mod, "sync_filesystem", lambda f: events.append("sync") or real_sync(f)
    )
    monkeypatch.setattr(
        lockfile_mod, "write", lambda *a, **k: events.append("lock") or real_write(*a, **k)
    )
    monkeypatch.setattr(
        cache_mod.Cache, "insert", lambda *a, **k: events.append("insert") or real_insert(*a, **k)
    )
    r = ws.run("build", "-j", "1")  # one stage at a time: no insert overlaps a lockfile write
    assert r.code == 0, r.err
    assert events.count("insert") == n
    unsynced = False
    for e in events:
        if e == "insert":
            unsynced = True
        elif e == "sync":
            unsynced = False
        else:
            assert not unsynced, events  # the lockfile named objects not yet on disk
    assert not unsynced
    # before group commit, four fsyncs per stage: its object, the object's folder, its run
    # record and the record's folder; now none (lockfile writes still fsync their file)
    cache = (ws.root / "cache").resolve()
    per_stage = [
        p
        for p in fsyncs
        if p.startswith((f"{cache}/objects", f"{cache}/runs"))
        or (p.startswith(f"{cache}/tmp/") and not p.endswith(".gitignore"))
    ]
    assert not per_stage, per_stage
