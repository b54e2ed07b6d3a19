"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader (or a process killed mid-write) sees either the old file or the new
one, never half of one.
"""

from __future__ import annotations

import os
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
    folder = tmp_dir or path.parent
    folder.mkdir(parents=True, exist_ok=True)
    import tempfile  # here: it imports shutil and random, 4 ms that a no-op build never needs

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + path.name[:40])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        faults.point(f"{what}:tmp-written")
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise
    if sync:
        fsync_dir(path.parent)
    faults.point(f"{what}:renamed")


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


def can_fork(items: int, at_least: int) -> int:
    """How many processes on_processes should use for `items` (0: do not fork): one per
    CPU, up to 4, for `at_least` items or more, and only while this process runs one
    thread (a fork copies no other thread, so it must hold no lock another one does)."""
    if items < at_least or not hasattr(os, "fork"):
        return 0
    import threading

    workers = min(os.cpu_count() or 1, 4)
    return workers if workers > 1 and threading.active_count() == 1 else 0


_FORKED: list = []  # [work, chunks] of the on_processes call under way, for its children


def on_processes(work, items: list, workers: int, what: str) -> list:
    """[work(chunk) for each chunk of `items`], computed in `workers` forked processes,
    in chunks of the list a few per process (a slow part evens out).

    For file work whose cost is Python's per file, which threads share one interpreter
    lock for. `work` (a closure will do) and the items reach the children by the fork;
    only what `work` returns is pickled back. Ctrl-C or an error stops every child at
    once, mid-chunk, so what they write must be safe to lose (unnamed files, a temp
    folder); a child that was killed (the OOM killer) is a CacheError naming `what`.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from .errors import CacheError

    size = -(-len(items) // (workers * 8))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    _FORKED[:] = [work, chunks]
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), initializer=_child)
    try:
        return [f.result() for f in [pool.submit(_forked, i) for i in range(len(chunks))]]
    except BaseException as exc:
        for child in multiprocessing.active_children():
            child.terminate()
        if isinstance(exc, BrokenProcessPool):
            raise CacheError(f"{what}: a process doing it was killed") from None
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED.clear()


def _child() -> None:
    """An on_processes child leaves Ctrl-C to its parent, which stops it (no traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forked(i: int):
    work, chunks = _FORKED
    try:
        return work(chunks[i])
    except Exception as exc:  # one the parent cannot unpickle would break the pool
        import pickle

        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            from .errors import CacheError

            raise CacheError(str(exc)) from None
        raise


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


def _make_writable_and_retry(func, path, _exc):
    os.chmod(os.path.dirname(path), 0o755)
    if os.path.isdir(path):
        os.chmod(path, 0o755)
    func(path)
