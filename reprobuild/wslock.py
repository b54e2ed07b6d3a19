"""One build at a time per workspace: an advisory lock on `.reprobuild/lock`.

The file holds the holder's pid (for the message a waiting build shows). The
lock is `flock`, so it is released by the kernel when the holder dies, even
by kill -9: a stale lock cannot outlive its process.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import WorkspaceBusy
from .fsutil import atomic_write


def ensure_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, b"*\n")


@contextmanager
def workspace_lock(state_dir: Path, wait: bool = True, on_wait=None):
    ensure_state_dir(state_dir)
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise WorkspaceBusy(
                    f"another reprobuild (pid {holder}) is building this workspace "
                    f"({path}); try again when it is done"
                ) from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "?"
    except OSError:  # pragma: no cover
        return "?"
