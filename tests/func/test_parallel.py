"""`-j N`, `--executor dask`, `-k` under -j, and interrupts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import stages_run

# Four independent stages that log their start and end, one that needs all of
# them, and one independent of everything.
PIPE = {
    "reprobuild.yaml": """\
        stages:
          work:
            foreach: [1, 2, 3, 4]
            do:
              cmd: python log.py start work@${item} && sleep ${pause} && echo ${item} > 'out/${item}.txt' && python log.py end work@${item}
              outs: ['out/${item}.txt']
          gather:
            cmd: python log.py start gather && cat out/1.txt out/2.txt out/3.txt out/4.txt > all.txt && python log.py end gather
            deps: [out/]
            outs: [all.txt]
          alone:
            cmd: echo alone > alone.txt
            outs: [alone.txt]
        """,
    "params.yaml": "pause: 0.6\n",
    # times go to a file that is no dep or out: a side channel for the test
    "log.py": """\
        import sys, time
        with open("times.log", "a") as f:
            f.write(f"{sys.argv[1]} {sys.argv[2]} {time.time()}\\n")
        """,
}


def times(ws):
    events = {}
    for line in ws.read("times.log").splitlines():
        kind, name, t = line.split()
        events[(kind, name)] = float(t)
    return events


def test_parallel_respects_order_and_overlaps(ws):
    ws.write(PIPE)
    r = ws.run("build", "-j", "4")
    assert r.code == 0, r.err
    t = times(ws)
    work_ends = [t[("end", f"work@{i}")] for i in range(1, 5)]
    work_starts = [t[("start", f"work@{i}")] for i in range(1, 5)]
    assert t[("start", "gather")] >= max(work_ends)  # nothing before its upstream ended
    assert max(work_starts) < min(work_ends)  # the four ran at once


def test_same_lockfile_for_j1_j4_and_dask(ws):
    pytest.importorskip("distributed")
    ws.write({**PIPE, "params.yaml": "pause: 0.1\n"})
    locks = []
    for args in (["-j", "1"], ["-j", "4"], ["-j", "2", "--executor", "dask"]):
        for p in ("reprobuild.lock", "all.txt", "alone.txt"):
            if (ws.root / p).exists():
                os.unlink(ws.root / p)
        import shutil

        shutil.rmtree(ws.root / "out", ignore_errors=True)
        shutil.rmtree(ws.root / "cache", ignore_errors=True)
        r = ws.run("build", *args)
        assert r.code == 0, r.err
        assert len(stages_run(r)) == 6
        locks.append(ws.read("reprobuild.lock"))
    assert locks[0] == locks[1] == locks[2]


def test_keep_going_under_parallel(ws):
    ws.write(PIPE)
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "echo ${item} > 'out/${item}.txt'",
                "test ${item} != 3 && echo ${item} > 'out/${item}.txt'",
            )
        }
    )
    r = ws.run("build", "-j", "2", "-k")
    assert r.code == 1
    ran = stages_run(r)
    assert "alone" in ran and "gather" not in ran
    assert "failed" in r.err and "work@3" in r.err
    assert "not run" in r.out and "gather" in r.out
    for i in (1, 2, 4):
        assert f"work@{i}:" in ws.read("reprobuild.lock")


@pytest.mark.parametrize("quiet", [[], ["-q"]])  # -q: commands are spawned writing their logs
def test_interrupt_stops_cleanly_and_rebuild_finishes(ws, quiet):
    ws.write(PIPE)
    ws.write(
        {
            "params.yaml": "pause: 29.71\n",
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "stages:\n",
                """\
stages:
  quick:
    cmd: echo quick > quick.txt
    outs: [quick.txt]
