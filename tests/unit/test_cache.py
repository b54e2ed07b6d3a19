import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobuild.cache import Cache, CorruptObject, MissingObject
from reprobuild.hashing import Hasher, Meta, StatCache


@pytest.fixture
def cache(tmp_path):
    c = Cache(tmp_path / "cache")
    c.ensure()
    return c


def test_insert_restore_file(tmp_path, cache):
    src = tmp_path / "model.pkl"
    src.write_bytes(b"weights" * 1000)
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    obj = cache.object_path(meta.hash)
    assert obj.read_bytes() == src.read_bytes()
    assert not os.stat(obj).st_mode & 0o222  # read-only
    dest = tmp_path / "restored/model.pkl"
    cache.restore(meta, str(dest))
    assert dest.read_bytes() == src.read_bytes()
    assert list(cache.tmp.iterdir()) == []


def test_insert_restore_folder_keeps_exec_bit(tmp_path, cache):
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "sub/a.txt").write_text("a")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    assert meta.nfiles == 2 and cache.has(meta)
    dest = tmp_path / "copy"
    (dest).mkdir()
    (dest / "stale.txt").write_text("old")  # replaced whole
    cache.restore(meta, str(dest))
    assert sorted(p.name for p in dest.rglob("*")) == ["a.txt", "run.sh", "sub"]
    assert os.stat(dest / "run.sh").st_mode & 0o100


