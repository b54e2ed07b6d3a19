"""Runs stages as subprocesses on this machine, up to N at once (threads waiting on processes)."""

from __future__ import annotations

import signal
import threading

from . import Done, Job, _kill_group, run_job


class LocalExecutor:
    def __init__(self, jobs: int, on_line=None, idle=None, cache=None):
        self.jobs = max(1, jobs)
        self.idle = idle  # work for the builder's thread while a stage's process runs
        self.cache = cache  # the build's Cache: what it learns (real paths, folders) is kept
        self.pool = None  # made at the first submit(): a chain runs every stage here
        self.on_line = on_line
        self._procs: dict[str, object] = {}
        # reentrant: Ctrl-C's handler (terminate) may interrupt this thread inside started()
        self._lock = threading.RLock()
        self.stopping = False

    def submit(self, job: Job):
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor  # (and logging: 4 ms)

            self.pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="stage")
        return self.pool.submit(self._run, job)

    def run_here(self, job: Job) -> Done:
        """submit(), on the calling thread: for a stage with nothing beside it, whose
        result is waited for at once. Ctrl-C reaches terminate() as usual (the builder's
        signal handler runs on this thread between the waits)."""
        try:
            return Done(self._run(job, self.idle))
        except Exception as exc:  # as a pool thread would hand it over
            return Done(error=exc)

    def _run(self, job: Job, idle=None):
        """`idle`: on the builder's own thread only (run_here); it calls its own between
        its waits for pool threads."""

        def started(proc):
            with self._lock:
                self._procs[job.stage] = proc
            if idle is not None:
                idle()

        try:
            return run_job(job, self.on_line, started, lambda: self.stopping, self.cache)
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
        if self.pool is not None:
            self.pool.shutdown(wait=True)
