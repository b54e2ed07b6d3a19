"""Executors run a stage's commands somewhere and report how it went.

An executor takes a Job and returns a concurrent.futures.Future of a
JobResult. The engine does everything else (hashing, cache, lockfile), so an
executor is small: `local` runs subprocesses here, `dask` on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    stage: str
    cmds: tuple[str, ...]   # each runs through `sh -c`, in order, stopping at the first failure
    cwd: str
    log_path: str
    cpus: int = 1


@dataclass(frozen=True)
class JobResult:
    returncode: int
    seconds: float
    failed_cmd: str | None = None
