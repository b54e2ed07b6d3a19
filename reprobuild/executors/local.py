"""Runs stages as subprocesses on this machine, up to N at once (threads waiting on processes)."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from . import Job, _kill_group, run_job


class LocalExecutor:
    def __init__(self, jobs: int, on_line=None):
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage")
        self.on_line = on_line
        self._procs: dict[str, object] = {}
        self._lock = threading.Lock()
        self.stopping = False

    def submit(self, job: Job) -> Future:
        return self.pool.submit(self._run, job)

    def run_here(self, job: Job) -> Future:
        """submit(), on the calling thread: for a stage with nothing beside it, whose
        result is waited for at once. Ctrl-C reaches terminate() as usual (the builder's
        signal handler runs on this thread between the waits)."""
        fut: Future = Future()
        try:
            fut.set_result(self._run(job))
        except Exception as exc:  # as a pool thread would hand it over
            fut.set_exception(exc)
        return fut

    def _run(self, job: Job):
        def started(proc):
            with self._lock:
                self._procs[job.stage] = proc

        try:
            return run_job(job, self.on_line, started, lambda: self.stopping)
        finally:
            with self._lock:
                self._procs.pop(job.stage, None)

    def terminate(self, kill: bool = False) -> None:
        """Stop every running stage's process group (SIGTERM, or SIGKILL the second time)."""
        self.stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill_group(proc, signal.SIGKILL if kill else signal.SIGTERM)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