""",
            ),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "build", "-j", "2", *quiet, "quick", "work"],
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while not ((ws.root / "times.log").exists() and ws.read("times.log").count("start") >= 1):
        assert time.time() < deadline, "stages never started"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in out + err
    lock = ws.read("reprobuild.lock") if (ws.root / "reprobuild.lock").exists() else ""
    # what finished is recorded; nothing half-made is in the cache
    assert list((ws.root / "cache/tmp").iterdir()) == []
    assert "quick:" in lock and "work@1:" not in lock
    sleepers = subprocess.run(["pgrep", "-f", "sleep 29.71"], capture_output=True, text=True).stdout
    assert sleepers.strip() == ""
    ws.write({"params.yaml": "pause: 0.1\n"})
    r = ws.run("build", "-j", "2")
    assert r.code == 0, r.err
    assert ws.run("status", "--check").code == 0


def test_killed_dask_worker_fails_the_stage_cleanly(ws):
    pytest.importorskip("distributed")
    ws.write(
        {
            "reprobuild.yaml": """\
        stages:
          killer:
            cmd: kill -9 $PPID; sleep 5; echo never > k.txt
            outs: [k.txt]
          fine:
            cmd: echo ok > ok.txt
            outs: [ok.txt]
        """
        }
    )
    start = time.time()
    r = ws.run_process("build", "--executor", "dask", "-j", "2", "-k", timeout=120)
    assert r.returncode == 1, r.stderr
    assert "killer" in r.stderr and ("KilledWorker" in r.stderr or "could not run" in r.stderr)
    assert (ws.root / "ok.txt").read_text() == "ok\n"
    assert time.time() - start < 110


def test_resources_cpus_count_against_jobs(ws):
    ws.write({**PIPE, "params.yaml": "pause: 0.4\n"})
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "      outs: ['out/${item}.txt']",
                "      outs: ['out/${item}.txt']\n      resources: {cpus: 2}",
            )
        }
    )
    assert ws.run("build", "-j", "2").code == 0
    t = times(ws)
    spans = sorted((t[("start", f"work@{i}")], t[("end", f"work@{i}")]) for i in range(1, 5))
    assert all(
        prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False)
    )  # one at a time


def test_failed_stage_log_tail_shown_at_the_end(ws):
    ws.write(
        {
            "reprobuild.yaml": """\
        stages:
          bad:
            cmd: echo "the reason it broke"; exit 4
            outs: [b.txt]
          good:
            cmd: echo fine > g.txt
            outs: [g.txt]
        """
        }
    )
    r = ws.run("build", "-j", "2", "-k")
    assert r.code == 1
    assert "command exited with 4" in r.err
    assert (
        "last lines of bad's log" in r.err and "the reason it broke" in r.err.split("last lines")[1]
    )
    assert (ws.root / ".reprobuild/logs/bad.log").read_text() == "the reason it broke\n"


def test_external_dask_scheduler(ws):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        ws.write(
            {"reprobuild.yaml": "stages:\n  s:\n    cmd: echo hi > s.txt\n    outs: [s.txt]\n"}
        )
        r = ws.run_process(
            "build", "--executor", "dask", "--scheduler", cluster.scheduler_address, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert (ws.root / "s.txt").read_text() == "hi\n"
        bad = ws.run_process(
            "build", "--force", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", timeout=60
        )
        assert bad.returncode == 2 and "cannot reach the Dask scheduler" in bad.stderr


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_second_interrupt_kills_a_stage_that_ignores_sigterm(ws, quiet):
    ws.write(
        {
            "reprobuild.yaml": """\
        stages:
          stubborn:
            cmd: trap '' TERM; echo started > started.txt; sleep 28.93; echo late > s.txt
            outs: [s.txt]
        """
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "build", *quiet],
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while not (ws.root / "started.txt").exists():
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    assert proc.poll() is None  # SIGTERM was ignored: still waiting for the stage
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert subprocess.run(["pgrep", "-f", "sleep 28.93"], capture_output=True).stdout == b""


def test_dask_runs_a_stage_with_the_variables_its_key_records(ws, monkeypatch):
    """A LocalCluster sets PYTHONHASHSEED for its workers (and in this process): a stage that
    lists it gets the same key and sees the same value under both executors."""
    pytest.importorskip("distributed")
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.setenv("SEEN_BY_STAGE", "from the shell")
    ws.write(
        {
            "reprobuild.yaml": """\
                env: {vars: [PYTHONHASHSEED, SEEN_BY_STAGE]}
                stages:
                  s:
                    cmd: echo "\\${PYTHONHASHSEED-unset} $SEEN_BY_STAGE" > seed.txt
                    outs: [seed.txt]
                """
        }
    )
    locks = []
    for args in (["-j", "1"], ["--executor", "dask"]):
        for p in ("reprobuild.lock", "seed.txt"):
            (ws.root / p).unlink(missing_ok=True)
        shutil.rmtree(ws.root / "cache", ignore_errors=True)  # both really run the stage
        r = ws.run("build", *args)
        assert r.code == 0 and stages_run(r) == ["s"], r.err
        assert ws.read("seed.txt") == "unset from the shell\n"
        locks.append(ws.read("reprobuild.lock"))
        monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert locks[0] == locks[1]


def test_a_stage_with_nothing_beside_it_runs_on_the_builders_thread(ws, monkeypatch):
    """A chain's stages are each alone: run where the builder waits for them, not handed to
    a pool thread and back. Stages that can overlap still go to the pool."""
    from reprobuild.executors.local import LocalExecutor

    ws.write(
        {
            "reprobuild.yaml": """\
        stages:
          a: {cmd: echo a > a.txt, outs: [a.txt]}
          b: {cmd: cat a.txt > b.txt, deps: [a.txt], outs: [b.txt]}
          c: {cmd: cat b.txt > c.txt, deps: [b.txt], outs: [c.txt]}
        """
        }
    )
    real_submit, pooled = LocalExecutor.submit, []

    def submit(self, job):
        pooled.append(job.stage)
        return real_submit(self, job)

    monkeypatch.setattr(LocalExecutor, "submit", submit)
    r = ws.run("build", "-j", "2")
    assert r.code == 0 and stages_run(r) == ["a", "b", "c"], r.err
    assert pooled == [] and ws.read("c.txt") == "a\n"
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml")
            + "  d: {cmd: echo d > d.txt, outs: [d.txt]}\n"
        }
    )
    ws.write({"a.txt": "changed\n"})
    assert ws.run("build", "-j", "2", "--force").code == 0
    assert pooled  # a and d were ready together
    pooled.clear()
    ws.write({"a.txt": "again\n"})
    assert ws.run("build", "-j", "1", "--force").code == 0
    assert pooled == []  # at -j 1 each stage runs alone, whatever else is ready


def test_ctrl_c_inside_a_stages_start_does_not_deadlock():
    """Ctrl-C's handler (terminate) runs on the builder's thread, which may be inside
    started(), holding the executor's lock, when the signal arrives."""
    import threading

    from reprobuild.executors.local import LocalExecutor

    executor, done = LocalExecutor(1), threading.Event()

    def interrupted_inside_started():
        with executor._lock:
            executor.terminate()
        done.set()

    threading.Thread(target=interrupted_inside_started, daemon=True).start()
    assert done.wait(5)
    assert executor.stopping
