"""Runs stages as subprocesses on this machine, up to N at once.

Each stage runs in its own process group (so an interrupt can stop all of
it), with stdout and stderr merged into its log file; every line is also
handed to `on_line` so the reporter can show it as it comes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from . import Job, JobResult


class LocalExecutor:
    def __init__(self, jobs: int, on_line=None):
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage")
        self.on_line = on_line
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self.stopping = False

    def submit(self, job: Job) -> Future:
        return self.pool.submit(self._run, job)

    def _run(self, job: Job) -> JobResult:
        start = time.monotonic()
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
        with open(job.log_path, "wb") as log:
            for cmd in job.cmds:
                if self.stopping:
                    return JobResult(130, time.monotonic() - start, cmd)
                code = self._run_one(job, cmd, log)
                if code != 0:
                    return JobResult(code, time.monotonic() - start, cmd)
        return JobResult(0, time.monotonic() - start)

    def _run_one(self, job: Job, cmd: str, log) -> int:
        proc = subprocess.Popen(["sh", "-c", cmd], cwd=job.cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with self._lock:
            self._procs[job.stage] = proc
        try:
            for line in proc.stdout:
                log.write(line)
                if self.on_line:
                    self.on_line(job.stage, line.decode(errors="replace").rstrip("\n"))
            return proc.wait()
        finally:
            with self._lock:
                self._procs.pop(job.stage, None)

    def terminate(self, kill: bool = False) -> None:
        """Stop every running stage's process group (SIGTERM, or SIGKILL)."""
        self.stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
