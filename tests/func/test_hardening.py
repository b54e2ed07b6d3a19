"""The holes a red-team found, one test each (issue 12's hardening items 1-12)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from reprobuild import lockfile
from reprobuild.hashing import hash_bytes, manifest_bytes
from tests.conftest import REPO, stages_restored, stages_run

ONE = {
    "reprobuild.yaml": "stages:\n  s:\n    cmd: cat in.txt > out.txt\n"
    "    deps: [in.txt]\n    outs: [out.txt]\n",
    "in.txt": "data\n",
}


def objects(root: Path) -> dict[str, bytes]:
    folder = root / "objects"
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, args",
    [("cache/", []), ("cache/objects/x", []), ("build/", ["--cache-dir", "build/cache"])],
)
def test_an_out_holding_the_cache_is_refused_at_load_time(ws, out, args):
    ws.write(ONE)
    assert ws.run(*args, "build").code == 0
    cache = ws.root / (args[1] if args else "cache")
    before = objects(cache)
    ws.write(
        {
            "reprobuild.yaml": ONE["reprobuild.yaml"]
            + f"  bad:\n    cmd: 'true'\n    outs: [{out}]\n"
        }
    )
    r = ws.run(*args, "build")
    assert r.code == 2 and "reprobuild.yaml:8: stage 'bad'" in r.err
    assert "would delete or overwrite the cache" in r.err
    assert objects(cache) == before and before


# 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd, outs",
    [
        ("mkdir -p res && echo x > res/a && ln -s /etc res/etc", "[res/]"),
        ("ln -s /etc/passwd res.txt", "[res.txt]"),
        ("mkdir res && ln -s ../.git res/git", "[res/]"),
    ],
)
def test_symlinks_out_of_the_workspace_never_enter_the_cache(ws, remote_url, cmd, outs):
    ws.write({"reprobuild.yaml": f"stages:\n  s:\n    cmd: {cmd}\n    outs: {outs}\n"})
    r = ws.run("build")
    assert r.code == 1 and "out refused:" in r.err and "not stored" in r.err, r.err
    passwd = Path("/etc/passwd").read_bytes()
    assert passwd not in objects(ws.root / "cache").values()
    assert not list((ws.root / "cache").rglob("runs/*/*"))
    r = ws.run("commit")  # refused at load time (a file out that is such a link), or when stored
    assert r.code == 2 and "Traceback" not in r.err
    assert "refused" in r.err or "leads out of the workspace through a symlink" in r.err
    assert passwd not in objects(ws.root / "cache").values()


def test_symlinks_inside_the_workspace_are_stored_as_their_content(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: mkdir -p res && echo x > res/a && "
            "ln -s a res/b\n    outs: [res/]\n"
        }
    )
    assert ws.run("build").code == 0
    shutil.rmtree(ws.root / "res")
    assert stages_restored(ws.run("build")) == ["s"]
    assert (ws.root / "res/b").read_text() == "x\n"


# 3 ------------------------------------------------------------------------------


def test_lockfile_paths_and_hashes_never_reach_outside_the_workspace(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    ws.write(ONE)
    ws.run("build")
    lock = ws.read("reprobuild.lock")
    ws.write({"reprobuild.lock": lock.replace("out.txt:", f"{secret}:")})
    for cmd in (["verify"], ["checkout"], ["lineage", str(secret)], ["metrics", "show"]):
        r = ws.run(*cmd)
        assert "TOPSECRET" not in r.out + r.err and "Traceback" not in r.err, cmd
    assert "(a path leaving the workspace)" in ws.run("verify").err
    ws.write({"reprobuild.lock": lock.replace("out.txt:", "../../secret.txt:")})
    r = ws.run("verify")
    assert "TOPSECRET" not in r.out + r.err and "ignored s: ../../secret.txt" in r.err
    # a hash of `xx/` and an absolute path used to become that path
    stages = lockfile.parse(lock)[0]
    out_hash = stages["s"]["outs"]["out.txt"]["hash"]
    evil = "00/" + str(secret)
    ws.write({"reprobuild.lock": lock.replace(out_hash, evil)})
    for cmd in (["verify"], ["checkout"], ["diff"], ["metrics", "diff"]):
        r = ws.run(*cmd)
        assert "TOPSECRET" not in r.out + r.err and "Traceback" not in r.err, cmd
    assert "a malformed hash or size" in ws.run("checkout").err
    assert secret.read_text() == "TOPSECRET\n"


def test_a_revisions_metrics_hash_never_names_a_file(ws, tmp_path):
    """`metrics diff` reads a revision's metrics from the cache by hash: never by a made-up one."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"TOPSECRET": 1}')
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: python mk.py\n    metrics: [m.json]\n",
            "mk.py": "open('m.json', 'w').write('{\"score\": 1}')\n",
            ".gitignore": "m.json\n",
        }
    )
    assert ws.run("build").code == 0
    lock = ws.read("reprobuild.lock")
    digest = lockfile.parse(lock)[0]["s"]["outs"]["m.json"]["hash"]
    ws.write({"reprobuild.lock": lock.replace(digest, "00/" + str(secret))})
    ws.commit_all("hostile lockfile")
    for cmd in (["metrics", "diff", "HEAD"], ["metrics", "show"], ["diff", "HEAD"]):
        r = ws.run(*cmd)
        assert "TOPSECRET" not in r.out + r.err and "Traceback" not in r.err, (cmd, r.out)


