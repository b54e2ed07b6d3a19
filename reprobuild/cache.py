"""The content-addressed cache.

Layout (shared with remotes):

    cache/
      .gitignore              `*`: the cache never goes into git
      objects/ab/cdef...      a file's bytes, named by their XXH3-128; read-only
      objects/ab/cdef....dir  a folder manifest (hashing.manifest_bytes), named by its hash
      runs/9b/2c...           run records, named by stage key (below)
      tmp/                    every write lands here first, then is renamed into place
      quarantine/             objects found corrupt, kept for inspection, never served
      statcache.json          see hashing.py

Run record (JSON, one per successful run or commit):

    {"schema": 1, "key": KEY, "stage": NAME,
     "outs": {PATH: {"hash": H, "size": N[, "nfiles": N]}}[,
     "profile": {...}]}

PATH is relative to the pipeline folder (folders end in '/'). `profile` is
the machine profile of the run (machine.py: CPU, SIMD, BLAS, numeric
variables); records written by `commit`, by older versions or pulled from a
remote may lack it. It is what tells two machines apart when one key gave
two results (alarm.py). A record is
only used when every object it names is present; a record that does not
parse, or names a path outside the pipeline's workspace, is ignored.

Objects are never modified in place: an insert writes `tmp/<random>`, checks
the hash, and renames. Every restore re-hashes the bytes it copies and
refuses (and quarantines) an object whose bytes do not match its name, so a
corrupt object is never served. Outputs reach the workspace by reflink where
the filesystem supports it, else by copy; `link: hardlink|symlink` trades
that safety for space (an edit of a linked file would alter the cache).
"""

from __future__ import annotations

import errno
import json
import os
import stat as stat_mod
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import faults, hashing
from .errors import CacheError
from .fsutil import atomic_write, fsync_dir, remove_path, sync_filesystem
from .fsutil import unlink_quiet as _unlink_quiet
from .hashing import Meta

RUN_SCHEMA = 1
PARALLEL_FROM, COPY_THREADS = 64, 8  # folders of more files than this are stored on threads
TMP_MAX_AGE = 24 * 3600  # a temp file this old belongs to a process that died
try:
    import fcntl

    FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
except ImportError:  # pragma: no cover
    fcntl = None


class CorruptObject(Exception):
    """An object's bytes do not match its name; it has been quarantined."""


class MissingObject(Exception):
    pass


@dataclass
class VerifyReport:
    checked: int = 0
    corrupt: list = field(default_factory=list)
    swept_tmp: int = 0


