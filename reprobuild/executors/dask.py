"""Runs stages on a Dask distributed cluster (`--executor dask`).

Each stage is one task calling `run_job` on a worker: the commands run there
as subprocesses, and the outs are hashed and stored into the cache there too.
So the workspace and the cache must be on a filesystem every worker sees at
the same path (SPEC §8). The coordinator alone writes the lockfile.

Without `--scheduler` a LocalCluster of worker processes (one thread each)
is started for the build and closed after it. A worker that dies mid-stage
fails that stage cleanly (KilledWorker) after `retries` more attempts
(default 0: a stage that kills its worker will likely kill the next one too).
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Future

from ..errors import UsageError
from . import Job, run_job


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError:
        raise UsageError(
            "the Dask executor needs dask.distributed: pip install 'reprobuild[dask]'"
        ) from None
    return dask, distributed


class DaskExecutor:
    def __init__(self, scheduler: str | None, workers: int, retries: int = 0, on_line=None):
        dask, distributed = _import_distributed()
        self.cluster = None
        # the scheduler gives up on a task after this many worker deaths
        with dask.config.set(
            {"distributed.scheduler.allowed-failures": retries, "distributed.worker.daemon": False}
        ):
            if scheduler:
                try:
                    self.client = distributed.Client(scheduler, timeout="10s")
                except (OSError, TimeoutError) as exc:
                    raise UsageError(
                        f"cannot reach the Dask scheduler at {scheduler}: {exc}"
                    ) from None
            else:
                # a LocalCluster sets PYTHONHASHSEED in this process (for its workers): keys
                # are computed here, from the user's environment, so it is put back
                before = os.environ.get("PYTHONHASHSEED")
                self.cluster = distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=40,
                )
                if before is None:
                    os.environ.pop("PYTHONHASHSEED", None)
                else:
                    os.environ["PYTHONHASHSEED"] = before
                self.client = distributed.Client(self.cluster)
        self._futures: list = []

    def submit(self, job: Job) -> Future:
        result: Future = Future()
        fut = self.client.submit(
            run_job, job, key=f"reprobuild-{job.stage}-{uuid.uuid4().hex[:8]}", pure=False
        )
        self._futures.append(fut)

        def done(f):
            try:
                result.set_result(f.result())
            except BaseException as exc:  # KilledWorker, CancelledError, ...
                result.set_exception(exc)

        fut.add_done_callback(done)
        return result

    def terminate(self, kill: bool = False) -> None:
        """Cancel every task; with a local cluster, stop its workers (and so their stages)."""
        self.client.cancel(self._futures, force=True)
        if self.cluster is not None:
            self.cluster.close(timeout=5)

    def shutdown(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
