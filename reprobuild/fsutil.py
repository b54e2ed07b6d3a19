"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader (or a process killed mid-write) sees either the old file or the new
one, never half of one.
"""

from __future__ import annotations

import itertools
import os
import stat
import sys
from pathlib import Path

from . import faults


def atomic_write(
    path: Path,
    data: bytes,
    mode: int = 0o644,
    tmp_dir: Path | None = None,
    what: str = "file",
    sync: bool = True,
) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one.

    `what` names the write for fault injection (faults.py). `sync=False` keeps
    the atomic rename (a killed process leaves the old file or the new one) but
    leaves the fsyncs to a later group commit (cache.Cache.commit).
    """
    path = Path(path)
    tmp, fd = _new_temp(tmp_dir or path.parent, path.name)
    try:
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
            if hasattr(os, "fchmod"):  # (Windows before Python 3.13 has none)
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):
            os.chmod(tmp, mode)
        faults.point(f"{what}:tmp-written")
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise
    if sync:
        fsync_dir(path.parent)
    faults.point(f"{what}:renamed")


# O_BINARY: on Windows a file opened without it turns each \n written into \r\n
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_NEW_FILE |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _new_temp(folder, name: str) -> tuple[str, int]:
    """(path, fd) of a new private file `.tmp-XXXXXXXX-NAME` in `folder` (made if missing):
    what mkstemp does, without its import (4 ms that a no-op build never needs), its file
    object and a stat of the folder before every write."""
    made = False
    while True:
        tmp = os.path.join(folder, f".tmp-{os.urandom(4).hex()}-{name[:40]}")
        try:
            return tmp, os.open(tmp, _NEW_FILE, 0o600)
        except FileExistsError:
            continue
        except FileNotFoundError:
            if made:
                raise
            os.makedirs(folder, exist_ok=True)
            made = True


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems refuse directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def sync_filesystem(folder: Path) -> None:
    """Group commit: everything written on `folder`'s filesystem reaches the disk, in one
    call (Linux syncfs; elsewhere sync). Used after a batch of writes made without
    per-file fsyncs, before anything that names them is written."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def read_all(fd: int, size: int) -> bytes:
    """Every byte of a regular file whose stat said `size`, in one read when it still
    holds exactly that (a read of a local file is short only at its end); a file that
    shrank or grew meanwhile is read on to its end."""
    data = os.read(fd, size + 1)
    if len(data) != size:
        parts = [data]
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        data = b"".join(parts)
    return data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def on_threads(fn, items: list, threads: int) -> None:
    """fn(item) for every item, on up to `threads` threads each working through a slice.

    For many small file operations: their cost is syscalls, which overlap on threads,
    while a future per item would cost more than the item. The first error (or
    Ctrl-C) stops the rest, each thread between two items, and is raised.
    """
    threads = max(1, min(threads, len(items) // 64 + 1))
    if threads == 1:
        for it in items:
            fn(it)
        return
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def run(part) -> None:
        for it in part:
            if stop.is_set():
                return
            fn(it)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="files")
    try:
        for f in [pool.submit(run, items[i::threads]) for i in range(threads)]:
            f.result()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True)


IDLE_EVERY = 0.05  # seconds on_processes waits for a child's result before idle() again


def can_fork(items: int, at_least: int) -> int:
    """How many processes on_processes should use for `items` (0: do not fork): one per
    CPU this process may use, up to 4, for `at_least` items or more; on Linux (where it
    was measured, and fork is safe), and only while this process runs one thread (a
    fork copies no other thread, so no lock another thread holds can be copied held)."""
    if items < at_least or sys.platform != "linux":
        return 0
    import threading

    workers = min(len(os.sched_getaffinity(0)), 4)
    return workers if workers > 1 and threading.active_count() == 1 else 0


def on_processes(work, items: list, workers: int, what: str, idle=None) -> list:
    """[work(chunk) for each chunk of `items`], computed in `workers` forked processes.

    For file work whose cost is Python's per file, which threads would share one
    interpreter lock for. The items are cut into a few chunks per process (a slow part
    evens out); `work` (a closure will do) and the chunks reach each child by the fork,
    and only what `work` returns is pickled back, through a pipe of its own. An error
    in a child is raised here; Ctrl-C (children ignore it: the parent decides), or an
    error, kills every child at once, mid-chunk, so what they write must be safe to
    lose (unnamed files, a temp folder); a child killed meanwhile (the OOM killer) is a
    CacheError naming `what`. A child dies with its parent (PR_SET_PDEATHSIG): none
    outlives a killed command holding its locks. `idle()`, if given, is called again and
    again while the children work (an early write-back of what they write).
    """
    import pickle
    import selectors
    import signal

    from .errors import CacheError

    if not items:
        return []
    size = -(-len(items) // (workers * 8))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    parent, prctl = os.getpid(), _prctl()
    pids, payloads = {}, {}  # read fd -> pid, -> the bytes it sent so far
    # Ctrl-C waits until each child has set its own handling (it would print a traceback)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        try:
            n = min(workers, len(chunks))
            for w in range(n):
                r, wr = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    mine = [(i, chunks[i]) for i in range(w, len(chunks), n)]
                    _child(work, mine, wr, parent, prctl)
                os.close(wr)
                pids[r], payloads[r] = pid, bytearray()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # (a Ctrl-C meanwhile: raised here)
        results: dict[int, object] = {}
        with selectors.DefaultSelector() as sel:
            for r in pids:
                sel.register(r, selectors.EVENT_READ)
            while sel.get_map():
                ready = sel.select(IDLE_EVERY if idle else None)
                if not ready and idle:
                    idle()
                for key, _ in ready:
                    data = os.read(key.fd, 1 << 20)
                    if data:
                        payloads[key.fd] += data
                        continue
                    sel.unregister(key.fd)
                    status = os.waitpid(pids.pop(key.fd), 0)[1]
                    os.close(key.fd)
                    try:
                        outcome, value = pickle.loads(payloads.pop(key.fd))
                    except Exception:  # nothing, or half a result: it was killed
                        outcome, value = "killed", None
                    if outcome == "error":
                        raise value
                    if outcome != "ok" or status != 0:
                        raise CacheError(f"{what}: a process doing it was killed")
                    results.update(value)
        return [results[i] for i in range(len(chunks))]
    except BaseException:
        _kill_all(pids)
        raise


def _child(work, chunks: list, wr: int, parent: int, prctl) -> None:
    """An on_processes child: [(index, work(chunk))] of its (index, chunk) pairs down
    `wr`, then exit, never returning into the parent's code."""
    import pickle
    import signal

    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's to act on
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler the command installed
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent dies
        if os.getppid() != parent:  # it died before that: go now
            return
        try:
            out = ("ok", [(i, work(c)) for i, c in chunks])
            code = 0
        except Exception as exc:
            try:
                pickle.loads(pickle.dumps(exc))
                out = ("error", exc)
            except Exception:  # one the parent could not rebuild
                from .errors import CacheError

                out = ("error", CacheError(str(exc)))
        data = memoryview(pickle.dumps(out))
        while data:
            data = data[os.write(wr, data) :]
    finally:
        os._exit(code)


