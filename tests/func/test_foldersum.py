"""Folder summaries through the CLI: a no-op status of a tracked folder writes nothing,
and every change to a file in it is still seen (hashing.py has the unit tests)."""

from __future__ import annotations

import os
import time

from reprobuild.hashing import Hasher, StatCache, folder_meta

PIPE = (
    "stages:\n  count:\n    cmd: ls -R data > count.txt\n    deps: [data]\n    outs: [count.txt]\n"
)


def age(root):
    t = time.time() - 60
    for p in root.rglob("*"):
        os.utime(p, (t, t))


def snapshot(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_noop_status_writes_nothing_and_a_change_is_seen(ws):
    files = {f"data/d{i % 3}/f{i}.txt": f"row {i}\n" for i in range(30)}
    ws.write({"reprobuild.yaml": PIPE, **files})
    age(ws.root / "data")
    assert ws.run("add", "data").code == 0
    assert ws.run("build").code == 0
    r = ws.run("status")  # the first one records the folder's summary
    assert r.code == 0 and "up to date" in r.out, r.out
    stats = ws.root / "cache" / "statcache"
    assert any(p.name.startswith("folder-") for p in stats.iterdir())
    before = snapshot(stats)
    for command in ("status", "build"):
        r = ws.run(command)
        assert r.code == 0 and "up to date" in r.out and "changed" not in r.out, r.out
    assert snapshot(stats) == before  # a no-op rewrites no stat cache file
    target = ws.root / "data" / "d1" / "f4.txt"
    st = target.stat()
    target.write_text("row X\n")  # same size, within the racy window
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    r = ws.run("status")
    assert "source changed: data" in r.out, r.out
    truth = folder_meta(Hasher(StatCache(None)).manifest(str(ws.root / "data")))
    assert ws.run("add", "data").code == 0
    assert truth.hash in ws.read("reprobuild.lock")
    r = ws.run("status")
    assert "source changed" not in r.out and "dep changed: data" in r.out, r.out
