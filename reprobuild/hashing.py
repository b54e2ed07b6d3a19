"""Content hashes of files and folders, with a stat cache so unchanged files are read once.

- A file's hash is XXH3-128 of its bytes (32 hex digits), read in 4 MiB
  chunks: memory stays bounded whatever the file's size.
- A folder's hash is XXH3-128 of its manifest: the sorted list of
  `{"path", "hash", "size", "exec"}` of every file below it (paths relative
  to the folder, `/`-separated), as canonical JSON (see `manifest_bytes`).
  Empty folders are not part of it, as in git; nor are `__pycache__`
  folders and `.pyc` files, which Python writes while a stage runs. The same manifest is stored in
  the cache as the `<hash>.dir` object.

Stat cache (`<cache>/statcache.json`): a JSON object `{"schema": 2,
"entries": {ABSOLUTE_PATH: [inode, size, mtime_ns, ctime_ns, hash]}}`. A file
whose inode, size, mtime_ns and ctime_ns all match is not read again. The
ctime is there because anyone can set a file's mtime back after an edit
(`touch -d`, `cp -p`, a restored archive), but not its ctime. An entry is kept
only when the file's mtime is at least RACY_NS older than the moment it was
hashed: a file written again within the filesystem's timestamp granularity
could otherwise keep a stale hash (git's "racy clean" problem).
The file is a cache: when unreadable or of another schema it is ignored, and
it is written atomically.

Only regular files are read: a FIFO, socket or device (whose open or read
could block forever) is refused with NotRegularFile, opened without
blocking so that even one swapped in after the stat cannot hang a build.
"""

from __future__ import annotations

import json
import os
import re
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from .fsutil import atomic_write

CHUNK = 4 * 1024 * 1024
RACY_NS = 1_000_000_000
STATCACHE_SCHEMA = 2
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


class NotRegularFile(OSError):
    """A path that is a FIFO, socket or device: never opened for reading (it could block)."""

    def __init__(self, path: str, mode: int):
        super().__init__(f"{path} is {file_kind(mode)}, not a file or folder")
        self.path = path
        self.kind = file_kind(mode)


