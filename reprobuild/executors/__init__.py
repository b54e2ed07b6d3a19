"""Executors run a stage's commands somewhere and report how it went.

An executor takes a Job and returns a concurrent.futures.Future of a
JobResult. Whatever the executor, the work is `run_job`: run the commands
(each through `sh -c`, in order, in the stage's own process group, output
to its log file), check that every declared out exists, then hash the outs
and store them in the cache, so that hashing a large output happens where it
was made (a Dask worker, or a local thread in parallel with other stages).
A stage with a hermetic environment (envs.py) first finds or builds it there,
and runs with it first on PATH; the machine profile (machine.py) is taken
there too, since it describes the machine that ran the stage.
The coordinator (engine.py) alone writes run records and the lockfile.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from ..hashing import Meta


@dataclass(frozen=True)
class OutSpec:
    path: str  # absolute
    cache: bool = True


@dataclass(frozen=True)
class Job:
    stage: str
    cmds: tuple[str, ...]
    cwd: str
    log_path: str
    cpus: int = 1
    outs: tuple[OutSpec, ...] = ()
    cache_root: str = ""
    link: str = "copy"
    env: object = None  # envs.EnvRequest: run in that uv-built environment
    workspace: str = ""  # its root: nothing a symlink leads to outside it enters the cache
    # the stage's `env.vars` as its key recorded them (None: unset); wherever it runs (a Dask
    # worker has its own environment) the command sees exactly these
    variables: tuple[tuple[str, str | None], ...] = ()
    # False: outs are stored without fsyncs, and the coordinator's group commit (one sync
    # before the lockfile is written) makes them durable; only where it shares this
    # machine's filesystem (a local executor), so a remote Dask worker syncs its own
    durable: bool = True
    state_dir: str = ""  # the workspace's .reprobuild/: keeps the machine probe's answer


@dataclass(frozen=True)
class JobResult:
    returncode: int
    seconds: float
    failed_cmd: str | None = None
    missing_out: str | None = None
    outs: dict = field(default_factory=dict)  # absolute path -> Meta
    stats: list = field(default_factory=list)  # stat-cache entries learnt while storing
    error: str | None = None  # the stage could not start (its environment could not be built)
    profile: dict | None = None  # machine.profile() of where it ran
    refused: str | None = None  # why an out could not be stored (a FIFO, a symlink out)


class Done:
    """What run_here returns: a job already finished, read as a Future is (`result()`)."""

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def run_job(job: Job, on_line=None, started=None, should_stop=None, cache=None) -> JobResult:
    """Run, check and store one stage. `started(proc)` lets the caller terminate it;
    `cache`: the build's own Cache when it runs in the builder's process."""
    start = time.monotonic()
    if not os.path.isdir(os.path.dirname(job.log_path)):
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
    environ = None
    with open(job.log_path, "wb") as log:
        if job.env is not None:
            from .. import envs

            def say(line: str) -> None:
                log.write(line.encode() + b"\n")
                log.flush()
                if on_line:
                    on_line(job.stage, line)

            try:
                environ = envs.activate(envs.ensure(job.env, say))
            except envs.EnvError as exc:
                return JobResult(1, time.monotonic() - start, error=str(exc))
        if job.variables:
            environ = dict(os.environ if environ is None else environ)
            for name, value in job.variables:
                if value is None:
                    environ.pop(name, None)
                else:
                    environ[name] = value
        for cmd in job.cmds:
            if should_stop and should_stop():
                return JobResult(130, time.monotonic() - start, cmd)
            code = _run_one(job, cmd, log, on_line, started, environ)
            if code != 0:
                return JobResult(code, time.monotonic() - start, cmd)
    for out in job.outs:
        if not os.path.lexists(out.path):
            return JobResult(0, time.monotonic() - start, missing_out=out.path)
    from ..cache import UnsafeOut
    from ..hashing import NotRegularFile
    from ..machine import profile

    try:
        outs, stats = _store(job, cache)
    except (UnsafeOut, NotRegularFile) as exc:
        return JobResult(0, time.monotonic() - start, refused=str(exc))
    return JobResult(
        0,
        time.monotonic() - start,
        outs=outs,
        stats=stats,
        profile=profile(environ, job.state_dir or None),
    )


def _run_one(job: Job, cmd: str, log, on_line, started, environ=None) -> int:
    if on_line is None:  # nobody reads it live: the command writes its log itself
        log.flush()
        here = os.getcwd()  # a real path: equal strings need no realpath's lstat per folder
        if job.cwd == here or os.path.realpath(job.cwd) == here:
            return _spawn(cmd, log, started, environ)
    proc = subprocess.Popen(
        ["sh", "-c", cmd],
        cwd=job.cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if on_line else log.fileno(),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if started:
            started(proc)
        for line in proc.stdout or ():
            log.write(line)
            on_line(job.stage, line.decode(errors="replace").rstrip("\n"))
        return proc.wait()
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        raise


class _Spawned:
    """What `started` and _kill_group need of a process: its pid (its group's id too)."""

    def __init__(self, pid: int):
        self.pid = pid


def _spawn(cmd: str, log, started, environ=None) -> int:
    """`sh -c cmd` in its own session, stdin from /dev/null, stdout and stderr into the
    log: what Popen does for _run_one, by posix_spawn (a stage's fork and exec cost a
    third less). Only in the builder's own folder (posix_spawn cannot chdir here).
    Popen closes inherited descriptors; Python opens every file non-inheritable, so
    there are none; and the signals Python ignores are reset for the command."""
    env = os.environ if environ is None else environ
    pid = os.posix_spawn(
        _shell(tuple(os.get_exec_path(env))),
        ["sh", "-c", cmd],
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ],
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )
    try:
        if started:
            started(_Spawned(pid))
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except BaseException:
        _kill_group(_Spawned(pid), signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


@functools.cache
def _shell(path: tuple[str, ...]) -> str:
    """The `sh` a search of `path` finds, as Popen's would."""
    for folder in path:
        candidate = os.path.join(folder, "sh")
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return "/bin/sh"


def _kill_group(proc, sig) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _store(job: Job, cache=None) -> tuple[dict[str, Meta], list]:
    from ..cache import Cache
    from ..hashing import Hasher, StatCache

    hasher = Hasher(StatCache(None))
    if cache is None or str(cache.root) != job.cache_root or cache.link != job.link:
        cache = Cache(job.cache_root, link=job.link)
    outs = {}
    for out in job.outs:
        outs[out.path] = (
            cache.insert(out.path, hasher, job.workspace or None, sync=job.durable)
            if out.cache
            else hasher.path(out.path)
        )
    stats = [(path, *entry) for path, entry in hasher.stats.entries.items()]
    return outs, stats