def test_corrupt_object_is_quarantined_not_served(tmp_path, cache):
    src = tmp_path / "f"
    src.write_text("good")
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    obj = cache.object_path(meta.hash)
    os.chmod(obj, 0o644)
    obj.write_text("evil")
    dest = tmp_path / "dest"
    dest.write_text("previous")
    with pytest.raises(CorruptObject):
        cache.restore(meta, str(dest))
    assert dest.read_text() == "previous"  # untouched
    assert not obj.exists() and len(list(cache.quarantine_dir.iterdir())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_missing_object(tmp_path, cache):
    with pytest.raises(MissingObject):
        cache.restore(Meta("0" * 32, 1), str(tmp_path / "x"))


def test_run_records(cache):
    outs = {"m.pkl": Meta("a" * 32, 3)}
    cache.write_run("k" * 32, "train", outs)
    assert cache.read_run("k" * 32) == outs
    cache.run_path("z" * 32).parent.mkdir(parents=True, exist_ok=True)
    cache.run_path("z" * 32).write_text("{broken")
    assert cache.read_run("z" * 32) is None
    assert cache.read_run("n" * 32) is None


def test_verify_finds_corruption(tmp_path, cache):
    src = tmp_path / "f"
    src.write_text("x")
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    assert cache.verify().corrupt == []
    obj = cache.object_path(meta.hash)
    os.chmod(obj, 0o644)
    obj.write_text("y")
    report = cache.verify()
    assert len(report.corrupt) == 1 and report.checked == 1


def _folder(tmp_path, n=100):
    """A folder of n small files (more than PARALLEL_FROM: the threaded path), one private."""
    src = tmp_path / "many"
    for i in range(n):
        f = src / f"d{i % 7}" / f"f{i}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"row {i}\n" * (i % 5))
    (src / "d0/f0.txt").write_text("private\n")  # its own object: the mode is its own
    os.chmod(src / "d0/f0.txt", 0o600)
    return src


def test_folder_of_small_files_round_trips_with_modes(tmp_path, cache):
    src = _folder(tmp_path)
    hasher = Hasher(StatCache(None))
    meta = cache.insert(str(src), hasher)
    assert meta.nfiles == 100 and cache.has(meta)
    assert (
        os.stat(cache.object_path(hasher.file(str(src / "d0/f0.txt")).hash)).st_mode & 0o777
        == 0o400
    )
    dest = tmp_path / "restored"
    stats = StatCache(None)
    cache.restore(meta, str(dest), Hasher(stats))
    for f in src.rglob("*.txt"):
        assert (dest / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert Hasher(StatCache(None)).path(str(dest)) == meta
    assert list(cache.tmp.iterdir()) == []


def test_folder_restore_refuses_a_corrupt_small_object_and_keeps_the_old_folder(tmp_path, cache):
    src = _folder(tmp_path)
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    victim = cache.object_path(
        Hasher(StatCache(None)).file(str(src / "d4/f11.txt")).hash
    )  # unique bytes
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes()[:-1] + b"X")  # same size, other bytes
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(CorruptObject):
        cache.restore(meta, str(dest))
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]
    assert not victim.exists() and len(list(cache.quarantine_dir.iterdir())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_a_file_changed_between_hashing_and_storing_is_an_error_not_a_broken_manifest(
    tmp_path, cache
):
    from reprobuild.errors import CacheError

    src = _folder(tmp_path)
    hasher = Hasher(StatCache(None))
    real = hasher.manifest

    def manifest_then_edit(folder, known=None):
        entries = real(folder, known=known)
        (src / "d1/f1.txt").write_text("edited after hashing\n")
        return entries

    hasher.manifest = manifest_then_edit
    cache._store_unknown = lambda folder, hasher: ({}, False)  # as for files just written
    with pytest.raises(CacheError, match="changed while it was being stored"):
        cache.insert(str(src), hasher)


def test_a_folder_being_added_is_read_once(tmp_path, cache, monkeypatch):
    """Files the stat cache does not know are hashed as they are stored: the manifest
    that follows takes their stat and hash from that pass, and opens and stats none."""
    import time

    from reprobuild import hashing

    src = _folder(tmp_path)
    old = time.time() - 10  # out of the racy window, as data added long after it was made
    for f in src.rglob("*.txt"):
        os.utime(f, (old, old))
    reads = []
    real = hashing.hash_file_raw
    monkeypatch.setattr(hashing, "hash_file_raw", lambda p, **k: reads.append(p) or real(p, **k))
    stats, stat = [], os.stat
    monkeypatch.setattr(hashing.os, "stat", lambda p, *a, **k: stats.append(p) or stat(p, *a, **k))
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    monkeypatch.setattr(hashing.os, "stat", stat)
    assert reads == [] and cache.has(meta)
    assert not [p for p in stats if str(p).endswith(".txt")]
    assert meta == Hasher(StatCache(None)).path(str(src))


def small_folder(tmp_path, n: int = 20):
    src = tmp_path / "data"
    src.mkdir()
    for i in range(n):
        (src / f"{i}.txt").write_text(f"file {i}\n")
    return src


def stored_whole(cache, src) -> None:
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    for entry in cache.read_manifest(meta.hash):
        obj = cache.object_path(entry["hash"])
        assert obj.read_bytes() == (src / entry["path"]).read_bytes()
        assert not os.stat(obj).st_mode & 0o222
    assert list(cache.tmp.iterdir()) == []


def test_small_objects_are_linked_in_whole_with_no_temp_name(tmp_path, cache, monkeypatch):
    """O_TMPFILE: written unnamed in the object's folder, then named; nothing in tmp/."""

    def no_temp_names(mode):
        raise AssertionError("a temp name was made for a small object")

    monkeypatch.setattr(cache, "new_tmp", no_temp_names)
    stored_whole(cache, small_folder(tmp_path))


@pytest.mark.parametrize("fails", ["open", "link"])
def test_small_objects_fall_back_to_a_temp_and_a_rename(tmp_path, cache, monkeypatch, fails):
    """No O_TMPFILE on the filesystem (open) or no /proc to name the file with (link)."""
    import errno

    real_open, real_link = os.open, os.link

    def open_(path, flags, *a, **k):
        if fails == "open" and flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "not supported")
        return real_open(path, flags, *a, **k)

    def link(src, dst, *a, **k):
        if fails == "link" and str(src).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, "no /proc")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "link", link)
    stored_whole(cache, small_folder(tmp_path))
    assert cache._unnamed_ok is False  # asked once, then not again