def _prctl():
    """libc's prctl (for a child to die with its parent), or None where there is none."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _kill_all(pids: dict) -> None:
    """Kill and reap every child left. Ctrl-C is ignored meanwhile: the command is being
    stopped already, and a second one must not cut this short, nor reach the CLI after
    it reported the first."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for r, pid in pids.items():
            os.waitpid(pid, 0)
            os.close(r)
        pids.clear()
    finally:
        signal.signal(signal.SIGINT, previous)


def unlink_quiet(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_path(path: Path) -> None:
    """Delete a file, link or folder if present (outs before a run, a restore)."""
    import shutil

    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, onerror=_make_writable_and_retry)


class Trash:
    """Outs a stage is about to replace, moved aside (a rename) and deleted while the
    stage runs: freeing a big file's blocks, or a folder's files, then costs the build
    nothing. `folder` is the workspace's `.reprobuild/trash/`; what a killed build left
    there is deleted when the next build first puts something in it. Where a rename
    cannot move a path (another filesystem, or the trash is not a real folder), it is
    deleted at once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._items: list[str] = []
        self._names = itertools.count()
        self._made = False

    def _usable(self) -> bool:
        """The trash and the state folder holding it are real folders, not symlinks (a
        cloned repository could commit `.reprobuild/trash -> ../..`) nor files."""
        for folder in (os.path.dirname(self.folder), str(self.folder)):
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                continue
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is not a folder here
                return False
        return True

    def put(self, path: str) -> None:
        if not self._made:
            if not self._usable():
                remove_path(Path(path))
                return
            os.makedirs(self.folder, exist_ok=True)
            self._made = True
            self.empty(everything=True)  # what a killed build left
        aside = os.path.join(self.folder, f"{os.getpid()}-{next(self._names)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return  # nothing there to replace
        except OSError:
            remove_path(Path(path))
            return
        self._items.append(aside)

    def empty(self, everything: bool = False) -> None:
        """Delete what was put here (safe from several threads: each item is popped once);
        with `everything`, also what a killed build left. Never raises."""
        while self._items:
            try:
                aside = self._items.pop()
            except IndexError:
                break
            _remove_quietly(aside)
        if everything and self._usable():
            try:
                names = os.listdir(self.folder)
            except OSError:  # not there (yet), or unreadable
                names = []
            for name in names:
                _remove_quietly(os.path.join(self.folder, name))


def _remove_quietly(path: str) -> None:
    """Trash that cannot be deleted now (a read-only folder of an out) stays for the next
    build to try again: it fails no build, and it runs beside a stage's process."""
    try:
        remove_path(Path(path))
    except OSError:
        pass


def _make_writable_and_retry(func, path, _exc):
    os.chmod(os.path.dirname(path), 0o755)
    if os.path.isdir(path):
        os.chmod(path, 0o755)
    func(path)
