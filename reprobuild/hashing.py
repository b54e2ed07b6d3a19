"""Content hashes of files and folders, with a stat cache so unchanged files are read once.

- A file's hash is XXH3-128 of its bytes (32 hex digits), read in 4 MiB
  chunks: memory stays bounded whatever the file's size.
- A folder's hash is XXH3-128 of its manifest: the sorted list of
  `{"path", "hash", "size", "exec"}` of every file below it (paths relative
  to the folder, `/`-separated), as canonical JSON (see `manifest_bytes`).
  Empty folders are not part of it, as in git; nor are `__pycache__`
  folders and `.pyc` files, which Python writes while a stage runs. The same manifest is stored in
  the cache as the `<hash>.dir` object.

Stat cache (`<cache>/statcache/`, next to where `statcache.json` was):
SHARDS files `NN.json` (NN: xxh3_64 of the path modulo SHARDS, two hex
digits), each a JSON object `{"schema": 3, "entries": {ABSOLUTE_PATH: [inode,
size, mtime_ns, ctime_ns, hash]}}`. A file whose inode, size, mtime_ns and
ctime_ns all match is not read again. The ctime is there because anyone can
set a file's mtime back after an edit (`touch -d`, `cp -p`, a restored
archive), but not its ctime. An entry is kept only when the file's mtime is
at least RACY_NS older than the moment it was hashed: a file written again
within the filesystem's timestamp granularity could otherwise keep a stale
hash (git's "racy clean" problem). Shards are read when first needed and
only changed ones are written: the entries of 100,000 files in one file took
0.12 s to load, for a command that looks up the pipeline file.

Folder summaries (`<cache>/statcache/folder-<xxh3_64 of the absolute folder
path>.txt`), so that a Meta of a large unchanged folder costs one walk with
one stat per file and nothing per file after it. Text, one line each:
- a header, JSON: `{"schema": 3, "folder": ABSOLUTE_PATH, "fingerprint":
  FP or null, "hash", "size", "nfiles", "body"}`: the folder's Meta, and
  BODY the xxh3_64 of the lines after the header (a damaged body is unused);
- one line per folder the manifest walks (the folder itself is "", others
  "a/b/"; a symlinked folder under the name it is reached by), fields
  separated by tabs: `DIRFP  REL  [SIZE, NFILES]  RECORDS  RUN0  RUN1 ...`.
  DIRFP is XXH3-128 of the folder's listing (name, inode, size, mtime_ns,
  ctime_ns and mode of each file the manifest takes, the names of the
  folders walked below it), or `-` when one of its files is racy (above);
  REL is JSON; SIZE and NFILES count its own files; RECORDS is JSON
  `{name: [inode, size, mtime_ns, ctime_ns, hash]}` of its non-racy files;
  RUN0... are its files' manifest entries as canonical JSON, comma-joined,
  cut where a subfolder's entries come in sorted order (JSON text holds no
  tab or newline).
FP hashes every line's (REL, DIRFP) and is null unless all are recorded.
When a walk finds the same FP, the header is the answer. Otherwise only the
folders whose DIRFP differs are looked at file by file (their RECORDS, then
the stat cache, then the bytes), and the manifest's JSON is put together
from the others' RUNs. A summary is rewritten only when it learns something
(a new DIRFP or record): a no-op writes nothing.

Both are caches: a file that is unreadable, of another schema or of another
folder is ignored, and each is written atomically.

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
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from .fsutil import atomic_write

_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str

CHUNK = 4 * 1024 * 1024
RACY_NS = 1_000_000_000
STATCACHE_SCHEMA = 3
SHARDS = 64
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
    """Per-file entries (see the module docstring), read shard by shard as lookups need them.

    `entries` is every entry (all shards read): what a caller that changes or copies
    them uses; `lookup` and `record` touch only the path's shard.
    """

    def __init__(self, path: Path | None, make_dirs=None):
        self.path = path  # the former single file; the shards are in `folder`
        self.folder = Path(path).with_suffix("") if path is not None else None
        # how the cache makes a folder (a group's cache: its group and mode)
        self.make_dirs = make_dirs or (lambda p: Path(p).mkdir(parents=True, exist_ok=True))
        self._entries: dict[str, list] = {}
        self._loaded: set[int] = set()  # shards read into _entries
        self._changed: set[int] = set()  # shards with entries recorded here
        self._recorded: set[str] = set()  # paths recorded here: seen, so not gone
        self._all = path is None  # every shard read (and maybe changed through `entries`)
        self.dirty = False

    @property
    def entries(self) -> dict[str, list]:
        if not self._all:
            for n in range(SHARDS):
                self._load(n)
            self._all = True
        return self._entries

    def _shard_file(self, n: int) -> Path:
        return self.folder / f"{n:02x}.json"

    def _read_shard(self, n: int) -> dict:
        try:
            with open(self._shard_file(n), encoding="utf-8") as f:
                data = json.load(f)
            if data.get("schema") == STATCACHE_SCHEMA and isinstance(data.get("entries"), dict):
                return data["entries"]
        except (OSError, ValueError, AttributeError, RecursionError):
            pass  # missing or corrupt: just a cold cache
        return {}

    def _load(self, n: int) -> None:
        if n in self._loaded or self.folder is None:
            return
        self._loaded.add(n)
        mine = self._entries
        for p, e in self._read_shard(n).items():
            mine.setdefault(p, e)  # what this process recorded is newer

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        if not self._all and len(self._loaded) < SHARDS:
            self._load(shard_of(path))
        e = self._entries.get(path)
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

    def merge(self, path: str, entry: list) -> None:
        """Take an entry another process (a stage's executor) recorded."""
        self._entries[path] = list(entry)
        self._changed.add(shard_of(path))
        self._recorded.add(path)
        self.dirty = True

    def record(self, path: str, st: os.stat_result, digest: str) -> None:
        if time.time_ns() - st.st_mtime_ns < RACY_NS:
            return
        self._entries[path] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest]
        self._changed.add(shard_of(path))
        self._recorded.add(path)
        self.dirty = True

    def save(self) -> None:
        """Merge each changed shard with what another process saved meanwhile, then
        replace it atomically."""
        if self.folder is None or not self.dirty:
            return
        changed = range(SHARDS) if self._all else sorted(self._changed)
        mine: dict[int, dict] = {n: {} for n in changed}
        for p, e in self._entries.items():
            group = mine.get(shard_of(p))
            if group is not None:
                group[p] = e
        try:
            self.make_dirs(self.folder)
            for n, group in mine.items():
                if not group:
                    continue
                on_disk = self._read_shard(n)
                on_disk.update(group)
                # forget files that are gone, so the cache does not grow forever (those
                # recorded here were just seen: an add of 100,000 files looks up none)
                if len(on_disk) > 50_000 // SHARDS:
                    seen = self._recorded
                    on_disk = {p: e for p, e in on_disk.items() if p in seen or os.path.lexists(p)}
                data = json.dumps(
                    {"schema": STATCACHE_SCHEMA, "entries": on_disk}, separators=(",", ":")
                )
                # a cache: the rename keeps each shard whole, and a shard a crash loses
                # costs one rehash, so no fsync (a build may change all 64 of them)
                atomic_write(self._shard_file(n), data.encode(), what="statcache", sync=False)
            if self.path is not None:
                Path(self.path).unlink(missing_ok=True)  # the single file of schema 2
        except OSError:
            return  # a read-only cache still builds; it just hashes again next time
        self._changed.clear()
        self._recorded.clear()
        self.dirty = False

    def summary_file(self, folder: str) -> Path | None:
        """Where the folder summary of an absolute folder path is kept (module docstring)."""
        if self.folder is None:
            return None
        return self.folder / f"folder-{xxhash.xxh3_64_hexdigest(_utf8(folder))}.txt"