def test_a_folder_whose_objects_are_there_is_not_written_again(tmp_path, cache, monkeypatch):
    """A new folder's objects are written without a look first; once one turns out to be
    there already (the stat cache was lost), each is looked for before it is written."""
    src = small_folder(tmp_path)
    cache.insert(str(src), Hasher(StatCache(None)))
    real_open, unnamed = os.open, []

    def open_(path, flags, *a, **k):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            unnamed.append(path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_)
    cache.insert(str(src), Hasher(StatCache(None)))  # nothing known: every file read again
    assert len(unnamed) == 1


def test_a_long_store_starts_writing_back_early(tmp_path, cache, monkeypatch):
    from reprobuild import cache as cache_mod

    synced = []
    monkeypatch.setattr(cache_mod, "STORE_BATCH", 4)
    monkeypatch.setattr(cache_mod, "sync_filesystem", lambda folder: synced.append(folder))
    stored_whole(cache, small_folder(tmp_path, 20))
    assert len(synced) >= 2  # at least one while storing, and the group commit's


@pytest.mark.parametrize(
    "escape",
    [
        "res/a/b/etc",  # deep in the folder
        "other/passwd",  # in a folder inside the workspace that the out links to
    ],
)
def test_a_symlink_out_of_the_workspace_anywhere_below_a_folder_is_refused(tmp_path, escape):
    from reprobuild.cache import UnsafeOut

    ws = tmp_path / "ws"
    (ws / "res/a/b").mkdir(parents=True)
    (ws / "res/a/b/x.txt").write_text("x")
    (ws / "other").mkdir()
    (ws / "res/linked").symlink_to("../other")  # followed once: the loop below ends
    (ws / "other/back").symlink_to("../res")
    (ws / escape).symlink_to("/etc/passwd" if escape.endswith("passwd") else "/etc")
    cache = Cache(ws / "cache")
    cache.ensure()
    with pytest.raises(UnsafeOut, match="outside the workspace"):
        cache.insert(str(ws / "res"), Hasher(StatCache(None)), str(ws))
    assert not list((ws / "cache/objects").rglob("*?/*"))  # nothing stored
    os.unlink(ws / escape)
    meta = cache.insert(str(ws / "res"), Hasher(StatCache(None)), str(ws))
    assert meta.nfiles >= 1


def test_a_many_file_folder_is_stored_and_restored_by_several_processes_as_by_one(tmp_path):
    """add (and checkout) of a big folder forks one process per CPU; what they store,
    hash, restore and tell the stat cache is what one process would. Run in a process
    of its own: a fork of pytest's, whose other threads may hold a lock, could hang."""
    root = str(Path(__file__).resolve().parents[2])
    script = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from tests.unit.test_cache import by_processes_as_by_one as t; t(sys.argv[1])"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr


def by_processes_as_by_one(tmp: str) -> None:
    import time

    from reprobuild import cache as cache_mod
    from reprobuild import hashing

    tmp_path = Path(tmp)
    cache = Cache(tmp_path / "cache")
    cache.ensure()
    src = small_folder(tmp_path, 300)
    (src / "sub").mkdir()
    (src / "sub/same.txt").write_text("file 7\n")  # one object for two files
    (src / "link.txt").symlink_to("0.txt")  # left to the manifest
    old = time.time() - 10
    for f in src.rglob("*.txt"):
        os.utime(f, (old, old), follow_symlinks=False)
    cache_mod.STORE_IN_PROCESSES_AT = 10
    os.sched_getaffinity = lambda pid: {0, 1}  # two CPUs, on any machine
    children = []
    fork = cache_mod.on_processes
    cache_mod.on_processes = lambda *a, **k: children.append(a) or fork(*a, **k)
    stats = StatCache(None)
    meta = cache.insert(str(src), Hasher(stats))
    assert children  # the forked path was taken
    one = Cache(tmp_path / "one")
    one.ensure()
    cache_mod.STORE_IN_PROCESSES_AT = 10**9
    alone = StatCache(None)
    assert one.insert(str(src), Hasher(alone)) == meta
    assert stats.entries == alone.entries and len(stats.entries) == 302
    stored_whole(cache, src)
    assert len(list((tmp_path / "cache/objects").rglob("*?/*"))) == len(
        list((tmp_path / "one/objects").rglob("*?/*"))
    )
    # and restored: by processes as by threads, files, modes and what the stat cache learns
    os.chmod(src / "3.txt", 0o755)
    meta = cache.insert(str(src), Hasher(StatCache(None)))
    restored = {}
    hashing.RACY_NS = 0  # the stat cache learns files just written
    for processes in (True, False):
        cache_mod.STORE_IN_PROCESSES_AT = 10 if processes else 10**9
        children.clear()
        dest = tmp_path / f"restored-{processes}"
        (dest / "stale").mkdir(parents=True)  # replaced whole
        learnt = StatCache(None)
        cache.restore(meta, str(dest), Hasher(learnt))
        assert bool(children) == processes
        assert not (dest / "stale").exists()
        assert os.stat(dest / "3.txt").st_mode & 0o111
        assert not os.stat(dest / "4.txt").st_mode & 0o111
        files = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
        assert all((dest / f).read_bytes() == (src / f).read_bytes() for f in files)
        restored[processes] = (
            files,
            {os.path.relpath(p, dest): e[4] for p, e in learnt.entries.items()},
        )
    assert restored[True] == restored[False] and len(restored[True][0]) == 302
    assert len(restored[True][1]) == 302


def test_deferred_objects_are_written_from_the_bytes_hashed_and_kept_on_failure(
    tmp_path, cache, monkeypatch
):
    cache.defer_writes()
    hasher = Hasher(StatCache(None))
    (tmp_path / "a.txt").write_bytes(b"first\n")
    (tmp_path / "b.txt").write_bytes(b"second\n")
    a = cache.insert(str(tmp_path / "a.txt"), hasher, sync=False)
    b = cache.insert(str(tmp_path / "b.txt"), hasher, sync=False)
    assert not cache.object_path(a.hash).exists() and cache.has(a)  # held in memory
    (tmp_path / "a.txt").write_bytes(b"changed since\n")  # the object is what was hashed
    real, calls = cache.write_object, []

    def full_disk(digest, *args, **kwargs):
        calls.append(digest)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(digest, *args, **kwargs)

    monkeypatch.setattr(cache, "write_object", full_disk)
    with pytest.raises(OSError):
        cache.commit()  # before a lockfile write: it must not pass an object by
    assert cache.object_path(a.hash).read_bytes() == b"first\n"
    assert not cache.object_path(b.hash).exists() and cache.has(b)  # still held
    calls[:] = ["-"]  # its next write fails too
    with pytest.raises(OSError):
        cache.commit()  # and the next commit tries again
    monkeypatch.setattr(cache, "write_object", real)
    cache.commit()
    assert cache.object_path(b.hash).read_bytes() == b"second\n"
    (tmp_path / "c.txt").write_bytes(b"third\n")
    c = cache.insert(str(tmp_path / "c.txt"), hasher, sync=True)  # durable at once: not held
    assert cache.object_path(c.hash).read_bytes() == b"third\n"


def test_a_run_record_is_written_after_the_held_objects(tmp_path, cache):
    """A record (a pulled one, written at once) may name an object held in memory: the
    object reaches the disk first, so no record ever names a missing object."""
    cache.defer_writes()
    (tmp_path / "out.txt").write_bytes(b"made by a stage\n")
    meta = cache.insert(str(tmp_path / "out.txt"), Hasher(StatCache(None)), sync=False)
    assert not cache.object_path(meta.hash).exists()
    cache.write_run("ab" * 16, "s", {"out.txt": meta}, pulled=True)
    assert cache.object_path(meta.hash).read_bytes() == b"made by a stage\n"
