"""Big objects to and from S3: multipart uploads and ranged downloads, several requests at once.

remote.py sends an object of at least THRESHOLD bytes this way when the remote
is on S3 (s3fs); smaller objects, and every other filesystem, keep one PUT or
one streamed GET. The requests go through s3fs's own client (credentials,
endpoint, retries as configured for the remote) on its event loop.

Upload: CreateMultipartUpload, then PART-byte UploadPart requests, IN_FLIGHT at
once, read in order from the local object and hashed as they are read (the
local object is read once, not hashed first and sent after). The upload is
completed only when those bytes hash to the object's name; a locally corrupt
object is aborted, never published. S3 shows a multipart upload under its name
only once it is completed, whole, so a failure at any point leaves nothing
visible; a failed part, a wrong hash or Ctrl-C aborts the upload
(AbortMultipartUpload) so its parts do not linger. A killed process cannot
abort: its parts stay invisible until a bucket lifecycle rule
(AbortIncompleteMultipartUpload) removes them (`aws s3api
list-multipart-uploads` lists them).

A part is read (on a worker thread) into a BytesIO that owns its buffer, and
later parts reuse the buffers of parts S3 has acknowledged (a failed or
cancelled part's is dropped), so at most IN_FLIGHT buffers live. Given bytes,
botocore wraps them in a BytesIO sharing them, and aiohttp's first look at it
(getbuffer) copies the whole part into new memory on the event loop: that cost
the client 2.1-2.2 s of CPU per GiB pushed. Over http botocore then
SHA-256-hashed every part for SigV4 (0.5 s per GiB) on the one event loop that
also sends, where the aws CLI hashes in its 10 threads: 0.84-1.10x aws's rate.
Now a part carries its CRC32 (computed on the reading thread) in a signed header
and goes as UNSIGNED-PAYLOAD (_unsign_parts), as botocore sends parts over https:
1.3-1.45 s of CPU per GiB (aws s3 cp: 1.7-1.9 s), 0.96-1.02x aws's rate (three
runs of 6-10 interleaved rounds, benchmarks/bench_push_ab.py: parity, the loopback
server's CPU being the limit). Over https botocore hashes no
part when it computes the part's CRC32 itself (sent in a trailer), so there the
upload leaves the CRC32 to it (see _checksum): against moto over https the
client's CPU per GiB went from 2.35 s to 1.74 s (aws 1.65 s), 0.95x aws's rate
(6 interleaved rounds), moto spending 1.2 s more to decode the trailers.

Download: the caller knows the object's size from the HEAD it made to open
it; the object is cut into up to IN_FLIGHT equal byte ranges fetched at once,
each written at its offset (pwrite) into the caller's temp file. The caller
hashes the finished file (from the page cache) before it enters the cache: a
wrong object is refused as before, and an object shorter than its HEAD said
raises Short.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import weakref
import zlib

MiB = 2**20
# Only objects this big: below it, one request costs less than the part bookkeeping.
THRESHOLD = 64 * MiB
# Parts of 8 MiB with 4 in flight. The aws CLI sends 8 MiB parts, 10 at once. On this
# 2-core machine the loopback server's CPU (moto: 5-9 s per GiB) is the limit, and more
# at once or bigger parts are no faster (1 GiB, 8 interleaved rounds, medians: 4 at once
# 205 MB/s, 6 at once 191, 16 MiB parts 201, aws 232; earlier, 10 at once 127 against
# 4 at once 154) for more memory (IN_FLIGHT x PART buffered).
PART = 8 * MiB
IN_FLIGHT = 4
# Downloads take up to IN_FLIGHT equal ranges, not aws's 8 MiB ones: the loopback server
# (moto) reads the whole object for every ranged GET, so aws s3 cp pulls 1 GiB from it at
# 14 MB/s; 4 ranges pull ~300 MB/s (one GET ~650), and on S3 itself several streams at
# once are what beats one.
MAX_PARTS = 10_000  # S3's limit: bigger objects get bigger parts
CHUNK = 1 * MiB  # what a ranged download reads from the socket at a time
RETRIES = 3  # a range whose body breaks off is asked again from where it stopped
CLEANUP_WAIT = 30  # seconds Ctrl-C waits for the abort of an upload in flight


class Short(Exception):
    """The remote object ended before the size its HEAD gave."""


def applies(fs) -> bool:
    """True for s3fs filesystems (the async S3 client this module drives)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocols and hasattr(fs, "_call_s3") and getattr(fs, "loop", None) is not None