# 4 ------------------------------------------------------------------------------


def test_lockfile_alias_bomb_and_malformed_numbers_are_a_warning(ws):
    ws.write(ONE)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n"
        for i in range(9)
    )
    bomb += "schema: 1\nstages: {s: {key: 0123456789abcdef0123456789abcdef, cmd: *j}}\n"
    assert len(bomb) < 1000
    ws.write({"reprobuild.lock": bomb})
    start = time.monotonic()
    r = ws.run("status")
    assert time.monotonic() - start < 10
    assert r.code == 0 and "alias bomb" in r.err
    for bad in ("size: .inf", "size: " + "9" * 5001, "size: -3", "nfiles: 1.0e999"):
        ws.write({"reprobuild.lock": ""})
        ws.run("build")
        lock = ws.read("reprobuild.lock").replace("size: 5", bad)
        assert lock != ws.read("reprobuild.lock") or "nfiles" in bad
        ws.write({"reprobuild.lock": lock.replace("size: 5}", "size: 5, " + bad + "}")})
        for cmd in (["status"], ["checkout"], ["verify"], ["build"]):
            r = ws.run(*cmd)
            # status and build warn and rebuild; checkout and verify refuse a lockfile they
            # cannot read, in one line
            assert r.code in (0, 1, 2) and "Traceback" not in r.err, (bad, cmd, r.err)
            assert "unexpected" not in r.err and len(r.err.strip().splitlines()) <= 2, r.err
        assert "ran" in r.out or "restored" in r.out or "up to date" in r.out, r.out


def _stage_key(ws) -> str:
    return lockfile.read(ws.root / "reprobuild.lock")[0]["s"]["key"]


@pytest.mark.parametrize(
    "record",
    [
        '{"schema": 1, "key": "K", "stage": "s", "outs": {"out.txt": {"hash": "H", "size": 1e999}}}',
        '{"schema": 1, "key": "K", "stage": "s", "outs": {"out.txt": {"hash": "H", "size": '
        + "9" * 5001
        + "}}}",
        "[" * 100_000 + "]" * 100_000,
        '{"schema": 1, "key": "K", "stage": "s", "outs": {"out.txt": {"hash": "H", "size": NaN}}}',
        '{"schema": 1, "key": "K", "stage": "s", "outs": {"out.txt\\u0000": {"hash": "H", "size": 5}}}',
        '{"schema": 1, "key": "K", "stage": "s", "outs": {"out.txt": {"hash": "H", "size": 5, "mode": 99999}}}',
    ],
)
def test_a_hostile_run_record_is_a_miss(ws, record):
    ws.write(ONE)
    ws.run("build")
    key = _stage_key(ws)
    out_hash = lockfile.read(ws.root / "reprobuild.lock")[0]["s"]["outs"]["out.txt"]["hash"]
    run = ws.root / "cache/runs" / key[:2] / key[2:]
    run.write_text(record.replace('"K"', f'"{key}"').replace('"H"', f'"{out_hash}"'))
    (ws.root / "out.txt").unlink()
    r = ws.run("build")
    assert r.code == 0 and stages_run(r) == ["s"], r.err
    assert json.loads(run.read_text())["outs"]["out.txt"]["hash"] == out_hash  # replaced


