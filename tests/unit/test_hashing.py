import json
import os
import time

import pytest
import xxhash

from reprobuild import hashing
from reprobuild.hashing import Hasher, StatCache


def old(path, seconds=10):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_file_hash_is_xxh3_128_of_bytes(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(hashing.CHUNK * 2 + 123)  # crosses chunk boundaries
    p.write_bytes(data)
    meta = Hasher(StatCache(None)).path(str(p))
    assert meta.hash == xxhash.xxh3_128_hexdigest(data) and meta.size == len(data)


def test_folder_hash_is_order_independent_and_content_sensitive(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["x", "y/z"]), (b, ["y/z", "x"])):
        for n in names:
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            (root / n).write_text(n)
    h = Hasher(StatCache(None))
    ma, mb = h.path(str(a)), h.path(str(b))
    assert ma == mb and ma.nfiles == 2
    (b / "x").write_text("changed")
    assert h.path(str(b)).hash != ma.hash
    os.chmod(a / "x", 0o755)  # the exec bit is content too
    assert h.path(str(a)).hash != ma.hash


def test_stat_cache_avoids_rereading(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_text("hello")
    old(p)
    sc_path = tmp_path / "statcache.json"
    h = Hasher(StatCache(sc_path))
    first = h.path(str(p))
    h.stats.save()
    reads = []
    real = hashing.hash_file_raw
    monkeypatch.setattr(hashing, "hash_file_raw", lambda path: reads.append(path) or real(path))
    again = Hasher(StatCache(sc_path)).path(str(p))  # a new process, same cache file
    assert again == first and reads == []
    p.write_text("HELLO")
    old(p, 5)
    assert Hasher(StatCache(sc_path)).path(str(p)).hash != first.hash and reads == [str(p)]


def test_racy_files_are_not_cached(tmp_path):
    p = tmp_path / "f"
    p.write_text("just written")
    sc = StatCache(tmp_path / "s.json")
    Hasher(sc).path(str(p))
    assert sc.entries == {}


def test_corrupt_stat_cache_is_ignored(tmp_path):
    path = tmp_path / "s.json"
    (tmp_path / "s").mkdir()
    for n in range(hashing.SHARDS):
        (tmp_path / "s" / f"{n:02x}.json").write_text("{not json")
    assert StatCache(path).entries == {}


def test_large_files_report_progress(tmp_path):
    p = tmp_path / "big"
    p.write_bytes(b"x" * (hashing.CHUNK * 3 + 5))
    seen = []

    class Bar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append("closed")

        def advance(self, n):
            seen.append(n)

    h = Hasher(StatCache(None), progress=lambda path, size: seen.append((path, size)) or Bar())
    h.LARGE = hashing.CHUNK
    h.path(str(p))
    assert seen[0] == (str(p), hashing.CHUNK * 3 + 5)
    assert sum(n for n in seen[1:-1]) == hashing.CHUNK * 3 + 5 and seen[-1] == "closed"


# -- folder summaries -----------------------------------------------------------------------


def truth(folder) -> hashing.Meta:
    """The folder's Meta the long way: every file's manifest entry, no cache."""
    return hashing.folder_meta(Hasher(StatCache(None)).manifest(str(folder)))


def settled(tree):
    """Every file's mtime well in the past (ctimes stay): the summary may keep them."""
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            old(p, 60)


def cached(tmp_path):
    return Hasher(StatCache(tmp_path / "cache" / "statcache.json"))


def make_tree(tmp_path):
    """Files and folders whose names sort across each other ("a.txt" < "a/x" < "a0"),
    a symlinked folder (and a loop), a dangling link, Python bytecode, a nested folder."""
    tree = tmp_path / "tree"
    outside = tmp_path / "outside"
    for rel in ("a.txt", "a0", "a/x", "a/b/deep", "a/b/c/deeper", "zz/one", "b-side/x", "q"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(f"content of {rel}\n")
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"bytecode")
    (tree / "a" / "stale.pyc").write_bytes(b"bytecode")
    (tree / "empty").mkdir()
    (outside / "in").mkdir(parents=True)
    (outside / "in" / "f").write_text("through a link\n")
    (tree / "link").symlink_to(outside)
    (outside / "back").symlink_to(tree)  # a loop through the link: walked once
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    # names that JSON escapes, one not even UTF-8: the summary's tabs and newlines hold
    (tree / "zz" / 'qu"ote \\ é\t').write_text("odd name\n")
    (tree / "tab\tand\nnewline").mkdir()
    (tree / "tab\tand\nnewline" / "f").write_text("odd folder\n")
    with open(os.path.join(os.fsencode(tree), b"zz", b"raw\xff"), "wb") as f:
        f.write(b"a name that is not UTF-8\n")
    settled(tree)
    settled(outside)
    return tree, outside


def test_folder_summary_matches_the_manifest_and_is_used_when_nothing_changed(
    tmp_path, monkeypatch
):
    tree, _ = make_tree(tmp_path)
    want = truth(tree)
    assert want.nfiles == 12  # 11 here and "link/in/f"; "link/back" leads back in: cut
    h = cached(tmp_path)
    assert h.path(str(tree)) == want  # no summary yet: file by file, then recorded
    h.stats.save()
    summary = h.stats.summary_file(str(tree))
    assert summary.is_file()
    before = summary.stat()

    def refuse(*args, **kwargs):
        raise AssertionError("a per-file look on the no-op path")

    monkeypatch.setattr(StatCache, "lookup", refuse)
    monkeypatch.setattr(hashing, "hash_file_raw", refuse)
    monkeypatch.setattr(Hasher, "manifest", refuse)
    again = cached(tmp_path)  # a new process
    assert again.path(str(tree)) == want
    assert again.path(str(tree) + "/") == want
    after = summary.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert not again.stats.dirty


def _same_size_new_bytes(p):
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime tells


def _replaced_same_mtime(p):
    st = p.stat()
    new = p.with_name(p.name + ".new")
    new.write_bytes(p.read_bytes().upper())
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, p)  # a new inode, a new ctime