def part_size(size: int) -> int:
    """PART, or bigger when PART would need more than MAX_PARTS parts (whole MiB)."""
    need = -(-size // MAX_PARTS)
    return max(PART, -(-need // MiB) * MiB)


def upload(fs, local, path: str, digest: str, on_bytes) -> int | None:
    """Send the local file `local` to `path` by multipart upload; its size, or None (and
    nothing published) when its bytes do not hash to `digest`."""
    return _run(fs, lambda: _upload(fs, local, path, digest, on_bytes))


def download(fs, path: str, size: int, fd: int, on_bytes) -> None:
    """Write the `size` bytes of remote `path` into the open file `fd` by ranged GETs."""
    _run(fs, lambda: _download(fs, path, size, fd, on_bytes))


# -- on the event loop ---------------------------------------------------------------------


def _run(fs, make):
    """Run the coroutine `make()` on s3fs's loop and wait; on Ctrl-C (or any error here)
    cancel it and give its cleanup (the abort of an upload) time to finish."""
    import asyncio

    finished = threading.Event()

    async def main():
        try:
            return await make()
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(main(), fs.loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        finished.wait(CLEANUP_WAIT)
        raise


async def _upload(fs, local, path: str, digest: str, on_bytes) -> int | None:
    import asyncio

    import xxhash

    from .hashing import open_regular

    bucket, key, _ = fs.split_path(path)
    checksum, own_crc = await _checksum(fs)
    created = await fs._call_s3("create_multipart_upload", Bucket=bucket, Key=key, **checksum)
    upload_id = created["UploadId"]
    ids = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    window = _window()
    bodies = _bodies()
    loop = asyncio.get_running_loop()
    failed: list[BaseException] = []
    sending: list[asyncio.Future] = []

    async def send(number: int, body: io.BytesIO, size: int, crc: dict) -> dict:
        try:
            sent = await fs._call_s3(
                "upload_part", PartNumber=number, Body=body, **ids, **checksum, **crc
            )
        except BaseException as exc:
            failed.append(exc)
            raise
        # S3's answer means it read the whole body; a failed or cancelled one may be in use
        bodies.free.append(body)
        on_bytes(size)
        part = {"PartNumber": number, "ETag": sent["ETag"]}
        if "ChecksumCRC32" in sent:  # S3 wants each part's checksum back when it was declared
            part["ChecksumCRC32"] = sent["ChecksumCRC32"]
        return part

    bodies.users += 1
    try:
        hasher = xxhash.xxh3_128()
        with open_regular(local) as f:
            size = os.fstat(f.fileno()).st_size
            step = part_size(size)
            for number, offset in enumerate(range(0, size, step), 1):
                await window.acquire()
                try:
                    if failed:
                        raise failed[0]
                    length = min(step, size - offset)
                    body, crc = await loop.run_in_executor(
                        None,
                        _read_part,
                        f.fileno(),
                        bodies.take(length),
                        length,
                        offset,
                        hasher,
                        own_crc,
                    )
                except BaseException:
                    window.release()
                    raise
                task = asyncio.ensure_future(send(number, body, length, crc))
                # released when the part is done, failed or cancelled, even before it ran
                task.add_done_callback(lambda _: window.release())
                sending.append(task)
        parts = await asyncio.gather(*sending)
        if hasher.hexdigest() != digest:
            await _abort(fs, ids)
            return None
        await fs._call_s3("complete_multipart_upload", MultipartUpload={"Parts": parts}, **ids)
    except BaseException:
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        await _abort(fs, ids)
        raise
    finally:
        bodies.users -= 1
        if not bodies.users:
            bodies.free.clear()
    while path:  # as s3fs's put_file: listings cached above it are stale now
        fs.invalidate_cache(path)
        parent = fs._parent(path)
        path = "" if parent == path else parent
    return size


def _read_part(
    fd: int, body: io.BytesIO | None, size: int, offset: int, hasher, crc: bool
) -> tuple[io.BytesIO, dict]:
    """The part's `size` bytes at `offset`, read into `body` (a sent part's, reused) or a
    new BytesIO, added to the object's hash, and its CRC32 when that is ours to send.
    On a worker thread: the event loop that drives every request of the transfer would
    otherwise stop for each read and checksum (with the loop doing them, 1 GiB took
    6.1 s instead of 5.6, best of 3 interleaved runs)."""
    if body is None:
        body = io.BytesIO()
        body.write(os.pread(fd, size, offset))
        n = body.tell()
    else:
        with body.getbuffer() as view:
            n = os.preadv(fd, [view], offset)
    body.truncate(n)  # shorter when the file shrank: then its hash will not match
    body.seek(0)
    with body.getbuffer() as view:
        hasher.update(view)
        if not crc:
            return body, {}
        value = zlib.crc32(view).to_bytes(4, "big")
    return body, {"ChecksumCRC32": base64.b64encode(value).decode()}  # botocore then skips its own


def _window():
    """The parts in flight, shared by every upload on this event loop: several big objects
    pushed at once (remote.JOBS) still hold at most IN_FLIGHT parts in memory."""
    import asyncio

    loop = asyncio.get_running_loop()
    if loop not in _windows:
        _windows[loop] = asyncio.Semaphore(IN_FLIGHT)
    return _windows[loop]


_windows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Bodies:
    """The bodies of parts sent, for the next parts to be read into: no new 8 MiB buffer
    (and its page faults) per part. One per event loop, like the window, so no more
    bodies live than parts are in flight; the last upload out lets them go."""

    def __init__(self):
        self.free: list[io.BytesIO] = []
        self.users = 0

    def take(self, size: int) -> io.BytesIO | None:
        """A free body of `size` bytes, or None for the reader to make one."""
        while self.free:
            body = self.free.pop()
            if not body.closed and len(body.getbuffer()) == size:
                return body
        return None


def _bodies() -> _Bodies:
    import asyncio

    loop = asyncio.get_running_loop()
    if loop not in _body_sets:
        _body_sets[loop] = _Bodies()
    return _body_sets[loop]


_body_sets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def _checksum(fs) -> tuple[dict, bool]:
    """As the aws CLI (s3transfer) does: unless the client is configured to send
    checksums only when required, the upload declares CRC32 and each part carries one.
    Then the store keeps a checksum of the part checksums; without it moto, for one,
    copies the whole object once more to checksum it at completion.

    Also whether the parts' CRC32 is ours to compute (on the reading thread, sparing
    the event loop): over http, where it goes in a header that lets the part go
    unsigned (_unsign_parts). Over https botocore sends the CRC32 it computes in a
    trailer and hashes no body; a CRC32 given to it would bring the SHA-256 of every
    part back (0.5 s of CPU per GiB)."""
    await fs.set_session()
    client = await fs.get_s3()
    meta = getattr(client, "meta", None)
    config = getattr(meta, "config", None)
    if getattr(config, "request_checksum_calculation", None) == "when_required":
        return {}, False
    https = str(getattr(meta, "endpoint_url", "")).startswith("https")
    if not https:
        _unsign_parts(client)
    return {"ChecksumAlgorithm": "CRC32"}, not https


def _unsign_parts(client) -> None:
    """Over http, send a part that carries its CRC32 (a signed header, checked by S3) as
    UNSIGNED-PAYLOAD, as botocore itself does over https: SigV4's SHA-256 of the body
    would otherwise run on the one event loop that sends every part (0.5 s of CPU per
    GiB; aws s3 cp spreads it over 10 threads). The SHA-256 adds nothing reprobuild
    relies on: an object is named by its XXH3-128, checked before the upload completes
    and again at every pull. A `payload_signing_enabled` set in the client's own s3
    config (~/.aws/config) is left to rule."""
    config = client.meta.config
    s3 = dict(getattr(config, "s3", None) or {})
    if "payload_signing_enabled" in s3:
        return
    from botocore.config import Config

    unsigned = config.merge(Config(s3={**s3, "payload_signing_enabled": False}))

    def before_sign(request, **_):
        if "x-amz-checksum-crc32" in request.headers:  # botocore's S3 signer reads this
            request.context["client_config"] = unsigned

    client.meta.events.register(
        "before-sign.s3.UploadPart", before_sign, unique_id="reprobuild-unsigned-parts"
    )


async def _abort(fs, ids: dict) -> None:
    try:
        await fs._call_s3("abort_multipart_upload", **ids)
    except Exception:  # the parts stay invisible; the error that brought us here matters more
        pass


async def _download(fs, path: str, size: int, fd: int, on_bytes) -> None:
    import asyncio

    bucket, key, _ = fs.split_path(path)
    count = max(1, min(IN_FLIGHT, -(-size // PART)))
    step = -(-size // count)
    tasks = [
        asyncio.ensure_future(
            _get_range(fs, bucket, key, start, min(size, start + step), fd, on_bytes)
        )
        for start in range(0, size, step)
    ]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _get_range(fs, bucket: str, key: str, start: int, end: int, fd: int, on_bytes) -> None:
    """Bytes [start, end) of the object, written at their offsets in `fd`."""
    from s3fs.core import S3_RETRYABLE_ERRORS

    offset, failures = start, 0
    while offset < end:
        got = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes={offset}-{end - 1}"
        )
        body = got["Body"]
        try:
            while offset < end:
                chunk = await body.read(min(CHUNK, end - offset))
                if not chunk:
                    raise Short(f"{bucket}/{key} ends before byte {end}")
                _pwrite_all(fd, chunk, offset)
                offset += len(chunk)
                on_bytes(len(chunk))
        except S3_RETRYABLE_ERRORS:
            failures += 1
            if failures >= RETRIES:
                raise
        finally:
            body.close()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
