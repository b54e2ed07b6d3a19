"""The content-addressed cache.

Layout (shared with remotes):

    cache/
      .gitignore              `*`: the cache never goes into git
      objects/ab/cdef...      a file's bytes, named by their XXH3-128; read-only
      objects/ab/cdef....dir  a folder manifest (hashing.manifest_bytes), named by its hash
      runs/9b/2c...           run records, named by stage key (below)
      tmp/                    every write lands here first, then is renamed into place
      quarantine/             objects found corrupt, kept for inspection, never served
      statcache/              the stat cache and folder summaries: see hashing.py

Run record (JSON, one per successful run or commit):

    {"schema": 1, "key": KEY, "stage": NAME,
     "outs": {PATH: {"hash": H, "size": N[, "nfiles": N][, "mode": M]}}
     [, "profile": {...}][, "signature": {"key": "ed25519:...", "sig": "..."}][, "pulled": true]}

PATH is relative to the pipeline folder (folders end in '/'). MODE is a file
out's permission bits (an int, e.g. 493 for 0755), restored with it; a
folder's manifest keeps each file's exec bit. `signature` is added by a
signed push (signature.py describes what it covers; not the profile).
`profile` is the machine profile of the run (machine.py: CPU, SIMD, BLAS,
numeric variables); records written by `commit`, by older versions or pulled
from a remote may lack it. It tells two machines apart when one key gave two
results (alarm.py). `pulled` marks a record
that came from a remote: with trusted keys configured it is used only while
a trusted key's signature holds (one pulled before the keys were set is not);
records this machine made are always used. A record is only used
when every object it names is present; a record that does not parse, names
a path outside the pipeline's workspace, or holds a malformed hash, size or
mode is ignored.

Modes. An object keeps the read bits of the file it came from (at least the
owner's): a private (0600) output gives a 0400 object, never a world-readable
one. A cache folder that is group-writable is shared by a group: the folders
and the lock file reprobuild creates in it take the cache folder's group and
permissions, so every member can build with it.

What enters the cache: only regular files (a FIFO, socket or device is
refused without being opened for a blocking read), and nothing reached
through a symlink that leads out of the workspace, into its `.git`, or into
the cache itself (objects excepted: `link: symlink` outs point there). The
temp sweep removes only files named as reprobuild names its temps.

Objects are never modified in place: an insert writes `tmp/<random>`, checks
the hash, and renames; a small object (up to 1 MiB, read whole) is written as an
unnamed file in its own folder (O_TMPFILE) and linked in under its name once
whole, where the filesystem allows. Durability: a single insert fsyncs the object and its
folder; a build (and a folder's many files) writes objects and run records
without an fsync each and syncs the filesystem once before the lockfile that
names them is written (group commit, `commit()`). A build's small outs are
held in memory, hashed, and written while its next stage runs
(`defer_writes`); `commit()` writes any still held before it syncs. Every restore re-hashes the bytes it copies and
refuses (and quarantines) an object whose bytes do not match its name, so a
corrupt object is never served. Outputs reach the workspace by reflink where
the filesystem supports it, else by copy; `link: hardlink|symlink` trades
that safety for space (an edit of a linked file would alter the cache).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat as stat_mod
import time
from collections import namedtuple
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import faults, hashing
from .errors import CacheError
from .fsutil import (
    atomic_write,
    can_fork,
    fsync_dir,
    on_processes,
    on_threads,
    read_all,
    remove_path,
    sync_filesystem,
    write_all,
)
from .fsutil import unlink_quiet as _unlink_quiet
from .hashing import Meta

RUN_SCHEMA = 1
# a many-file folder is stored and restored on this many threads (fsutil.on_threads)
COPY_THREADS = 4
# Files of a folder up to this size are stored and restored in one read and one write
# of plain fds: a many-file folder's cost is its syscalls, and a buffered file object
# adds four (fstat, ioctl, lseek) on each side.
SMALL = 1 << 20
# add's first pass over a folder (one thread a process: on threads, small files' syscalls fight
# over the GIL) starts writing its objects back to the disk every this many
STORE_BATCH = 4096
# ...and a folder of this many files or more is stored, or restored, by one process per
# CPU (fsutil.on_processes): add of 100,000 small files on 2 cores took 6.1 s in one,
# 4.3 s in two (cp -r of the folder: 5.8 s, in the same run)
STORE_IN_PROCESSES_AT = 2048
TMP_MAX_AGE = 24 * 3600  # a temp file this old belongs to a process that died
TMP_PREFIX = "rb-tmp-"  # every temp reprobuild makes in cache/tmp starts so (or ".tmp-")
# mkstemp adds 8 characters of [a-z0-9_]; atomic_write uses ".tmp-" + 8 hex digits + "-NAME"
_OUR_TMP = re.compile(r"(rb-tmp-[a-z]*-?|\.tmp-)[a-z0-9_]{8}(-.*)?\Z")
_OBJECT_NAME = re.compile(r"[0-9a-f]{30}(\.dir)?\Z")
_HEX2 = re.compile(r"[0-9a-f]{2}\Z")
try:
    import fcntl

    FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
except ImportError:  # pragma: no cover
    fcntl = None


class CorruptObject(Exception):
    """An object's bytes do not match its name; it has been quarantined."""


