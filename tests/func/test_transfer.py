"""Big objects on S3 (transfer.py): multipart push, ranged pull, against the loopback S3 server.

The size threshold is lowered so that a 12 MiB object takes the big-object path
in three parts (5 MiB, S3's smallest part, 5 MiB and the rest).
"""

from __future__ import annotations

import io
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from reprobuild import transfer
from reprobuild.cache import Cache
from reprobuild.errors import CacheError
from reprobuild.hashing import Hasher, StatCache, hash_file_raw
from reprobuild.remote import Progress, Remote, _filesystem
from tests.conftest import Workspace, git, stages_restored

pytest.importorskip("fsspec", reason="remotes need fsspec (pip install -e '.[test]' brings it)")

MiB = 2**20
SIZE = 12 * MiB + 12345


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(transfer, "THRESHOLD", 8 * MiB)
    monkeypatch.setattr(transfer, "PART", 5 * MiB)


def big_bytes(seed: int = 0, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def big(tmp_path):
    """A local cache holding one 12 MiB object: (cache, meta)."""
    cache = Cache(tmp_path / "local")
    cache.ensure()
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws/big.bin").write_bytes(big_bytes())
    meta = cache.insert(str(tmp_path / "ws/big.bin"), Hasher(StatCache(None)))
    return cache, meta


def s3_remote(bucket: str, cache: Cache) -> Remote:
    url = f"s3://{bucket}/team"
    fs, root = _filesystem(url)
    return Remote(fs, root, url, cache, jobs=4)


def fresh(tmp_path, name="fresh") -> Cache:
    cache = Cache(tmp_path / name)
    cache.ensure()
    return cache


def client(s3_env):
    import boto3

    return boto3.client("s3", endpoint_url=s3_env)


def multipart_uploads(s3_env, bucket: str) -> list:
    return client(s3_env).list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class Counting(Progress):
    def __init__(self):
        self.total = self.moved = self.files = 0

    def add_total(self, files, nbytes):
        self.total += nbytes

    def advance(self, nbytes):
        self.moved += nbytes

    def file_done(self):
        self.files += 1


def window_is_free() -> bool:
    """Every slot of the shared window of parts in flight is back (none leaked by a failure),
    and the bodies kept for reuse are let go once no upload runs."""
    return all(w._value == transfer.IN_FLIGHT for w in transfer._windows.values()) and all(
        not b.free and not b.users for b in transfer._body_sets.values()
    )


def spy_ranges(monkeypatch) -> list:
    calls = []
    real = transfer._get_range

    async def counting(fs, bucket, key, start, end, fd, on_bytes):
        calls.append((start, end))
        return await real(fs, bucket, key, start, end, fd, on_bytes)

    monkeypatch.setattr(transfer, "_get_range", counting)
    return calls


def test_big_object_goes_up_in_parts_and_comes_down_in_ranges(
    tmp_path, big, s3_bucket, s3_env, small_parts, monkeypatch
):
    cache, meta = big
    remote = s3_remote(s3_bucket, cache)
    progress = Counting()
    result = remote.push([meta], [], progress)
    assert (result.objects, result.bytes, result.corrupt) == (1, SIZE, [])
    assert progress.moved == progress.total == SIZE and progress.files == 1
    key = remote.object_path(meta.hash).split("/", 1)[1]
    head = client(s3_env).head_object(Bucket=s3_bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of 3 parts, not one PUT
    assert head["ContentLength"] == SIZE and multipart_uploads(s3_env, s3_bucket) == []

    ranges = spy_ranges(monkeypatch)
    other = fresh(tmp_path)
    progress = Counting()
    result = Remote(remote.fs, remote.root, remote.url, other).fetch([meta], progress)
    assert (result.objects, result.refused, result.missing) == (1, [], [])
    assert sorted(ranges) == [
        (0, 4 * MiB + 4115),
        (4 * MiB + 4115, 8 * MiB + 8230),
        (8 * MiB + 8230, SIZE),
    ]
    assert other.object_path(meta.hash).read_bytes() == big_bytes()
    assert progress.moved == SIZE and progress.files == 1
    assert not list(other.tmp.iterdir())


def test_small_objects_and_folder_remotes_keep_one_request(tmp_path, big, s3_bucket, monkeypatch):
    cache, meta = big
    calls = []
    monkeypatch.setattr(transfer, "upload", lambda *a: calls.append(a))
    monkeypatch.setattr(transfer, "download", lambda *a: calls.append(a))
    s3_remote(s3_bucket, cache).push([meta], [])  # 12 MiB is under the default threshold
    fs, root = _filesystem(str(tmp_path / "folder"))
    fs.makedirs(root)
    monkeypatch.setattr(transfer, "THRESHOLD", 1)
    folder = Remote(fs, root, root, cache)
    folder.push([meta], [])
    assert Remote(fs, root, root, fresh(tmp_path)).fetch([meta]).objects == 1
    assert calls == [] and not transfer.applies(fs)


@pytest.mark.parametrize("size", [SIZE, 10 * MiB])  # the same size, and truncated
def test_corrupt_big_remote_object_is_refused(
    tmp_path, big, s3_bucket, small_parts, monkeypatch, size
):
    cache, meta = big
    remote = s3_remote(s3_bucket, cache)
    remote.push([meta], [])
    remote.fs.pipe_file(remote.object_path(meta.hash), big_bytes(seed=1, size=size))
    ranges = spy_ranges(monkeypatch)
    other = fresh(tmp_path)
    reader = Remote(remote.fs, remote.root, remote.url, other)
    warnings = []
    reader.on_warning = warnings.append
    result = reader.fetch([meta])
    assert result.refused == [meta.hash] and result.objects == 0 and ranges
    assert not other.has(meta) and not list(other.tmp.iterdir())
    assert meta.hash in warnings[0] and "refused" in warnings[0]


def test_object_shorter_than_its_size_raises_short(tmp_path, big, s3_bucket, small_parts):
    cache, meta = big
    remote = s3_remote(s3_bucket, cache)
    remote.push([meta], [])
    with open(tmp_path / "out", "wb") as f, pytest.raises(transfer.Short):
        transfer.download(
            remote.fs, remote.object_path(meta.hash), SIZE + 1, f.fileno(), lambda n: None
        )


def test_failed_part_aborts_the_upload_and_publishes_nothing(
    big, s3_bucket, s3_env, small_parts, monkeypatch
):
    cache, meta = big
    remote = s3_remote(s3_bucket, cache)
    real = remote.fs._call_s3

    async def flaky(method, *args, **kw):
        if method == "upload_part" and kw["PartNumber"] == 2:
            raise ConnectionError("link down")
        return await real(method, *args, **kw)

    monkeypatch.setattr(remote.fs, "_call_s3", flaky)
    with pytest.raises(CacheError, match="link down"):
        remote.push([meta], [])
    assert not remote.fs.exists(remote.object_path(meta.hash))
    assert multipart_uploads(s3_env, s3_bucket) == []  # aborted: no parts left behind
    assert cache.has(meta) and window_is_free()


def test_ctrl_c_during_a_multipart_upload_aborts_it(
    big, s3_bucket, s3_env, small_parts, monkeypatch
):
    cache, meta = big
    remote = s3_remote(s3_bucket, cache)
    remote.jobs = 1
    real = remote.fs._call_s3
    stuck = threading.Event()

    async def slow(method, *args, **kw):
        import asyncio

        if method == "upload_part" and kw["PartNumber"] == 2:
            stuck.set()
            await asyncio.sleep(60)
        return await real(method, *args, **kw)

    def press_ctrl_c():
        stuck.wait(30)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    monkeypatch.setattr(remote.fs, "_call_s3", slow)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        remote.push([meta], [])
    assert stuck.is_set()
    assert not remote.fs.exists(remote.object_path(meta.hash))
    assert multipart_uploads(s3_env, s3_bucket) == [] and window_is_free()


def test_parts_beyond_the_window_reuse_bodies_and_arrive_intact(
    tmp_path, s3_bucket, s3_env, small_parts, monkeypatch
):
    size = 2 * transfer.IN_FLIGHT * 5 * MiB + 777  # twice the window of parts, and a short one
    cache = fresh(tmp_path, "local")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws/big.bin").write_bytes(big_bytes(seed=2, size=size))
    meta = cache.insert(str(tmp_path / "ws/big.bin"), Hasher(StatCache(None)))
    bodies = []  # kept alive, so that distinct bodies have distinct ids
    real = transfer._read_part

    def read_part(*args):
        body, crc = real(*args)
        bodies.append(body)
        return body, crc

    monkeypatch.setattr(transfer, "_read_part", read_part)
    remote = s3_remote(s3_bucket, cache)
    assert remote.push([meta], []).objects == 1
    key = remote.object_path(meta.hash).split("/", 1)[1]
    got = client(s3_env).get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert got == big_bytes(seed=2, size=size)  # no part overwritten by the next one's read
    assert len(bodies) == 2 * transfer.IN_FLIGHT + 1
    # a part is read into a sent part's body (the short last part gets its own)
    assert len({id(b) for b in bodies}) <= transfer.IN_FLIGHT + 1
    assert all(isinstance(b, io.BytesIO) for b in bodies)  # what every HTTP backend takes
    assert window_is_free()


@pytest.fixture
def https_endpoint(s3_env):
    """moto's server with TLS (a certificate of its own): botocore treats https apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-s", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's https server did not start"
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # moto's own certificate
def test_over_https_parts_carry_botocores_crc32_and_no_body_is_sha256_hashed(
    tmp_path, https_endpoint, small_parts, monkeypatch
):
    import boto3
    import botocore.auth
    import s3fs

    size = 3 * 5 * MiB + 99
    (tmp_path / "big.bin").write_bytes(big_bytes(seed=3, size=size))
    digest, _ = hash_file_raw(str(tmp_path / "big.bin"))
    signed = []  # (url, what SigV4 put for the body) of every request
    real = botocore.auth.S3SigV4Auth.payload

    def payload(self, request):
        signed.append((request.url, real(self, request)))
        return signed[-1][1]

    monkeypatch.setattr(botocore.auth.S3SigV4Auth, "payload", payload)
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": https_endpoint, "verify": False}, skip_instance_cache=True
    )
    fs.mkdir("tls")
    assert transfer.upload(fs, str(tmp_path / "big.bin"), "tls/obj", digest, lambda n: None) == size
    parts = [value for url, value in signed if "partNumber=" in url]
    # botocore streams each part with its CRC32 in a trailer; given a CRC32 it would
    # SHA-256 every part instead
    assert parts == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"] * 4
    s3 = boto3.client("s3", endpoint_url=https_endpoint, verify=False)
    assert s3.get_object(Bucket="tls", Key="obj")["Body"].read() == big_bytes(seed=3, size=size)
    assert "ChecksumCRC32" in s3.head_object(Bucket="tls", Key="obj", ChecksumMode="ENABLED")
    assert window_is_free()


def spy_part_payloads(monkeypatch) -> list:
    """What SigV4 puts for the body of every UploadPart request, as they are signed."""
    import botocore.auth

    signed = []
    real = botocore.auth.S3SigV4Auth.payload

    def payload(self, request):
        value = real(self, request)
        if "partNumber=" in request.url:
            signed.append(value)
        return value

    monkeypatch.setattr(botocore.auth.S3SigV4Auth, "payload", payload)
    return signed


@pytest.mark.parametrize("own_config", ["none", "client", "file"])
def test_over_http_parts_carry_a_crc32_and_their_body_is_not_sha256_hashed(
    tmp_path, s3_env, small_parts, monkeypatch, own_config
):
    import boto3
    import s3fs

    size = 3 * 5 * MiB + 99
    (tmp_path / "big.bin").write_bytes(big_bytes(seed=4, size=size))
    digest, _ = hash_file_raw(str(tmp_path / "big.bin"))
    signed = spy_part_payloads(monkeypatch)
    # a payload_signing_enabled of the user's own is obeyed, in ~/.aws/config as in code
    config = {"s3": {"payload_signing_enabled": True}} if own_config == "client" else {}
    if own_config == "file":
        (tmp_path / "aws-config").write_text("[default]\ns3 =\n  payload_signing_enabled = true\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_env}, config_kwargs=config, skip_instance_cache=True
    )
    bucket = f"plain-{own_config}"
    fs.mkdir(bucket)
    assert transfer.upload(fs, str(tmp_path / "big.bin"), f"{bucket}/obj", digest, lambda n: None)
    assert len(signed) == 4
    if own_config != "none":
        assert all(len(value) == 64 for value in signed)  # the body's SHA-256
    else:
        assert signed == ["UNSIGNED-PAYLOAD"] * 4
    s3 = boto3.client("s3", endpoint_url=s3_env)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == big_bytes(seed=4, size=size)
    assert "ChecksumCRC32" in s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert window_is_free()


def test_locally_corrupt_big_object_is_not_pushed(big, s3_bucket, s3_env, small_parts):
    cache, meta = big
    obj = cache.object_path(meta.hash)
    obj.chmod(0o644)
    with open(obj, "r+b") as f:  # one byte flipped in the last part
        f.seek(SIZE - 10)
        f.write(b"\0" if f.read(1) != b"\0" else b"\1")
    remote = s3_remote(s3_bucket, cache)
    result = remote.push([meta], [])
    assert result.corrupt == [meta.hash] and result.objects == 0
    assert not remote.fs.exists(remote.object_path(meta.hash))
    assert multipart_uploads(s3_env, s3_bucket) == [] and not obj.exists()  # quarantined


def test_push_and_build_pull_of_a_big_output_through_the_cli(
    ws, s3_bucket, small_parts, monkeypatch
):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  big:\n    cmd: python big.py\n    outs: [big.bin]\n",
            "big.py": (
                f"import random\nopen('big.bin', 'wb').write(random.Random(0).randbytes({SIZE}))\n"
            ),
            ".gitignore": "big.bin\n",
        }
    )
    assert ws.run("build").code == 0
    ws.commit_all("built")
    url = f"s3://{s3_bucket}/cache"
    r = ws.run("push", "--remote", url)
    assert r.code == 0, r.err
    target = ws.root.parent / "clone"
    git(ws.root.parent, "clone", "-q", str(ws.root), str(target))
    other = Workspace(target, ws.capsys)
    ranges = spy_ranges(monkeypatch)
    r = other.run("build", "--pull", "--remote", url)
    assert r.code == 0 and stages_restored(r) == ["big"], r.err
    assert (target / "big.bin").read_bytes() == big_bytes() and len(ranges) == 3