def file_kind(mode: int) -> str:
    for test, name in (
        (stat_mod.S_ISFIFO, "a FIFO (named pipe)"),
        (stat_mod.S_ISSOCK, "a socket"),
        (stat_mod.S_ISCHR, "a character device"),
        (stat_mod.S_ISBLK, "a block device"),
        (stat_mod.S_ISDIR, "a folder"),
        (stat_mod.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat_mod.S_ISREG(mode) else "not a regular file"


@dataclass(frozen=True)
class Meta:
    """What the lockfile records of one path."""

    hash: str
    size: int
    nfiles: int | None = None  # folders only
    # permission bits of a file out (run records only; a folder's manifest has exec bits)
    mode: int | None = field(default=None, compare=False)

    @property
    def is_dir(self) -> bool:
        return self.nfiles is not None

    def to_lock(self) -> dict:
        d = {"hash": self.hash, "size": self.size}
        if self.nfiles is not None:
            d["nfiles"] = self.nfiles
        return d

    def to_record(self) -> dict:
        """As a run record stores it: the lockfile's fields, and a file's mode."""
        d = self.to_lock()
        if self.mode is not None and self.nfiles is None:
            d["mode"] = self.mode
        return d

    @classmethod
    def from_lock(cls, d) -> Meta | None:
        """None unless a 32-hex hash, a whole size >= 0 and, for folders, a whole nfiles >= 0:
        a hostile lockfile or record must not name a path through its hash, or crash a reader."""
        if not isinstance(d, dict) or not isinstance(d.get("hash"), str):
            return None
        size, nfiles = d.get("size", 0), d.get("nfiles")
        if not HEX32.match(d["hash"]) or not _whole(size) or not (nfiles is None or _whole(nfiles)):
            return None
        return cls(d["hash"], size, nfiles)

    @classmethod
    def from_record(cls, d) -> Meta | None:
        """from_lock, plus the mode a run record keeps for a file out (permission bits only)."""
        meta = cls.from_lock(d)
        mode = d.get("mode") if meta is not None else None
        if meta is None or mode is None:
            return meta
        if not _whole(mode) or mode > 0o777 or meta.is_dir:
            return None
        return cls(meta.hash, meta.size, None, mode)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def hash_stream(f, copy_to=None, on_chunk=None) -> tuple[str, int]:
    """(hash, size) of a binary stream read to its end; `copy_to` also receives the bytes,
    `on_chunk(nbytes)` hears of every chunk (for a progress bar)."""
    h = xxhash.xxh3_128()
    buf, view = _buffer()
    size = 0
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
        if copy_to is not None:
            copy_to.write(view[:n])
        if on_chunk is not None:
            on_chunk(n)
        size += n
    return h.hexdigest(), size


_local = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    """One read buffer per thread: allocating (and zeroing) 4 MiB per file would cost more
    than hashing a small file."""
    if not hasattr(_local, "buf"):
        _local.buf = bytearray(CHUNK)
        _local.view = memoryview(_local.buf)
    return _local.buf, _local.view


def hash_file_raw(path, on_chunk=None) -> tuple[str, int]:
    with open_regular(path) as f:
        return hash_stream(f, on_chunk=on_chunk)


def open_regular(path):
    """A regular file opened for binary reading; NotRegularFile (without blocking) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(os.fspath(path), st.st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def manifest_bytes(entries: list[dict]) -> bytes:
    """Canonical JSON of a folder manifest (entries sorted by path)."""
    return json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()


class StatCache:
    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                if data.get("schema") == STATCACHE_SCHEMA and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]
            except (OSError, ValueError, AttributeError, RecursionError):
                pass  # missing or corrupt: just a cold cache

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        e = self.entries.get(path)
        if (
            isinstance(e, list)
            and len(e) == 5
            and e[0] == st.st_ino
            and e[1] == st.st_size
            and e[2] == st.st_mtime_ns
            and e[3] == st.st_ctime_ns
            and isinstance(e[4], str)
            and HEX32.match(e[4])
        ):
            return e[4]
        return None

    def record(self, path: str, st: os.stat_result, digest: str) -> None:
        if time.time_ns() - st.st_mtime_ns < RACY_NS:
            return
        self.entries[path] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest]
        self.dirty = True

    def save(self) -> None:
        """Merge with what another process saved meanwhile, then replace atomically."""
        if self.path is None or not self.dirty:
            return
        on_disk = StatCache(self.path).entries
        on_disk.update(self.entries)
        # forget files that are gone, so the cache does not grow forever
        live = (
            {p: e for p, e in on_disk.items() if os.path.lexists(p)}
            if len(on_disk) > 50_000
            else on_disk
        )
        data = json.dumps({"schema": STATCACHE_SCHEMA, "entries": live}, separators=(",", ":"))
        try:
            atomic_write(self.path, data.encode(), what="statcache")
        except OSError:
            return  # a read-only cache still builds; it just hashes again next time
        self.dirty = False


class Hasher:
    """Hashes workspace paths through the stat cache.

    `progress(path, size)`, when set, is called for files of LARGE bytes or
    more and returns a context manager whose `advance(nbytes)` follows the
    read: the CLI draws a progress bar with it on a terminal.
    """

    LARGE = 256 * 1024 * 1024

    def __init__(self, stat_cache: StatCache, progress=None):
        self.stats = stat_cache
        self.progress = progress

    def file(self, path: str, st: os.stat_result | None = None) -> Meta:
        st = st or os.stat(path)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        digest = self.stats.lookup(path, st)
        if digest is None:
            if self.progress is not None and st.st_size >= self.LARGE:
                with self.progress(path, st.st_size) as bar:
                    digest, _ = hash_file_raw(path, on_chunk=bar.advance)
            else:
                digest, _ = hash_file_raw(path)
            self.stats.record(path, st, digest)
        return Meta(digest, st.st_size)

    def manifest(self, folder: str, _seen: frozenset = frozenset()) -> list[dict]:
        """Every file below `folder` (symlinked folders followed once, dangling links and
        Python's own `__pycache__`/`*.pyc` left out: bytecode is written by running the code)."""
        entries = []
        real = os.path.realpath(folder)
        if real in _seen:
            return entries  # a symlink loop
        seen = _seen | {real}
        lookup = self.stats.lookup
        top = folder.rstrip(os.sep) or os.sep
        cut = len(top.rstrip(os.sep)) + 1  # relative paths by slicing: relpath is slow
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                if name.endswith(".pyc"):
                    continue
                full = dirpath + os.sep + name
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue  # a dangling symlink is no content
                if not stat_mod.S_ISREG(st.st_mode):
                    continue  # sockets, fifos: not content
                # the stat cache first: no Meta per file on the no-op path
                digest = lookup(full, st) or self.file(full, st).hash
                entries.append(
                    {
                        "path": full[cut:].replace(os.sep, "/"),
                        "hash": digest,
                        "size": st.st_size,
                        "exec": bool(st.st_mode & 0o111),
                    }
                )
            for d in dirnames:
                sub = os.path.join(dirpath, d)
                if os.path.islink(sub) and os.path.isdir(sub):
                    for e in self.manifest(sub, seen):
                        entries.append(
                            {
                                **e,
                                "path": os.path.relpath(
                                    os.path.join(sub, e["path"]), folder
                                ).replace(os.sep, "/"),
                            }
                        )
        entries.sort(key=lambda e: e["path"])
        return entries

    def path(self, path: str) -> Meta | None:
        """Meta of a file or folder, None when it does not exist."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            return folder_meta(self.manifest(path))
        return self.file(path, st)


def folder_meta(entries: list[dict]) -> Meta:
    return Meta(hash_bytes(manifest_bytes(entries)), sum(e["size"] for e in entries), len(entries))