def _chmod_x(p):
    st = p.stat()
    os.chmod(p, 0o755)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


CHANGES = {
    "changed": lambda t, o: (t / "a" / "x").write_text("new content, new size\n"),
    "same size, same mtime": lambda t, o: _same_size_new_bytes(t / "a" / "b" / "deep"),
    "replaced, same mtime": lambda t, o: _replaced_same_mtime(t / "q"),
    "added": lambda t, o: (t / "a" / "b" / "c" / "new").write_text("new\n"),
    "removed": lambda t, o: (t / "zz" / "one").unlink(),
    "renamed": lambda t, o: (t / "a0").rename(t / "a1"),
    "moved to another folder": lambda t, o: (t / "a0").rename(t / "zz" / "a0"),
    "chmod +x": lambda t, o: _chmod_x(t / "b-side" / "x"),
    "through the symlinked folder": lambda t, o: (o / "in" / "f").write_text("changed too\n"),
    "folder renamed": lambda t, o: (t / "zz").rename(t / "a" / "zz"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_folder_summary_sees_each_change(tmp_path, change):
    tree, outside = make_tree(tmp_path)
    h = cached(tmp_path)
    first = h.path(str(tree))
    h.stats.save()
    CHANGES[change](tree, outside)
    want = truth(tree)
    assert want.hash != first.hash
    assert cached(tmp_path).path(str(tree)) == want
    settled(tree)
    settled(outside)
    h = cached(tmp_path)
    assert h.path(str(tree)) == want  # recorded again, now settled
    h.stats.save()
    assert cached(tmp_path).path(str(tree)) == want  # and from the new summary


def test_folder_summary_one_changed_folder_reuses_the_others(tmp_path, monkeypatch):
    tree, _ = make_tree(tmp_path)
    cached(tmp_path).path(str(tree))
    (tree / "a" / "b" / "deep").write_text("changed\n")
    old(tree / "a" / "b" / "deep")
    want = truth(tree)
    looked = []
    real = Hasher.file
    monkeypatch.setattr(
        Hasher, "file", lambda self, p, st=None: looked.append(p) or real(self, p, st)
    )
    assert cached(tmp_path).path(str(tree)) == want
    assert looked == [str(tree / "a" / "b" / "deep")]


def test_folder_summary_empty_folders_and_bytecode_are_no_content(tmp_path):
    tree, _ = make_tree(tmp_path)
    first = cached(tmp_path).path(str(tree))
    (tree / "another" / "empty").mkdir(parents=True)
    (tree / "a" / "__pycache__").mkdir()
    (tree / "a" / "__pycache__" / "x.pyc").write_bytes(b"new bytecode")
    (tree / "zz" / "more.pyc").write_bytes(b"new bytecode")
    assert cached(tmp_path).path(str(tree)) == first == truth(tree)


class CoarseStat:
    """A stat as a filesystem with whole-second timestamps gives it."""

    def __init__(self, st):
        self._st = st
        self.st_mtime_ns = st.st_mtime_ns // 10**9 * 10**9
        self.st_ctime_ns = st.st_ctime_ns // 10**9 * 10**9

    def __getattr__(self, name):
        return getattr(self._st, name)


def test_folder_summary_keeps_no_racy_file(tmp_path, monkeypatch):
    """Rewritten within the timestamp granularity, a file keeps its stat: only the racy
    rule (nothing recorded while a file's mtime is that recent) sees the new bytes."""
    real_stat = os.stat
    monkeypatch.setattr(hashing.os, "stat", lambda *a, **k: CoarseStat(real_stat(*a, **k)))
    tree, _ = make_tree(tmp_path)
    while time.time() % 1 > 0.5:  # room in this second for both writes
        time.sleep(0.05)
    target = tree / "a" / "b" / "deep"
    target.write_text("first version\n")
    first = cached(tmp_path).path(str(tree))
    assert first == truth(tree)
    target.write_text("other version\n")  # same size, same inode, same (coarse) times
    assert cached(tmp_path).path(str(tree)) == truth(tree) != first
    header = json.loads(cached(tmp_path).stats.summary_file(str(tree)).read_text().split("\n")[0])
    assert header["fingerprint"] is None  # not recorded while a file is racy


def test_statcache_reads_only_the_shard_it_needs(tmp_path):
    files = []
    for i in range(200):
        p = tmp_path / f"f{i}"
        p.write_text(str(i))
        old(p)
        files.append(p)
    sc = StatCache(tmp_path / "cache" / "statcache.json")
    h = Hasher(sc)
    for p in files:
        h.path(str(p))
    sc.save()
    assert len(list((tmp_path / "cache" / "statcache").glob("*.json"))) > 32
    again = StatCache(tmp_path / "cache" / "statcache.json")
    assert again.lookup(str(files[0]), files[0].stat()) == h.path(str(files[0])).hash
    assert len(again._loaded) == 1
    assert len(again.entries) == 200 and not again.dirty
    again.save()  # nothing changed: nothing written
    assert not list((tmp_path / "cache" / "statcache").glob(".tmp-*"))


def test_the_stat_cache_forgets_files_that_are_gone_but_not_those_just_recorded(tmp_path):
    from reprobuild.hashing import SHARDS, StatCache, shard_of

    folder = tmp_path / "cache"
    real = tmp_path / "real.txt"
    real.write_text("x")
    st = os.stat(real)
    old = StatCache(folder / "statcache.json")
    gone = [str(tmp_path / f"gone-{i}") for i in range(60_000)]  # > 50,000: pruned at save
    for p in gone:
        old.merge(p, [1, 1, 1, 1, "a" * 32])
    old.save()  # recorded in this session: kept, without a lookup of each
    assert len(StatCache(folder / "statcache.json").entries) == 60_000
    later = StatCache(folder / "statcache.json")
    later.lookup(str(real), st)  # loads the shard the real file is in
    later.merge(str(real), [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, "b" * 32])
    later.save()
    left = StatCache(folder / "statcache.json").entries
    n = shard_of(str(real))
    assert str(real) in left
    assert not [p for p in left if shard_of(p) == n and p != str(real)]  # that shard: pruned
    assert len(left) > 60_000 * (SHARDS - 2) // SHARDS  # the others were not rewritten