class MissingObject(Exception):
    pass


class UnsafeOut(CacheError):
    """An out that must not enter the cache (a symlink out of the workspace)."""


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
        self._objects_str = str(self.objects)
        self.runs = self.root / "runs"
        self.tmp = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self._reflink_ok = fcntl is not None
        self._shared: tuple[int, int] | None | bool = False  # (mode, gid) of a group cache
        self.trust = None  # signature.Trust: what a pulled run record must be signed by
        self._unsynced = False  # objects or records written without fsync since commit()
        self._object_dirs: set[str] = set()  # object_dir: folders known to exist
        self._unnamed_ok = hasattr(os, "O_TMPFILE")  # write_object: until the system says no
        self._real_roots: dict[str, tuple] = {}  # _check_links: workspace -> its real roots
        self._later: dict[str, tuple[bytes, int]] | None = None  # see defer_writes
        self._later_lock = None

    # -- a cache shared by a group -------------------------------------------------

    def shared(self) -> tuple[int, int] | None:
        """(folder mode, gid) when the cache folder is group-writable, else None."""
        if self._shared is False:
            try:
                st = os.stat(self.root)
                group = bool(st.st_mode & 0o020)
                self._shared = (stat_mod.S_IMODE(st.st_mode), st.st_gid) if group else None
            except OSError:
                return None
        return self._shared

    def make_dirs(self, folder: Path) -> None:
        """mkdir -p inside the cache; in a group cache new folders follow the cache folder."""
        folder = Path(folder)
        if folder.is_dir():
            return
        shared = self.shared()
        if shared is None:
            folder.mkdir(parents=True, exist_ok=True)
            return
        missing = []
        probe = folder
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            self._share(d, shared[0])

    def _share(self, path, mode: int) -> None:
        """Give `path` the cache folder's group and `mode` (best effort: its owner may differ)."""
        mode_gid = self.shared()
        if mode_gid is None:
            return
        try:
            os.chown(path, -1, mode_gid[1])
        except OSError:
            pass
        try:
            os.chmod(path, mode)
        except OSError:
            pass

    # -- layout -------------------------------------------------------------

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.make_dirs(self.tmp)
            ignore = self.root / ".gitignore"
            if not ignore.exists():
                atomic_write(ignore, b"*\n", tmp_dir=self.tmp)
        except OSError as exc:
            raise CacheError(f"cannot create the cache at {self.root}: {exc.strerror}") from None

    def object_path(self, digest: str, is_dir: bool = False) -> Path:
        return self.objects / digest[:2] / (digest[2:] + (".dir" if is_dir else ""))

    def object_str(self, digest: str) -> str:
        """object_path as a str: a many-file folder builds 100,000s of them."""
        return f"{self._objects_str}/{digest[:2]}/{digest[2:]}"

    def run_path(self, key: str) -> Path:
        return self.runs / key[:2] / key[2:]

    def stat_cache_path(self) -> Path:
        return self.root / "statcache.json"

    # -- presence -----------------------------------------------------------

    def has(self, meta: Meta) -> bool:
        if not meta.is_dir:
            return meta.hash in (self._later or ()) or self.object_path(meta.hash).is_file()
        try:
            entries = self.read_manifest(meta.hash)
        except (MissingObject, CorruptObject):
            return False
        return all(self.object_path(e["hash"]).is_file() for e in entries)

    # -- insert -------------------------------------------------------------

    def insert(
        self, path: str, hasher: hashing.Hasher, workspace: str | None = None, sync: bool = True
    ) -> Meta:
        """Store a workspace file or folder; returns its Meta (a file's with its mode).

        With `workspace` (its root), nothing reached through a symlink that
        leads outside it (or into its .git or this cache) is stored: UnsafeOut.
        `sync=False`: no fsync here; the caller's group commit (`commit()` after
        `unsynced()`) makes the object durable before anything durable names it.
        """
        if workspace is not None:
            self._check_links(path, workspace)
        if not sync:
            self._unsynced = True
        st = os.stat(path)
        if stat_mod.S_ISDIR(st.st_mode):
            read, wrote = self._store_unknown(path, hasher)
            present = {digest for _, digest in read.values()}
            entries = hasher.manifest(path, known=read)  # also fills the stat cache
            # Group commit: the files' objects go without an fsync each, then (with
            # `sync`) one filesystem sync, then the manifest that names them.
            isfile = os.path.isfile
            missing = [
                e
                for e in entries
                if e["hash"] not in present and not isfile(self.object_str(e["hash"]))
            ]
            if missing:
                self.make_dirs(self.tmp)

            def one(e) -> bool:
                full = os.path.join(path, e["path"])
                if e["size"] <= SMALL:
                    return self._insert_small(full, e["hash"])
                return self._insert_file(full, hasher, None, False)[1]

            stored = []
            on_threads(lambda e: stored.append(one(e)), missing, COPY_THREADS)
            wrote = any(stored) or wrote
            if wrote and sync:
                sync_filesystem(self.objects)
            data = hashing.manifest_bytes(entries)  # (100,000 files: 0.1 s to make)
            meta = hashing.folder_meta(entries, data)
            target = self.object_path(meta.hash, is_dir=True)
            if not target.exists():
                self._publish_bytes(data, target, sync)
            return meta
        if not stat_mod.S_ISREG(st.st_mode):
            raise hashing.NotRegularFile(path, st.st_mode)
        digest, _ = self._insert_file(path, hasher, hasher.stats.lookup(path, st), sync)
        return Meta(digest, st.st_size, mode=stat_mod.S_IMODE(st.st_mode) & 0o777)

    def _check_links(self, path: str, workspace: str) -> None:
        """UnsafeOut when `path`, or a symlink below it, leads out of the workspace (or into
        its .git, or into this cache other than its objects)."""
        roots = self._real_roots.get(workspace)
        if roots is None:  # once per workspace: each realpath is an lstat per folder
            real_ws = os.path.realpath(workspace)
            roots = (
                real_ws,
                (os.path.join(real_ws, ".git"), os.path.realpath(self.root)),
                os.path.realpath(self.objects),
            )
            self._real_roots[workspace] = roots
        real_ws, forbidden, objects = roots

        def check(p: str) -> None:
            real = os.path.realpath(p)
            if _within(real, objects):
                return
            if not _within(real, real_ws) or any(_within(real, f) for f in forbidden):
                shown = os.path.relpath(p, workspace)
                raise UnsafeOut(
                    f"'{shown}' is a symlink to {real}, outside the workspace "
                    "(or into .git or the cache); not stored"
                )

        check(path)
        if not os.path.isdir(path):
            return
        seen = {os.path.realpath(path)}  # each linked folder walked once: loops end
        folders = [path]
        while folders:  # scandir's entries know a symlink without an lstat per file
            try:
                with os.scandir(folders.pop()) as listing:
                    entries = list(listing)
            except OSError:  # unreadable, or gone: as os.walk, nothing below it to check
                continue
            for entry in entries:
                if not entry.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    continue
                if not os.path.exists(entry.path):  # dangling: no content
                    continue
                check(entry.path)
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in seen:
                        seen.add(real)
                        folders.append(entry.path)

    def _insert_file(
        self, path: str, hasher: hashing.Hasher, known: str | None, sync: bool = True
    ) -> tuple[str, bool]:
        """(digest, whether a new object was written); `sync=False` leaves the fsync to
        the caller's group commit (sync_filesystem)."""
        if known and self.object_path(known).is_file():
            return known, False
        st, data = _read_small(path)
        if data is not None:  # a small file: one read, hashed in memory, one write
            digest = hashing.hash_bytes(data)
            hasher.stats.record(path, st, digest)
            if os.path.isfile(self.object_str(digest)):
                return digest, False
            # the source's read bits, at least the owner's: a private file stays private
            mode = (st.st_mode & 0o444) | 0o400
            if self._later is not None and not sync:
                with self._later_lock:
                    self._later[digest] = (data, mode)
                return digest, True
            self.make_dirs(self.tmp)
            wrote = self.write_object(digest, data, mode, sync)
            return digest, wrote
        self.make_dirs(self.tmp)
        import tempfile  # (as in fsutil.atomic_write: not at start-up)

        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix=TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as dst, hashing.open_regular(path) as src:
                src_mode = os.fstat(src.fileno()).st_mode
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
            # the source's read bits, at least the owner's: a private file stays private
            os.chmod(tmp, (src_mode & 0o444) | 0o400)
            self.make_dirs(target.parent)
            os.replace(tmp, target)
            if sync:
                fsync_dir(target.parent)
            faults.point("object:renamed")
            return digest, True
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def _store_unknown(self, folder: str, hasher: hashing.Hasher) -> tuple[dict, bool]:
        """Before a folder's manifest: store each small file the stat cache does not know,
        hashed as it is read and recorded in the stat cache, so that the manifest reads
        none of them again (a folder being added would otherwise be read twice).
        Whatever it skips (large files, symlinks, files known to the stat cache) the
        manifest and the general path take. Returns ({path: (stat, digest)} of the files
        it read, now in the cache; whether any object was written).

        A folder of STORE_IN_PROCESSES_AT files or more, stored by a process with no other
        thread (add, not a build's executor), is split among one process per CPU, forked:
        the cost is Python's per file, under one GIL, where cp -r is all system time."""
        files = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            files.extend(dirpath + os.sep + n for n in filenames if not n.endswith(".pyc"))
        stats = hasher.stats
        workers = can_fork(len(files), STORE_IN_PROCESSES_AT)
        if workers:
            read, wrote = {}, False
            for done, part_wrote in on_processes(
                lambda part: _store_chunk(self, part, stats.lookup),
                files,
                workers,
                f"storing {folder}",
                idle=lambda: sync_filesystem(self.objects),  # the group commit's, early
            ):
                wrote = wrote or part_wrote
                read.update((p, (_Stat(*st), digest)) for p, st, digest in done)
        else:
            read, wrote = self._store_files(files, stats.lookup)
        for full, (st, digest) in read.items():
            stats.record(full, st, digest)
        return read, wrote

    def _store_files(self, files: list[str], known, early_sync=True) -> tuple[dict, bool]:
        """_store_unknown's work on `files`, but for the stat cache; `known(path, stat)`
        is its lookup. `early_sync=False`: no writing back while it goes on (a forked
        chunk would then wait for it: the caller's group commit has it all)."""
        read, present, wrote = {}, set(), 0
        look, isfile = False, os.path.isfile
        early = _EarlySync(self.objects if early_sync else None)
        for full in files:
            try:
                st, data = _read_small(full, follow=False, skip=known)
            except OSError:  # a symlink (ELOOP), not a file, or gone: the manifest decides
                continue
            if data is None:  # large, or known to the stat cache
                continue
            digest = hashing.hash_bytes(data)
            if digest not in present and not (look and isfile(self.object_str(digest))):
                if not wrote:
                    self.make_dirs(self.tmp)
                # Not looked for first (a stat per file): a new folder's objects are new.
                # Once one was there already, look before writing each.
                if self.write_object(digest, data, (st.st_mode & 0o444) | 0o400):
                    wrote += 1
                    if wrote % STORE_BATCH == 0:
                        early.start()
                else:
                    look = True
            present.add(digest)
            if len(data) == st.st_size:  # (one that grew while read: the manifest stats it)
                read[full] = (st, digest)
        early.wait()
        return read, bool(wrote)

    def write_object(self, digest: str, data: bytes, mode: int, sync: bool = False) -> bool:
        """A new object from bytes that hash to `digest`, fsynced (file and folder) only with
        `sync`, else by the group commit's. False when it was there already.

        Written as an unnamed file in the object's own folder (O_TMPFILE) and linked in
        under its name once whole: a crash leaves nothing, and there is no temp name to
        create in `tmp/` and rename. Where the filesystem or /proc cannot do that: `tmp/`,
        then a rename."""
        target = self.object_str(digest)
        folder = os.path.dirname(target)
        self.object_dir(folder)
        if self._unnamed_ok:
            try:
                fd = os.open(folder, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, mode)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._unnamed_ok = False
            else:
                linked = self._link_unnamed(fd, data, mode, target, sync)
                if linked is not None:
                    return linked
        tmp, fd = self.new_tmp(mode)
        try:
            try:
                write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            faults.point("object:tmp-written")
            os.replace(tmp, target)
            if sync:
                fsync_dir(Path(folder))
            faults.point("object:renamed")
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return True

    def _link_unnamed(self, fd: int, data: bytes, mode: int, target: str, sync: bool):
        """Write, then name, the unnamed file `fd`: True, or False when an object had the name
        already; None when it cannot be named (no /proc), for the caller to write otherwise."""
        try:
            if mode & UMASK:
                os.fchmod(fd, mode)
            write_all(fd, data)
            if sync:
                os.fsync(fd)
            faults.point("object:tmp-written")
            try:
                # linkat(AT_SYMLINK_FOLLOW) through /proc names the open file; a dir fd
                # argument is what makes os.link call linkat with that flag
                os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=_any_dir_fd())
            except FileExistsError:
                return False  # there already (the same bytes, by its name)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES):
                    raise
                self._unnamed_ok = False
                return None
        finally:
            os.close(fd)
        if sync:
            fsync_dir(Path(os.path.dirname(target)))
        faults.point("object:renamed")
        return True

    def _insert_small(self, path: str, digest: str) -> bool:
        """Store a small file of a folder whose manifest names it `digest`, unsynced (the
        caller's group commit syncs); whether a new object was written. A file that no
        longer hashes to `digest` changed while it was stored: CacheError, since the
        manifest would name an object that is not there."""
        st, data = _read_small(path, limit=None)
        if hashing.hash_bytes(data) != digest:
            raise CacheError(f"{path} changed while it was being stored; run the command again")
        # (the caller made tmp/ and found no object; one written since is as good)
        # the source's read bits, at least the owner's: a private file stays private
        return self.write_object(digest, data, (st.st_mode & 0o444) | 0o400)

    def new_tmp(self, mode: int) -> tuple[str, int]:
        """(path, fd) of a new file in tmp/ with exactly `mode`, named as the sweep expects."""
        while True:
            tmp = os.path.join(self.tmp, TMP_PREFIX + os.urandom(4).hex())
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                break
            except FileExistsError:
                continue
        if mode & UMASK:
            os.fchmod(fd, mode)
        return tmp, fd

    def object_dir(self, folder: str) -> None:
        """make_dirs of a cache folder written into again and again (an object's or run
        record's `ab/`, tmp/), asked of the filesystem once per process."""
        if folder not in self._object_dirs:
            self.make_dirs(folder)
            self._object_dirs.add(folder)

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

    def _publish_bytes(self, data: bytes, target: Path, sync: bool = True) -> None:
        self.make_dirs(self.tmp)
        self.make_dirs(target.parent)
        atomic_write(target, data, mode=0o444, tmp_dir=self.tmp, what="manifest", sync=sync)

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
            entries = check_manifest(json.loads(data))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise CorruptObject(f"{digest}.dir: {str(exc)[:200]}") from None
        return entries

    def restore(self, meta: Meta, dest: str, hasher: hashing.Hasher | None = None) -> None:
        """Put the cached content of `meta` at `dest`, atomically; raises on a miss."""
        self.write_deferred()
        parent = os.path.dirname(dest) or "."
        os.makedirs(parent, exist_ok=True)
        if not meta.is_dir:
            tmp = self._restore_file(meta.hash, parent, False, meta.mode)
            remove_path(Path(dest))
            os.replace(tmp, dest)
            self._remember(hasher, dest, meta.hash)
            return
        entries = self.read_manifest(meta.hash)
        import tempfile  # (as in fsutil.atomic_write: not at start-up)

        tmpdir = tempfile.mkdtemp(dir=parent, prefix=".tmp-restore-")

        made = {tmpdir}

        stats: dict[str, os.stat_result] = {}  # what the files were made as, for the stat cache

        def one(e) -> os.stat_result | None:
            target = os.path.join(tmpdir, e["path"])
            folder = os.path.dirname(target)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            executable = e.get("exec", False)
            if self.link == "copy" and e["size"] <= SMALL:
                st = self._restore_small(e["hash"], e["size"], target, executable)
                if st is not None:
                    return st
            self._restore_file(e["hash"], folder, executable, name=target)
            return None

        def chunk(part: list) -> list:  # in a forked process: what the parent records
            return [(e["path"], _stat_fields(st)) for e in part if (st := one(e)) is not None]

        workers = can_fork(len(entries), STORE_IN_PROCESSES_AT) if self.link == "copy" else 0
        try:
            if workers:  # the temp folder goes whole if it fails: nothing half-made is kept
                for part in on_processes(chunk, entries, workers, f"restoring {dest}"):
                    stats.update((path, _Stat(*st)) for path, st in part)
            else:

                def kept(e) -> None:
                    if (st := one(e)) is not None:
                        stats[e["path"]] = st

                on_threads(kept, entries, COPY_THREADS)
            os.chmod(tmpdir, 0o777 & ~UMASK)  # mkdtemp made it 0700
            remove_path(Path(dest))
            os.replace(tmpdir, dest)
        except BaseException:
            remove_path(Path(tmpdir))
            raise
        for e in entries:  # a rename of their folder changes neither inode nor times
            self._remember(hasher, os.path.join(dest, e["path"]), e["hash"], stats.get(e["path"]))

    def _remember(self, hasher, path, digest, st=None):
        if hasher is not None and self.link == "copy":
            hasher.stats.record(path, st or os.stat(path), digest)

    def _restore_small(
        self, digest: str, size: int, name: str, executable: bool
    ) -> os.stat_result | None:
        """A verified copy of a small object at the new path `name`, in one read and one
        write; its stat. None: the object's size is not `size` (the general path decides)."""
        obj = self.object_str(digest)
        try:
            fd = os.open(obj, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            raise MissingObject(digest) from None
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise MissingObject(digest)
            if st.st_size != size:
                return None
            data = read_all(fd, size)
        finally:
            os.close(fd)
        if hashing.hash_bytes(data) != digest:
            self.quarantine(Path(obj))
            raise CorruptObject(digest)
        mode = 0o755 if executable else 0o644
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            write_all(out, data)
            if mode & UMASK:
                os.fchmod(out, mode)
            return os.fstat(out)
        finally:
            os.close(out)

    def _restore_file(
        self,
        digest: str,
        folder: str,
        executable: bool,
        mode: int | None = None,
        name: str | None = None,
    ) -> str:
        """A verified copy (or link) of the object in `folder`; returns its temp path.

        A copy gets `mode` (a file out's recorded permission bits), else 0755 or
        0644 by `executable`; a hardlink across filesystems (EXDEV) is a copy.
        `name`: write that new path instead of a temp name (inside a folder being
        restored, which nobody sees before it is renamed into place).
        """
        obj = self.object_path(digest)
        if not obj.is_file():
            raise MissingObject(digest)
        if name is None:
            import tempfile  # (as in fsutil.atomic_write: not at start-up)

            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        else:
            fd, tmp = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name
        try:
            link = self.link
            if link != "copy":
                os.close(fd)
                os.unlink(tmp)
                got, _ = _hash_object(obj, digest)
                try:
                    if link == "hardlink":
                        os.link(obj, tmp)
                    else:
                        os.symlink(obj, tmp)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    link = "copy"  # another filesystem (or links refused): copy instead
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            if link == "copy":
                try:
                    src = open(obj, "rb")
                except PermissionError:  # another member's private object: a miss, not a crash
                    os.close(fd)
                    raise MissingObject(digest) from None
                with os.fdopen(fd, "wb") as dst, src:
                    got, _ = self._copy(src, dst)
                if mode is None:
                    mode = 0o755 if executable else 0o644
                os.chmod(tmp, mode & 0o777)
            if got != digest:
                self.quarantine(obj)
                raise CorruptObject(digest)
            return tmp
        except BaseException:
            _unlink_quiet(tmp)
            raise

    # -- group commit ---------------------------------------------------------
    #
    # A build stores each stage's objects and run record without an fsync per file
    # (4 fsyncs a stage cost more than forking its command) and calls commit()
    # before the lockfile, the only durable thing that names them, is written. A
    # crash before that loses at most unsynced objects and records: no lockfile
    # names them, and a record whose object a crash truncated is caught by the
    # hash check of every restore (the object is quarantined, the stage runs).

    def unsynced(self) -> None:
        """Objects were written into this cache without an fsync (by another Cache object,
        e.g. an executor's): the next commit() must sync."""
        self._unsynced = True

    def defer_writes(self) -> None:
        """From now on, keep each small file stored without an fsync (a build's stage outs)
        in memory, hashed, until write_deferred(): the builder calls it while the next
        stage runs, off the path from one stage to the next. The object is written from
        the very bytes that were hashed, so an out changed since cannot slip in. commit()
        and restore() write them first: no lockfile (nor run record, written after) names
        an object not yet written, and a crash loses only objects nothing durable names."""
        if self._later is None:  # (held from an earlier build on this Cache: kept)
            import threading  # (pool threads store outs while the builder writes)

            self._later, self._later_lock = {}, threading.Lock()

    def write_deferred(self) -> None:
        if not self._later:
            return
        with self._later_lock:
            later, self._later = list(self._later.items()), {}
        for i, (digest, (data, mode)) in enumerate(later):
            try:
                if not os.path.isfile(self.object_str(digest)):
                    self.make_dirs(self.tmp)
                    self._unsynced = True
                    self.write_object(digest, data, mode)  # unsynced: the group commit's
            except BaseException:  # (a full disk): kept, so no commit() passes them by
                with self._later_lock:
                    for key, value in later[i:]:
                        self._later.setdefault(key, value)
                raise

    def commit(self) -> None:
        """One filesystem sync for everything written without an fsync since the last one."""
        self.write_deferred()
        if self._unsynced:
            sync_filesystem(self.objects if self.objects.is_dir() else self.root)
            self._unsynced = False

    # -- run records --------------------------------------------------------

    def read_run(self, key: str) -> dict | None:
        """The outs of a run record, or None when absent or unusable."""
        try:
            doc = json.loads(self.run_path(key).read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        parsed = parse_run_doc(doc, key)
        if parsed is None:
            return None
        stage, outs = parsed
        if self.trust and doc.get("pulled"):
            signed = {p: m.to_record() for p, m in outs.items()}
            if self.trust.check(doc, key, stage, signed) is not None:
                return None  # pulled before trusted keys were set, or not signed by one
        return outs  # the engine checks them against the stage's outs

    def read_run_profile(self, key: str) -> dict | None:
        """The machine profile a run record holds, if any."""
        try:
            profile = json.loads(self.run_path(key).read_bytes()).get("profile")
            return profile if isinstance(profile, dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def write_run(
        self,
        key: str,
        stage: str,
        outs: dict[str, Meta],
        signature: dict | None = None,
        pulled: bool = False,
        profile: dict | None = None,
        sync: bool = True,
    ) -> None:
        """Store a run record; `sync=False` leaves its durability to the group commit."""
        self.write_deferred()  # the objects it may name first
        record = {
            "schema": RUN_SCHEMA,
            "key": key,
            "stage": stage,
            "outs": {p: m.to_record() for p, m in sorted(outs.items())},
        }
        if profile:
            record["profile"] = profile
        if signature is not None:
            record["signature"] = signature
        if pulled:
            record["pulled"] = True
        target = self.run_path(key)
        self.object_dir(str(target.parent))
        self.object_dir(str(self.tmp))
        atomic_write(
            target,
            json.dumps(record, sort_keys=True, indent=1).encode(),
            tmp_dir=self.tmp,
            what="run-record",
            sync=sync,
        )
        if not sync:
            self._unsynced = True

    # -- who is using it ----------------------------------------------------

    @contextmanager
    def using(self, exclusive: bool = False, on_wait=None):
        """Builds hold `cache/lock` shared while they write; gc holds it exclusive.

        So gc never removes an object a running build (of any workspace sharing
        this cache) has just stored but not yet named in a lockfile.
        """
        self.ensure()
        lock = self.root / "lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 if self.shared() else 0o644)
            if self.shared():
                self._share(lock, 0o664 | (self.shared()[0] & 0o006))
        except PermissionError:  # made by another member of the group: flock needs no write
            fd = os.open(lock, os.O_RDONLY)
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
        self.make_dirs(self.quarantine_dir)
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
            if not _HEX2.match(sub) or not folder.is_dir():
                continue  # not reprobuild's: gc must never touch it
            for name in sorted(os.listdir(folder)):
                if not _OBJECT_NAME.match(name):
                    continue
                is_dir = name.endswith(".dir")
                yield folder / name, sub + (name[:-4] if is_dir else name), is_dir

    def iter_runs(self):
        if not self.runs.is_dir():
            return
        for sub in sorted(os.listdir(self.runs)):
            folder = self.runs / sub
            if _HEX2.match(sub) and folder.is_dir():
                for name in sorted(os.listdir(folder)):
                    if re.fullmatch(r"[0-9a-f]{30}", name):
                        yield folder / name, sub + name

    def sweep_tmp(self, max_age: float = TMP_MAX_AGE) -> int:
        """Remove temp files left by killed processes (old enough to be nobody's).

        Only regular files named as reprobuild names its temps: a `--cache-dir`
        pointed at a folder that already had a `tmp/` loses nothing of it.
        """
        swept = 0
        if not self.tmp.is_dir():
            return 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.tmp):
            try:
                if not _OUR_TMP.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
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


_Stat = namedtuple("_Stat", "st_mode st_ino st_size st_mtime_ns st_ctime_ns")  # what is used


def _stat_fields(st) -> tuple:
    """What a forked process sends back of a stat: _Stat's fields."""
    return st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _store_chunk(cache: Cache, files: list[str], known) -> tuple[list, bool]:
    """Cache._store_files in a forked child: (path, stat fields, digest) of each file read,
    and whether any object was written."""
    read, wrote = cache._store_files(files, known, early_sync=False)
    return [(p, _stat_fields(st), d) for p, (st, d) in read.items()], wrote


class _EarlySync:
    """Starts writing back what a long store has written so far, on a thread, while it goes
    on, so that the group commit's sync has only the tail left (an add of 100,000 small
    files waited 0.8 s on it). A failure here is the final sync's to report."""

    def __init__(self, folder: Path | None):
        self.folder = folder  # None: never
        self.thread = None

    def start(self) -> None:
        if self.folder is None or (self.thread is not None and self.thread.is_alive()):
            return
        import threading

        self.thread = threading.Thread(target=self._sync, daemon=True)
        self.thread.start()

    def _sync(self) -> None:
        try:
            sync_filesystem(self.folder)
        except OSError:
            pass

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()


# what open(O_TMPFILE) fails with where the filesystem or kernel lacks it
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
_DIR_FD: list[int] = []


def _any_dir_fd() -> int:
    """One directory fd for the process, opened once: see Cache._link_unnamed."""
    if not _DIR_FD:
        _DIR_FD.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    return _DIR_FD[0]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: os.umask is process-wide, not thread-safe


def _read_small(
    path: str, follow: bool = True, limit: int | None = SMALL, skip=None
) -> tuple[os.stat_result, bytes | None]:
    """(stat, bytes) of a regular file, opened without blocking (a FIFO swapped in cannot
    hang us: NotRegularFile); bytes None when it is larger than `limit` or `skip(path,
    stat)` says it need not be read. `follow=False`: a symlink is an OSError (ELOOP)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags if follow else flags | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise hashing.NotRegularFile(path, st.st_mode)
        if (limit is not None and st.st_size > limit) or (skip and skip(path, st)):
            return st, None
        return st, read_all(fd, st.st_size)
    finally:
        os.close(fd)


def _check_relative(path: str) -> None:
    """A relative path that stays where it is put: no '/' start, '', '.', '..', NUL or '\\'."""
    if (
        not isinstance(path, str)
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise ValueError(f"unsafe path in cache record: {path!r:.200}")


def check_manifest(entries) -> list[dict]:
    """The entries of a folder manifest, or ValueError when one could escape the folder,
    collide with another (`a` and `a/b`), or has a malformed hash or size."""
    if not isinstance(entries, list):
        raise ValueError("a manifest is a list")
    paths = set()
    for e in entries:
        if not isinstance(e, dict):
            raise ValueError("a manifest entry is a mapping")
        _check_relative(e["path"])
        if Meta.from_lock(e) is None or not isinstance(e.get("exec", False), bool):
            raise ValueError(f"bad manifest entry {e!r:.80}")
        if e["path"] in paths:
            raise ValueError(f"{e['path']!r:.200} twice in a manifest")
        paths.add(e["path"])
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise ValueError(f"{'/'.join(parts[:i])!r:.200} is both a file and a folder")
    return entries


def parse_run_doc(doc, key: str) -> tuple[str, dict[str, Meta]] | None:
    """(stage, outs) of a parsed run record for `key`, or None when it is malformed."""
    try:
        if (
            not isinstance(doc, dict)
            or doc.get("schema") != RUN_SCHEMA
            or doc.get("key") != key
            or not isinstance(doc.get("stage"), str)
            or not isinstance(doc.get("outs"), dict)
        ):
            return None
        outs = {}
        for path, d in doc["outs"].items():
            _check_relative(path[:-1] if path.endswith("/") else path)
            meta = Meta.from_record(d)
            if meta is None or path.endswith("/") != meta.is_dir:
                return None
            outs[path] = meta
        return doc["stage"], outs
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


def _hash_object(obj: Path, digest: str):
    """Hash an object to link it; unreadable (another member's private object) is a miss."""
    try:
        return hashing.hash_file_raw(obj)
    except PermissionError:
        raise MissingObject(digest) from None