class Cache:
    def __init__(self, root: Path, link: str = "copy"):
        self.root = Path(root)
        self.link = link
        self.objects = self.root / "objects"
        self.runs = self.root / "runs"
        self.tmp = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self._reflink_ok = fcntl is not None

    # -- layout -------------------------------------------------------------

    def ensure(self) -> None:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            ignore = self.root / ".gitignore"
            if not ignore.exists():
                atomic_write(ignore, b"*\n", tmp_dir=self.tmp)
        except OSError as exc:
            raise CacheError(f"cannot create the cache at {self.root}: {exc.strerror}") from None

    def object_path(self, digest: str, is_dir: bool = False) -> Path:
        return self.objects / digest[:2] / (digest[2:] + (".dir" if is_dir else ""))

    def run_path(self, key: str) -> Path:
        return self.runs / key[:2] / key[2:]

    def stat_cache_path(self) -> Path:
        return self.root / "statcache.json"

    # -- presence -----------------------------------------------------------

    def has(self, meta: Meta) -> bool:
        if not meta.is_dir:
            return self.object_path(meta.hash).is_file()
        try:
            entries = self.read_manifest(meta.hash)
        except (MissingObject, CorruptObject):
            return False
        return all(self.object_path(e["hash"]).is_file() for e in entries)

    # -- insert -------------------------------------------------------------

    def insert(self, path: str, hasher: hashing.Hasher) -> Meta:
        """Store a workspace file or folder; returns its Meta."""
        st = os.stat(path)
        if stat_mod.S_ISDIR(st.st_mode):
            entries = hasher.manifest(path)  # also fills the stat cache
            # Group commit: the files' objects go without an fsync each, then one
            # filesystem sync, then the manifest that names them (fsynced).
            missing = [e for e in entries if not self.object_path(e["hash"]).is_file()]

            def one(e) -> bool:
                return self._insert_file(os.path.join(path, e["path"]), hasher, None, False)[1]

            if len(missing) > PARALLEL_FROM:  # many small files: the kernel's work overlaps
                with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="store") as pool:
                    wrote = any(list(pool.map(one, missing)))
            else:
                wrote = any([one(e) for e in missing])
            if wrote:
                sync_filesystem(self.objects)
            meta = hashing.folder_meta(entries)
            target = self.object_path(meta.hash, is_dir=True)
            if not target.exists():
                self._publish_bytes(hashing.manifest_bytes(entries), target)
            return meta
        digest, _ = self._insert_file(path, hasher, hasher.stats.lookup(path, st))
        return Meta(digest, st.st_size)

    def _insert_file(
        self, path: str, hasher: hashing.Hasher, known: str | None, sync: bool = True
    ) -> tuple[str, bool]:
        """(digest, whether a new object was written); `sync=False` leaves the fsync to
        the caller's group commit (sync_filesystem)."""
        if known and self.object_path(known).is_file():
            return known, False
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as dst, open(path, "rb") as src:
                digest, _ = self._copy(src, dst)
                if sync:
                    os.fsync(dst.fileno())
            faults.point("object:tmp-written")
            st = os.stat(path)
            hasher.stats.record(path, st, digest)
            target = self.object_path(digest)
            if target.is_file():
                os.unlink(tmp)
                return digest, False
            os.chmod(tmp, 0o444)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            if sync:
                fsync_dir(target.parent)
            faults.point("object:renamed")
            return digest, True
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def _copy(self, src, dst) -> tuple[str, int]:
        """Copy src to dst and hash the bytes (reflink + read-back where possible)."""
        if self._reflink_ok:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                with open(dst.name, "rb", buffering=0) as back:
                    return hashing.hash_stream(back)
            except OSError as exc:
                if exc.errno not in (
                    errno.EOPNOTSUPP,
                    errno.ENOTTY,
                    errno.EXDEV,
                    errno.EINVAL,
                    errno.EBADF,
                    errno.ENOSYS,
                    errno.EPERM,
                ):
                    raise
                self._reflink_ok = False
        return hashing.hash_stream(src, copy_to=dst)

    def _publish_bytes(self, data: bytes, target: Path) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data, mode=0o444, tmp_dir=self.tmp, what="manifest")

    # -- restore ------------------------------------------------------------

    def read_manifest(self, digest: str) -> list[dict]:
        path = self.object_path(digest, is_dir=True)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(digest + ".dir") from None
        if hashing.hash_bytes(data) != digest:
            self.quarantine(path)
            raise CorruptObject(digest + ".dir")
        try:
            entries = json.loads(data)
            for e in entries:
                _check_relative(e["path"])
                str(e["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(f"{digest}.dir: {exc}") from None
        return entries

    def restore(self, meta: Meta, dest: str, hasher: hashing.Hasher | None = None) -> None:
        """Put the cached content of `meta` at `dest`, atomically; raises on a miss."""
        parent = os.path.dirname(dest) or "."
        os.makedirs(parent, exist_ok=True)
        if not meta.is_dir:
            tmp = self._restore_file(meta.hash, parent, False)
            remove_path(Path(dest))
            os.replace(tmp, dest)
            self._remember(hasher, dest, meta.hash)
            return
        entries = self.read_manifest(meta.hash)
        tmpdir = tempfile.mkdtemp(dir=parent, prefix=".tmp-restore-")

        def one(e) -> None:
            target = os.path.join(tmpdir, e["path"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = self._restore_file(e["hash"], os.path.dirname(target), e.get("exec", False))
            os.replace(tmp, target)

        try:
            if len(entries) > PARALLEL_FROM:
                with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="restore") as pool:
                    list(pool.map(one, entries))
            else:
                for e in entries:
                    one(e)
            os.chmod(tmpdir, 0o777 & ~UMASK)  # mkdtemp made it 0700
            remove_path(Path(dest))
            os.replace(tmpdir, dest)
        except BaseException:
            remove_path(Path(tmpdir))
            raise
        for e in entries:
            self._remember(hasher, os.path.join(dest, e["path"]), e["hash"])

    def _remember(self, hasher, path, digest):
        if hasher is not None and self.link == "copy":
            hasher.stats.record(path, os.stat(path), digest)

    def _restore_file(self, digest: str, folder: str, executable: bool) -> str:
        """A verified copy (or link) of the object in `folder`; returns its temp path."""
        obj = self.object_path(digest)
        if not obj.is_file():
            raise MissingObject(digest)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            if self.link == "copy":
                with os.fdopen(fd, "wb") as dst, open(obj, "rb") as src:
                    got, _ = self._copy(src, dst)
                os.chmod(tmp, 0o755 if executable else 0o644)
            else:
                os.close(fd)
                os.unlink(tmp)
                got, _ = hashing.hash_file_raw(obj)
                if self.link == "hardlink":
                    os.link(obj, tmp)
                else:
                    os.symlink(obj, tmp)
            if got != digest:
                self.quarantine(obj)
                raise CorruptObject(digest)
            return tmp
        except BaseException:
            _unlink_quiet(tmp)
            raise

    # -- run records --------------------------------------------------------

    def read_run(self, key: str) -> dict | None:
        """The outs of a run record, or None when absent or unusable."""
        try:
            data = json.loads(self.run_path(key).read_bytes())
            if data.get("schema") != RUN_SCHEMA or data.get("key") != key:
                return None
            outs = {}
            for path, d in data["outs"].items():  # the engine checks them against the stage's outs
                meta = Meta.from_lock(d)
                if meta is None:
                    return None
                outs[path] = meta
            return outs
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def read_run_profile(self, key: str) -> dict | None:
        """The machine profile a run record holds, if any."""
        try:
            profile = json.loads(self.run_path(key).read_bytes()).get("profile")
            return profile if isinstance(profile, dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def write_run(
        self, key: str, stage: str, outs: dict[str, Meta], profile: dict | None = None
    ) -> None:
        record = {
            "schema": RUN_SCHEMA,
            "key": key,
            "stage": stage,
            "outs": {p: m.to_lock() for p, m in sorted(outs.items())},
        }
        if profile:
            record["profile"] = profile
        target = self.run_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        atomic_write(
            target,
            json.dumps(record, sort_keys=True, indent=1).encode(),
            tmp_dir=self.tmp,
            what="run-record",
        )

    # -- who is using it ----------------------------------------------------

    @contextmanager
    def using(self, exclusive: bool = False, on_wait=None):
        """Builds hold `cache/lock` shared while they write; gc holds it exclusive.

        So gc never removes an object a running build (of any workspace sharing
        this cache) has just stored but not yet named in a lockfile.
        """
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    # -- upkeep -------------------------------------------------------------

    def quarantine(self, path: Path) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        rel = Path(path).relative_to(self.objects)
        try:
            os.replace(path, self.quarantine_dir / str(rel).replace(os.sep, ""))
        except OSError:
            _unlink_quiet(path)

    def iter_objects(self):
        """(path, digest, is_dir) of every object."""
        if not self.objects.is_dir():
            return
        for sub in sorted(os.listdir(self.objects)):
            folder = self.objects / sub
            if not folder.is_dir():
                continue
            for name in sorted(os.listdir(folder)):
                is_dir = name.endswith(".dir")
                yield folder / name, sub + (name[:-4] if is_dir else name), is_dir

    def iter_runs(self):
        if not self.runs.is_dir():
            return
        for sub in sorted(os.listdir(self.runs)):
            folder = self.runs / sub
            if folder.is_dir():
                for name in sorted(os.listdir(folder)):
                    yield folder / name, sub + name

    def sweep_tmp(self, max_age: float = TMP_MAX_AGE) -> int:
        """Remove temp files left by killed processes (old enough to be nobody's)."""
        swept = 0
        if not self.tmp.is_dir():
            return 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    remove_path(Path(entry.path))
                    swept += 1
            except OSError:
                pass
        return swept

    def verify(self, progress=None) -> VerifyReport:
        report = VerifyReport()
        report.swept_tmp = self.sweep_tmp()
        for path, digest, is_dir in list(self.iter_objects()):
            report.checked += 1
            try:
                if is_dir:
                    got = hashing.hash_bytes(path.read_bytes())
                else:
                    got, _ = hashing.hash_file_raw(path)
            except OSError:
                got = None
            if got != digest:
                report.corrupt.append(str(path.relative_to(self.root)))
                self.quarantine(path)
            if progress:
                progress(report.checked)
        return report


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: os.umask is process-wide, not thread-safe


def _check_relative(path: str) -> None:
    if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/") or "\\" in path:
        raise ValueError(f"unsafe path in cache record: {path!r}")