@pytest.mark.parametrize(
    "entries",
    [
        [("a", "x"), ("a/b", "y")],  # `a` both a file and a folder
        [(".", "x")],
        [("a//b", "x")],
        [("a\u0000b", "x")],
        [("../up", "x")],
    ],
)
def test_a_hostile_manifest_is_a_miss(ws, entries):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: mkdir -p d && cp in.txt d/x\n"
            "    deps: [in.txt]\n    outs: [d/]\n",
            "in.txt": "data\n",
        }
    )
    ws.run("build")
    key = _stage_key(ws)
    cache = ws.root / "cache"
    manifest = []
    for path, content in entries:
        digest = hash_bytes(content.encode())
        obj = cache / "objects" / digest[:2] / digest[2:]
        obj.parent.mkdir(parents=True, exist_ok=True)
        if not obj.exists():
            obj.write_text(content)
        manifest.append({"path": path, "hash": digest, "size": len(content), "exec": False})
    data = manifest_bytes(manifest)
    digest = hash_bytes(data)
    (cache / "objects" / digest[:2]).mkdir(exist_ok=True)
    (cache / "objects" / digest[:2] / (digest[2:] + ".dir")).write_bytes(data)
    run = cache / "runs" / key[:2] / key[2:]
    doc = json.loads(run.read_text())
    doc["outs"] = {"d/": {"hash": digest, "size": 2, "nfiles": len(manifest)}}
    run.write_text(json.dumps(doc))
    shutil.rmtree(ws.root / "d")
    r = ws.run("build")
    assert r.code == 0 and stages_run(r) == ["s"], r.err
    assert (ws.root / "d/x").read_text() == "data\n"
    assert not (ws.root / "up").exists() and not (ws.root.parent / "up").exists()


def test_remote_records_and_manifests_are_validated():
    from reprobuild.remote import parse_manifest, parse_run

    key = "0" * 32
    h = "a" * 32
    good = {"schema": 1, "key": key, "stage": "s", "outs": {"o": {"hash": h, "size": 1}}}
    assert parse_run(json.dumps(good).encode(), key)
    for bad in (b"[" * 100_000, b'{"schema": 1, "outs": {"o": {"size": 1e999}}}'):
        assert parse_run(bad, key) is None
    for paths in (["a", "a/b"], ["."], ["a/./b"], ["x\x00"]):
        with pytest.raises(ValueError):
            parse_manifest(json.dumps([{"path": p, "hash": h, "size": 1} for p in paths]).encode())


# 5 ------------------------------------------------------------------------------


def test_gc_keeps_the_objects_of_pipelines_in_hidden_folders(ws):
    ws.write({".ml/" + k: v for k, v in ONE.items()})
    ws.write(
        {
            "reprobuild.yaml": ONE["reprobuild.yaml"].replace("out.txt", "top.txt"),
            **{"in.txt": "top\n"},
        }
    )
    assert ws.run("-f", ".ml", "build").code == 0
    assert ws.run("build").code == 0
    before = objects(ws.root / "cache")
    for args in (["gc"], ["-f", ".ml", "gc"]):
        r = ws.run(*args)
        assert r.code == 0 and "removed 0 objects" in r.out, r.out
    assert objects(ws.root / "cache") == before
    (ws.root / ".ml/out.txt").unlink()
    assert stages_restored(ws.run("-f", ".ml", "build")) == ["s"]


# 6 ------------------------------------------------------------------------------


def test_temp_sweep_removes_only_reprobuilds_own_temps(ws, tmp_path):
    shared = tmp_path / "shared"
    mine = shared / "tmp/old-project/notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me\n")
    loose = shared / "tmp/report.txt"
    loose.write_text("keep me too\n")
    ours = shared / "tmp/rb-tmp-abcd1234"
    ours.write_text("stale temp\n")
    day_ago = time.time() - 3 * 24 * 3600
    for p in (mine, mine.parent, loose, ours):
        os.utime(p, (day_ago, day_ago))
    ws.write(ONE)
    assert ws.run("--cache-dir", str(shared), "build").code == 0
    assert ws.run("--cache-dir", str(shared), "gc").code == 0
    assert ws.run("--cache-dir", str(shared), "cache", "verify").code == 0
    assert mine.read_text() == "keep me\n" and loose.read_text() == "keep me too\n"
    assert not ours.exists()


# 7 ------------------------------------------------------------------------------