def shard_of(path: str) -> int:
    return xxhash.xxh3_64_intdigest(_utf8(path)) % SHARDS


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


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

    def manifest(
        self, folder: str, _seen: frozenset = frozenset(), known: dict | None = None
    ) -> list[dict]:
        """Every file below `folder` (symlinked folders followed once, dangling links and
        Python's own `__pycache__`/`*.pyc` left out: bytecode is written by running the code).
        `known`: {path: (stat, digest)} of files just read and hashed (cache.Cache.insert),
        not stat'ed again."""
        known = known or {}
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
                st, digest = known.get(full, (None, None))
                if st is None:
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
            return self.folder(path)
        return self.file(path, st)

    def folder(self, path: str) -> Meta:
        """What folder_meta(manifest(path)) is, through the folder's summary (module
        docstring): one walk and one stat per file when nothing changed."""
        top = os.path.abspath(path)
        where = self.stats.summary_file(top)
        if where is None:  # nowhere to keep a summary
            return folder_meta(self.manifest(path))
        dirs = _scan(top)
        digest = xxhash.xxh3_128()
        for d in dirs:
            digest.update(_utf8(d.rel) + b"\0" + d.fp.encode() + b"\n")
        fp = digest.hexdigest()
        header, old, body = None, {}, b""
        try:
            with open(where, "rb") as f:
                header = _summary_header(f.readline(), top)
                if header is not None and header["fingerprint"] == fp:
                    return Meta(header["hash"], header["size"], header["nfiles"])
                body = f.read() if header is not None else b""
            if body and xxhash.xxh3_64_hexdigest(body) == header["body"]:
                old = _summary_lines(body)
        except (OSError, ValueError):
            header, old, body = None, {}, b""
        return self._summarize(top, dirs, fp, header, old, body, where)

    def _summarize(self, top, dirs, fp, header, old, body, where) -> Meta:
        """The Meta from the summary's unchanged folders and a file-by-file look at the
        others; the summary is rewritten when it learned something."""
        prefix = top if top.endswith(os.sep) else top + os.sep
        learned = False
        view = memoryview(body)
        for d in dirs:
            line = old.get(d.rel)
            if line is not None and d.fp != "-" and line[0] == d.fp.encode():
                if d.reuse(line, body, view):
                    continue
            known = _records(body[line[2][0] : line[2][1]]) if line is not None else {}
            records = {}
            items = []
            size = 0
            for name in sorted(d.names):
                full = prefix + d.rel + name
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    st = None
                if st is None or not stat_mod.S_ISREG(st.st_mode):
                    d.settled = False  # gone since the walk: this listing is not kept
                    continue
                r = known.get(name)
                if (
                    isinstance(r, list)
                    and len(r) == 5
                    and r[:4] == [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                    and isinstance(r[4], str)
                    and HEX32.match(r[4])
                ):
                    digest = r[4]
                else:
                    digest = self.file(full, st).hash
                if st.st_mtime_ns <= d.racy_from:
                    records[name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest]
                else:
                    d.settled = False  # changed since the walk
                items.append((name, _entry_json(d.rel + name, digest, st)))
                size += st.st_size
            d.set_files(items, records, size)
            learned = learned or d.settled or any(known.get(k) != v for k, v in records.items())
        settled = all(d.settled for d in dirs)
        learned = learned or (settled and (header is None or header["fingerprint"] != fp))
        # the manifest's JSON, fed to the hash in order, never joined: "[" RUNS... "]"
        pieces: list = []
        dirs[0].pieces(pieces)
        h = xxhash.xxh3_128(b"[")
        for i, piece in enumerate(pieces):
            if i:
                h.update(b",")
            h.update(piece)
        h.update(b"]")
        meta = Meta(
            h.hexdigest(),
            sum(d.size for d in dirs),
            sum(d.nfiles for d in dirs),
        )
        if learned:
            body = b"\n".join([d.line() for d in dirs])
            head = {
                "schema": STATCACHE_SCHEMA,
                "folder": top,
                "fingerprint": fp if settled else None,
                "hash": meta.hash,
                "size": meta.size,
                "nfiles": meta.nfiles,
                "body": xxhash.xxh3_64_hexdigest(body),
            }
            data = json.dumps(head, separators=(",", ":")).encode() + b"\n" + body
            try:
                self.stats.make_dirs(where.parent)
                atomic_write(where, data, what="statcache", sync=False)  # a cache: no fsync
            except OSError:
                pass  # a read-only cache: the next walk looks again
        return meta


class _Dir:
    """One folder of a summary walk: its own files' names and the folders walked below it."""

    __slots__ = (
        "rel",
        "names",
        "children",
        "fp",
        "settled",
        "racy_from",
        "runs",
        "size",
        "nfiles",
        "records",
    )

    def __init__(self, rel: str, racy_from: int):
        self.rel = rel
        self.names: list[str] = []
        self.children: list[_Dir] = []
        self.fp = "-"
        self.settled = False
        self.racy_from = racy_from
        self.runs: list[bytes] = [b""]
        self.size = self.nfiles = 0
        self.records = b"{}"

    def listed(self, stats: list[os.stat_result], below: list[str]) -> None:
        """Fingerprint of its files' stats and of the folders walked below it; settled
        when no file is racy."""
        vals = [
            x
            for st in stats
            for x in (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        ]
        try:
            numbers = array("q", vals).tobytes()
        except OverflowError:
            numbers = repr(vals).encode()
        h = xxhash.xxh3_128(_utf8("\0".join(self.names)))
        h.update(b"\1" + _utf8("\0".join(below)) + b"\1")
        h.update(numbers)
        self.fp = h.hexdigest()
        self.settled = not vals or max(vals[2::5]) <= self.racy_from

    def reuse(self, line: tuple, body: bytes, view: memoryview) -> bool:
        """Take the summary's line for this folder (its DIRFP matched); its runs and
        records stay views of the summary's bytes (no copy)."""
        (a, b), runs = line[3], []
        while True:
            tab = body.find(b"\t", a, b)
            if tab < 0:
                runs.append(view[a:b])
                break
            runs.append(view[a:tab])
            a = tab + 1
        try:
            size, nfiles = json.loads(line[1])
        except (ValueError, TypeError):
            return False
        if len(runs) != len(self.children) + 1 or not (_whole(size) and _whole(nfiles)):
            return False
        self.runs, self.size, self.nfiles = runs, size, nfiles
        self.records = view[line[2][0] : line[2][1]]
        return True

    def pieces(self, out: list) -> None:
        """Its non-empty runs and its subfolders' in the manifest's order."""
        if self.runs[0]:
            out.append(self.runs[0])
        for child, run in zip(self.children, self.runs[1:], strict=True):
            child.pieces(out)
            if run:
                out.append(run)

    def set_files(self, items: list[tuple[str, str]], records: dict, size: int) -> None:
        """Its files' (name, manifest entry JSON), sorted by name, cut into runs where the
        subfolders' entries go: name < "sub/..." exactly when name < "sub/"."""
        runs: list[list[str]] = [[] for _ in range(len(self.children) + 1)]
        keys = [c.rel[len(self.rel) :] for c in self.children]
        i = 0
        for name, text in items:
            while i < len(keys) and keys[i] < name:
                i += 1
            runs[i].append(text)
        self.runs = [",".join(r).encode() for r in runs]
        self.size, self.nfiles = size, len(items)
        self.records = json.dumps(records, separators=(",", ":")).encode()

    def line(self) -> bytes:
        fp = self.fp if self.settled else "-"
        head = f"{fp}\t{json.dumps(self.rel)}\t{json.dumps([self.size, self.nfiles])}"
        return b"\t".join([head.encode(), self.records, *self.runs])


def _scan(top: str) -> list[_Dir]:
    """The folders below `top` as Hasher.manifest walks them, each listed with one stat per
    file (relative to the folder's descriptor: no path resolved again), preorder."""
    racy_from = time.time_ns() - RACY_NS
    prefix = top if top.endswith(os.sep) else top + os.sep
    dirs: list[_Dir] = []
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    stat = os.stat

    def walk(fd: int | None, rel: str, seen: frozenset) -> _Dir:
        d = _Dir(rel, racy_from)
        dirs.append(d)
        if fd is None:
            return d  # unreadable: no content, as os.walk has it; never settled
        try:
            listed = os.listdir(fd)
        except OSError:
            return d  # os.walk drops a folder it cannot list
        try:
            stats = [stat(name, dir_fd=fd) for name in listed]
        except OSError:  # a dangling symlink, or worse: one by one, as Hasher.manifest does
            listed, stats = _careful(fd, listed)
        kinds = [st.st_mode & 0o170000 for st in stats]
        subs = []
        if kinds.count(0o100000) == len(kinds) and ".pyc\0" not in "\0".join(listed) + "\0":
            d.names = listed  # only files to take: the common case, without a loop
        else:
            kept = []
            for name, st, kind in zip(listed, stats, kinds, strict=True):
                if kind == 0o100000:  # a regular file
                    if not name.endswith(".pyc"):
                        d.names.append(name)
                        kept.append(st)
                elif kind == 0o040000 and name != "__pycache__":  # a folder
                    subs.append((name + "/", name, os.path.islink(prefix + rel + name)))
            stats = kept
        walked = []
        for key, name, is_link in sorted(subs):
            below = seen
            if is_link:
                real = os.path.realpath(prefix + rel + name)
                if real in seen:
                    continue  # a symlink loop
                below = seen | {real}
            walked.append((key, name, below))
        d.listed(stats, [rel + key for key, _, _ in walked])
        del stats  # only names are kept: a folder looked at file by file is stat-ed again
        for key, name, below in walked:
            try:
                child_fd = os.open(name, flags, dir_fd=fd)
            except OSError:
                child_fd = None
            try:
                d.children.append(walk(child_fd, rel + key, below))
            finally:
                if child_fd is not None:
                    os.close(child_fd)
        return d

    try:
        top_fd = os.open(top, flags)
    except OSError:
        top_fd = None
    try:
        walk(top_fd, "", frozenset({os.path.realpath(top)}))
    finally:
        if top_fd is not None:
            os.close(top_fd)
    return dirs


def _careful(fd: int, names: list[str]) -> tuple[list[str], list[os.stat_result]]:
    """The entries that have a stat: dangling symlinks left out; a `.pyc` that cannot be
    stat-ed is skipped unread, another error is raised as Hasher.manifest does."""
    kept, stats = [], []
    for name in names:
        try:
            stats.append(os.stat(name, dir_fd=fd))
        except FileNotFoundError:
            continue
        except OSError:
            if name.endswith(".pyc"):
                continue
            raise
        kept.append(name)
    return kept, stats


def _summary_header(line: bytes, top: str) -> dict | None:
    h = json.loads(line)
    if (
        isinstance(h, dict)
        and h.get("schema") == STATCACHE_SCHEMA
        and h.get("folder") == top
        and isinstance(h.get("fingerprint"), str | None)
        and isinstance(h.get("hash"), str)
        and HEX32.match(h["hash"])
        and _whole(h.get("size"))
        and _whole(h.get("nfiles"))
        and isinstance(h.get("body"), str)
    ):
        return h
    return None


def _summary_lines(body: bytes) -> dict[str, tuple]:
    """{REL: (DIRFP, COUNTS, RECORDS span, RUNS span)}, spans as (start, end) in `body`:
    nothing is copied or parsed that is not used."""
    lines = {}
    start, n = 0, len(body)
    while start < n:
        end = body.find(b"\n", start)
        end = n if end < 0 else end
        tabs, pos = [], start
        while len(tabs) < 4 and (pos := body.find(b"\t", pos, end)) >= 0:
            tabs.append(pos)
            pos += 1
        if len(tabs) == 4:
            rel = json.loads(body[tabs[0] + 1 : tabs[1]])
            if isinstance(rel, str):
                lines[rel] = (
                    body[start : tabs[0]],
                    body[tabs[1] + 1 : tabs[2]],
                    (tabs[2] + 1, tabs[3]),
                    (tabs[3] + 1, end),
                )
        start = end + 1
    return lines


def _entry_json(path: str, digest: str, st: os.stat_result) -> str:
    """A manifest entry as manifest_bytes writes it (keys sorted, no spaces, ASCII)."""
    exe = "true" if st.st_mode & 0o111 else "false"
    return f'{{"exec":{exe},"hash":"{digest}","path":{_json_str(path)},"size":{st.st_size}}}'


def _records(text: bytes) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def folder_meta(entries: list[dict], data: bytes | None = None) -> Meta:
    """A folder's Meta; `data`: its manifest_bytes, when the caller has them already."""
    data = manifest_bytes(entries) if data is None else data
    return Meta(hash_bytes(data), sum(e["size"] for e in entries), len(entries))
