"""reprobuild.remote: URLs, record validation, verified downloads, the upload order; folder and memory remotes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from reprobuild import hashing
from reprobuild.cache import Cache
from reprobuild.errors import CacheError, UsageError
from reprobuild.hashing import Hasher, Meta, StatCache
from reprobuild.remote import (
    Remote,
    _filesystem,
    open_remote,
    parse_manifest,
    parse_run,
    redact,
    resolve_url,
)

pytest.importorskip("fsspec", reason="the remote needs fsspec (pip install -e '.[test]')")

H = "0123456789abcdef0123456789abcdef"


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("ssh://alice:s3cr3t@host/path", "ssh://host/path"),
        ("https://token@example.com/c", "https://example.com/c"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("simplecache::sftp://u:p@h/x", "simplecache::sftp://h/x"),
        ("/plain/folder", "/plain/folder"),
        ("error at sftp://u:p@h:22/x: refused", "error at sftp://h:22/x: refused"),
    ],
)
def test_redact_strips_user_and_password(url, shown):
    assert redact(url) == shown


def project(tmp_path, remote=None):
    return SimpleNamespace(
        pipeline=SimpleNamespace(remote=remote),
        ws=SimpleNamespace(dir=tmp_path / "pipe"),
        cache=Cache(tmp_path / "cache"),
    )


def test_url_precedence_cli_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("REPROBUILD_REMOTE", raising=False)
    monkeypatch.chdir(tmp_path)
    p = project(tmp_path, "../shared")
    assert resolve_url(p) == str(tmp_path / "shared")  # relative to the pipeline's folder
    monkeypatch.setenv("REPROBUILD_REMOTE", "s3://env/x")
    assert resolve_url(p) == "s3://env/x"
    assert resolve_url(p, "rel") == str(tmp_path / "rel")  # relative to the current folder
    assert resolve_url(p, "gs://cli/y") == "gs://cli/y"
    monkeypatch.delenv("REPROBUILD_REMOTE")
    assert resolve_url(project(tmp_path)) is None


def test_no_remote_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("REPROBUILD_REMOTE", raising=False)
    with pytest.raises(UsageError, match="no remote configured"):
        open_remote(project(tmp_path))


def test_unknown_protocol_is_one_line_without_credentials():
    with pytest.raises(UsageError) as exc:
        _filesystem("nosuchfs://bob:pw@host/x")
    assert "pw" not in str(exc.value) and "bob" not in str(exc.value) and "\n" not in str(exc.value)


# -- what is trusted ----------------------------------------------------------------------


def record(key=H, **over):
    doc = {
        "schema": 1,
        "key": key,
        "stage": "s",
        "outs": {"a.txt": {"hash": H, "size": 3}, "d/": {"hash": H, "size": 9, "nfiles": 2}},
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_parse_run_accepts_a_record():
    stage, outs = parse_run(record(), H)
    assert stage == "s" and outs == {"a.txt": Meta(H, 3), "d/": Meta(H, 9, 2)}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        record(schema=2),
        record(key="f" * 32),
        record(stage=None),
        record(outs={"../x": {"hash": H, "size": 1}}),
        record(outs={"/etc/x": {"hash": H, "size": 1}}),
        record(outs={"a": {"hash": "../../../etc/passwd", "size": 1}}),
        record(outs={"a": {"hash": H, "size": -1}}),
        record(outs={"d/": {"hash": H, "size": 1}}),
        record(outs={"a": {"hash": H, "size": 1, "nfiles": 1}}),
        record(outs=[]),
    ],
)
def test_parse_run_refuses_what_could_mislead_or_escape(data):
    assert parse_run(data, H) is None


def test_parse_manifest_refuses_escaping_paths_and_bad_hashes():
    good = [{"path": "a/b.txt", "hash": H, "size": 1, "exec": False}]
    assert parse_manifest(hashing.manifest_bytes(good)) == good
    for bad in ([{**good[0], "path": "../x"}], [{**good[0], "hash": "../../x"}], {"a": 1}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            parse_manifest(json.dumps(bad).encode())


# -- transfers on a folder remote ----------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    """A cache holding one file and one folder, and a run record naming both."""
    cache = Cache(tmp_path / "local")
    cache.ensure()
    hasher = Hasher(StatCache(None))
    (tmp_path / "ws/d/sub").mkdir(parents=True)
    (tmp_path / "ws/a.txt").write_text("alpha\n")
    for i in range(3):
        (tmp_path / f"ws/d/sub/{i}.txt").write_text(f"{i}\n" * (i + 1))
    outs = {
        "a.txt": cache.insert(str(tmp_path / "ws/a.txt"), hasher),
        "d/": cache.insert(str(tmp_path / "ws/d"), hasher),
    }
    cache.write_run(H, "s", outs)
    return cache, outs


def folder_remote(tmp_path, cache, name="remote") -> Remote:
    fs, root = _filesystem(str(tmp_path / name))
    fs.makedirs(root, exist_ok=True)
    return Remote(fs, root, str(tmp_path / name), cache, jobs=4)


def put(remote: Remote, path: str, data: bytes) -> None:
    remote.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    remote.fs.pipe_file(path, data)


def fresh_cache(tmp_path, name="fresh") -> Cache:
    cache = Cache(tmp_path / name)
    cache.ensure()
    return cache


def test_push_then_fetch_run_round_trip(tmp_path, local):
    cache, outs = local
    remote = folder_remote(tmp_path, cache)
    result = remote.push(list(outs.values()), [H])
    assert (result.objects, result.runs, result.missing) == (5, 1, [])  # 4 files + 1 manifest
    assert remote.push(list(outs.values()), [H]).objects == 0

    other = fresh_cache(tmp_path)
    reader = Remote(remote.fs, remote.root, remote.url, other)
    assert reader.fetch_run(H) is True
    assert other.read_run(H) == outs and all(other.has(m) for m in outs.values())
    obj = other.object_path(outs["a.txt"].hash)
    assert (
        obj.read_text() == "alpha\n" and obj.stat().st_mode & 0o222 == 0
    )  # read-only, as cache.py stores
    assert not list(other.tmp.iterdir())  # nothing left behind
    assert reader.fetch_run("f" * 32) is False


def test_tampered_and_truncated_objects_are_refused_never_stored(tmp_path, local):
    cache, outs = local
    remote = folder_remote(tmp_path, cache)
    remote.push(list(outs.values()), [H])
    digest = outs["a.txt"].hash
    target = Path(remote.object_path(digest))
    target.chmod(0o644)
    target.write_text("alph")  # truncated
    other = fresh_cache(tmp_path)
    warnings = []
    reader = Remote(remote.fs, remote.root, remote.url, other)
    reader.on_warning = warnings.append
    assert reader.fetch_run(H) is False
    assert not other.object_path(digest).exists() and other.read_run(H) is None
    assert warnings and digest in warnings[0]
    result = reader.fetch([outs["a.txt"]])
    assert result.refused == [digest] and result.objects == 0


def test_manifest_with_right_hash_but_escaping_path_is_refused(tmp_path, local):
    cache, _ = local
    remote = folder_remote(tmp_path, cache)
    evil = hashing.manifest_bytes([{"path": "../../evil", "hash": H, "size": 1, "exec": False}])
    digest = hashing.hash_bytes(evil)
    put(remote, remote.object_path(digest, True), evil)
    other = fresh_cache(tmp_path)
    result = Remote(remote.fs, remote.root, remote.url, other).fetch([Meta(digest, 1, 1)])
    assert result.refused == [digest + ".dir"]
    assert not other.object_path(digest, True).exists()


def test_run_record_is_uploaded_only_after_all_its_objects(tmp_path, local, monkeypatch):
    cache, outs = local
    remote = folder_remote(tmp_path, cache)
    real = Remote._publish  # every upload passes here; four file objects go first
    sent = []

    def fail_on_third(self, path, put):
        sent.append(path)
        if len(sent) != 3:
            return real(self, path, put)

        def broken(dest):
            put(dest)  # the bytes arrive in tmp/, then the link goes down
            raise OSError("link down")

        return real(self, path, broken)

    monkeypatch.setattr(Remote, "_publish", fail_on_third)
    remote.jobs = 1
    with pytest.raises(CacheError, match="link down"):
        remote.push(list(outs.values()), [H])
    assert not Path(remote.run_path(H)).exists()
    assert not list(Path(remote.root, "objects").rglob("*.dir"))
    assert not list(Path(remote.root, "tmp").iterdir())  # the failed temp upload was cleaned up


def test_locally_corrupt_object_is_not_pushed(tmp_path, local):
    cache, outs = local
    obj = cache.object_path(outs["a.txt"].hash)
    obj.chmod(0o644)
    obj.write_text("rotten\n")
    remote = folder_remote(tmp_path, cache)
    result = remote.push(list(outs.values()), [H])
    assert result.corrupt == [outs["a.txt"].hash] and result.runs == 0
    assert not Path(remote.object_path(outs["a.txt"].hash)).exists()
    assert not obj.exists()  # quarantined


def spy(monkeypatch, cls, name, calls):
    real = getattr(cls, name)

    def counting(self, *a, **k):
        calls[name] = calls.get(name, 0) + 1
        return real(self, *a, **k)

    monkeypatch.setattr(cls, name, counting)


def test_existence_check_of_a_few_names_checks_each(tmp_path, local, monkeypatch):
    cache, _ = local
    remote = folder_remote(tmp_path, cache)
    present = [remote.object_path(f"{i:02x}" + "0" * 30) for i in range(3)]
    for p in present:
        put(remote, p, b"x")
    calls = {}
    spy(monkeypatch, type(remote.fs), "exists", calls)
    spy(monkeypatch, type(remote.fs), "ls", calls)
    assert remote.existing(present + [remote.object_path("ff" + "1" * 30)]) == set(present)
    assert calls == {"exists": 4}


@pytest.mark.parametrize("in_first_folder, whole_tree", [(1, True), (300, False)])
def test_existence_check_lists_the_tree_or_each_folder(
    tmp_path, local, monkeypatch, in_first_folder, whole_tree
):
    """A small remote is listed whole (one request per 1,000 keys on S3); a big one folder by folder."""
    cache, _ = local
    remote = folder_remote(tmp_path, cache)
    present = [remote.object_path(f"{i:02x}" + "0" * 30) for i in range(40)]
    for p in present:
        put(remote, p, b"x")
    for i in range(1, in_first_folder):
        put(remote, remote.object_path("00" + f"{i:030x}"), b"x")
    absent = [remote.object_path(f"{i:02x}" + "1" * 30) for i in range(40)] + [
        remote.object_path("ff" + "2" * 30)
    ]
    calls = {}
    spy(monkeypatch, type(remote.fs), "find", calls)
    assert remote.existing(present + absent) == set(present)
    assert ("find" in calls) == whole_tree


def test_memory_remote_goes_through_tmp_and_rename(tmp_path, local):
    cache, outs = local
    fs, root = _filesystem(f"memory://rb-{os.getpid()}-{id(cache)}")
    remote = Remote(fs, root, "memory://x", cache)
    assert not remote.atomic_put
    assert remote.push(list(outs.values()), [H]).runs == 1
    assert fs.find(f"{root}/tmp") == []
    other = fresh_cache(tmp_path)
    assert Remote(fs, root, "memory://x", other).fetch_run(H)


def test_missing_folder_remote_is_refused_for_reading_and_made_for_writing(tmp_path, monkeypatch):
    monkeypatch.delenv("REPROBUILD_REMOTE", raising=False)
    p = project(tmp_path, str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="does not exist"):
        open_remote(p)
    assert open_remote(p, create=True).fetch_run(H) is False
    assert (tmp_path / "absent").is_dir()