def test_modes_survive_store_and_restore(ws):
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  make:
                    cmd: printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh && echo s > private.txt && chmod 600 private.txt
                    outs: [run.sh, private.txt]
                  use:
                    cmd: ./run.sh > said.txt
                    deps: [run.sh]
                    outs: [said.txt]
                    always_run: true
                """
        }
    )
    assert ws.run("build").code == 0
    cache = ws.root / "cache/objects"
    private = lockfile.read(ws.root / "reprobuild.lock")[0]["make"]["outs"]["private.txt"]["hash"]
    assert stat.S_IMODE((cache / private[:2] / private[2:]).stat().st_mode) == 0o400
    for rel in ("run.sh", "private.txt", "said.txt"):
        (ws.root / rel).unlink()
    r = ws.run("build")
    assert r.code == 0 and stages_restored(r) == ["make"] and stages_run(r) == ["use"], r.err
    assert stat.S_IMODE((ws.root / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((ws.root / "private.txt").stat().st_mode) == 0o600
    (ws.root / "run.sh").unlink()
    assert ws.run("checkout").code == 0
    assert stat.S_IMODE((ws.root / "run.sh").stat().st_mode) == 0o755


# 8 ------------------------------------------------------------------------------


SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def _as_user(user: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """reprobuild run by another user. This venv's interpreter may live where only root can
    read (root's home, with pyenv), so the system's Python of the same version runs it, with this
    checkout and this venv's packages on its path (same minor version: same ABI)."""
    import sysconfig

    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "PYTHONPATH": f"{REPO}{os.pathsep}{sysconfig.get_paths()['purelib']}",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, "-m", "reprobuild", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def two_users():
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        pytest.skip("needs root (useradd, runuser) to make two real users sharing a group")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs {SYSTEM_PYTHON} (an interpreter another user can run)")
    tag = uuid.uuid4().hex[:6]
    group, users = f"rbg{tag}", [f"rba{tag}", f"rbb{tag}"]
    subprocess.run(["groupadd", group], check=True)
    try:
        for u in users:
            subprocess.run(["useradd", "-M", "-N", "-g", group, u], check=True)
        yield group, users
    finally:
        for u in users:
            subprocess.run(["userdel", u], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_a_cache_shared_by_a_group_works_for_a_second_user(two_users):
    group, (alice, bob) = two_users
    base = Path(f"/tmp/rb-shared-{uuid.uuid4().hex[:8]}")
    base.mkdir(mode=0o755)
    try:
        cache = base / "cache"
        cache.mkdir()
        shutil.chown(cache, group=group)
        os.chmod(cache, 0o2775)  # the usual set-up for a group's folder
        homes = {}
        for user in (alice, bob):
            home = base / user
            home.mkdir()
            (home / "in.txt").write_text("data\n")
            (home / "reprobuild.yaml").write_text(
                "env: {python: false}\n"  # two interpreters (3.11.x), one key
                + ONE["reprobuild.yaml"]
                + "  t:\n    cmd: cat in.txt in.txt > two.txt\n"
                "    deps: [in.txt]\n    outs: [two.txt]\n"
            )
            shutil.chown(home, user=user, group=group)
            for p in home.iterdir():
                shutil.chown(p, user=user, group=group)
            homes[user] = home
        r = _as_user(alice, homes[alice], "--cache-dir", str(cache), "build")
        assert r.returncode == 0, r.stderr
        r = _as_user(bob, homes[bob], "--cache-dir", str(cache), "build")
        assert r.returncode == 0, r.stderr
        assert "restored" in r.stdout and "running" not in r.stdout, r.stdout
        # bob adds objects of his own, then alice restores them: both can write everywhere
        (homes[bob] / "in.txt").write_text("bob's data\n")
        r = _as_user(bob, homes[bob], "--cache-dir", str(cache), "build")
        assert r.returncode == 0 and "running" in r.stdout, r.stderr
        (homes[alice] / "in.txt").write_text("bob's data\n")
        r = _as_user(alice, homes[alice], "--cache-dir", str(cache), "build")
        assert r.returncode == 0 and "running" not in r.stdout, r.stdout + r.stderr
        for folder in [p for p in cache.rglob("*") if p.is_dir()]:
            st = folder.stat()
            assert st.st_gid == cache.stat().st_gid and st.st_mode & 0o2070 == 0o2070, folder
        r = _as_user(bob, homes[bob], "--cache-dir", str(cache), "gc")
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


# 9 ------------------------------------------------------------------------------


@pytest.fixture
def other_filesystem(tmp_path):
    """A folder on another filesystem (a tmpfs), or None when mounting is not allowed."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_hardlink_across_filesystems_falls_back_to_copy(ws, other_filesystem, monkeypatch):
    ws.write({**ONE, "reprobuild.yaml": "link: hardlink\n" + ONE["reprobuild.yaml"]})
    args = []
    if other_filesystem is not None:
        args = ["--cache-dir", str(other_filesystem / "cache")]
    else:  # no mount allowed here: os.link fails as it does across filesystems
        import errno

        def no_link(*a, **kw):
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    assert ws.run(*args, "build").code == 0
    (ws.root / "out.txt").unlink()
    r = ws.run(*args, "build")
    assert r.code == 0 and stages_restored(r) == ["s"], r.err
    assert (ws.root / "out.txt").read_text() == "data\n"
    assert ws.run(*args, "status", "--check").code == 0


def test_symlink_mode_with_a_cache_outside_the_workspace(ws, tmp_path):
    ws.write(
        {
            **ONE,
            "reprobuild.yaml": "link: symlink\n"
            + ONE["reprobuild.yaml"]
            + "  t:\n    cmd: cat out.txt out.txt > two.txt\n    deps: [out.txt]\n    outs: [two.txt]\n",
        }
    )
    args = ["--cache-dir", str(tmp_path / "elsewhere")]
    assert ws.run(*args, "build").code == 0
    for rel in ("out.txt", "two.txt"):
        (ws.root / rel).unlink()
    r = ws.run(*args, "build")
    assert r.code == 0 and stages_restored(r) == ["s", "t"], r.err
    assert os.path.islink(ws.root / "out.txt")
    r = ws.run(*args, "status", "--check")
    assert r.code == 0, r.err
    ws.write({"in.txt": "new\n"})
    r = ws.run(*args, "build")
    assert r.code == 0 and stages_run(r) == ["s", "t"], r.err
    assert ws.read("two.txt") == "new\nnew\n"
    assert ws.run(*args, "commit").code == 0


# 10 -----------------------------------------------------------------------------


def test_a_fifo_dep_or_out_is_refused_without_blocking(ws):
    ws.write(ONE)
    (ws.root / "in.txt").unlink()
    os.mkfifo(ws.root / "in.txt")
    for cmd in ("status", "build"):
        r = ws.run_process(cmd, timeout=30)
        assert r.returncode == 2 and "dep 'in.txt' is a FIFO" in r.stderr, r.stderr
    ws.write({"reprobuild.yaml": "stages:\n  s:\n    cmd: mkfifo out.p\n    outs: [out.p]\n"})
    r = ws.run_process("build", timeout=30)
    assert r.returncode == 1 and "out refused" in r.stderr and "FIFO" in r.stderr, r.stderr


def test_a_socket_dep_is_refused(ws):
    import socket

    ws.write(ONE)
    (ws.root / "in.txt").unlink()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ws.root / "in.txt"))
        r = ws.run_process("build", timeout=30)
        assert r.returncode == 2 and "dep 'in.txt' is a socket" in r.stderr, r.stderr
    finally:
        sock.close()


# 11 -----------------------------------------------------------------------------


def test_printers_escape_control_characters(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: echo ${word} > out.txt\n"
            "    outs: [out.txt]\n    metrics: [m.json]\n",
            "params.yaml": "word: plain\n",
        }
    )
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "echo ${word} > out.txt", "echo ${word} > out.txt && cp params.json m.json"
            ),
            "params.json": '{"score": "\\u001b[2J"}',
        }
    )
    assert ws.run("build").code == 0, ws.run("build").err
    ws.commit_all("one")
    ws.write({"params.yaml": 'word: "\\e]0;pwned\\a\\e[2J\\u202e"\n'})
    outputs = [ws.run("status"), ws.run("build")]
    for cmd in (["diff"], ["params", "diff"], ["metrics", "show"], ["lineage", "out.txt"]):
        outputs.append(ws.run(*cmd))
    text = "".join(r.out + r.err for r in outputs)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b" in text and "\\u202e" in text


# 12 -----------------------------------------------------------------------------


def test_an_edit_with_the_mtime_reset_is_seen(ws):
    ws.write(ONE)
    time.sleep(1.1)  # in.txt leaves the stat cache's racy window: its entry is kept
    assert ws.run("build").code == 0
    path = ws.root / "in.txt"
    before = path.stat()
    with open(path, "r+b") as f:  # same inode, same size
        f.write(b"DATA")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    r = ws.run("status")
    assert "dep changed: in.txt" in r.out, r.out
    assert stages_run(ws.run("build")) == ["s"] and ws.read("out.txt") == "DATA\n"
