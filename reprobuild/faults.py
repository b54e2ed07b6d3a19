"""Fault points, for the crash-safety tests only.

`REPROBUILD_FAULT=POINT` makes reprobuild kill itself (SIGKILL, as a power
cut or the OOM killer would) when it reaches POINT; `REPROBUILD_FAULT=
enospc@POINT` raises "No space left on device" there instead, and
`sigint@POINT` sends SIGINT to its whole process group, as Ctrl-C in a
terminal does. Points are named WHAT:STEP, e.g. `lockfile:tmp-written`, `lockfile:renamed`,
`object:tmp-written`, `run-record:renamed`, `statcache:tmp-written`.
Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal

_FAULT = os.environ.get("REPROBUILD_FAULT", "")


def point(name: str) -> None:
    if not _FAULT:
        return
    if _FAULT == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if _FAULT == "enospc@" + name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    if _FAULT == "sigint@" + name:
        os.killpg(os.getpgrp(), signal.SIGINT)
