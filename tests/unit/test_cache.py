import os

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
