import os
import time

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
    path.write_text("{not json")
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
