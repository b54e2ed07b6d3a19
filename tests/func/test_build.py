"""`build` and `status` through the CLI, in temporary git repositories."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import stages_restored, stages_run

PIPELINE = {
    "reprobuild.yaml": """\
        env:
          vars: [GREETING_STYLE]
        stages:
          prepare:
            cmd: python prepare.py data/raw.txt data/clean.txt --scale ${prepare.scale}
            deps: [data/raw.txt]
            outs: [data/clean.txt]
          train:
            cmd: python train.py data/clean.txt models/model.txt
            deps: [data/clean.txt]
            params: [train]
            outs: [models/model.txt]
          report:
            cmd: cat models/model.txt > report.txt
            deps: [models/model.txt]
            outs: [report.txt]
          other:
            cmd: echo ${other.word} > other.txt
            outs: [other.txt]
        """,
    "params.yaml": """\
        prepare: {scale: 2}
        train: {depth: 3, lr: 0.1}
        other: {word: hi}
        unused: 1
        """,
    "helpers.py": "def scale(x, k):\n    return x * k\n",
    "prepare.py": """\
        import sys
        from helpers import scale
        src, dst, _, k = sys.argv[1:]
        nums = [int(x) for x in open(src).read().split()]
        open(dst, "w").write(" ".join(str(scale(n, int(k))) for n in nums) + "\\n")
        """,
    "train.py": """\
        import sys
        src, dst = sys.argv[1:]
        open(dst, "w").write(str(sum(int(x) for x in open(src).read().split())) + "\\n")
        """,
    "data/raw.txt": "1 2 3\n",
}


@pytest.fixture
def pipe(ws):
    ws.write(PIPELINE)
    ws.commit_all("pipeline")
    return ws


def test_first_build_runs_all_then_noop(pipe):
    r = pipe.run("build")
    assert r.code == 0, r.err
    assert sorted(stages_run(r)) == ["other", "prepare", "report", "train"]
    assert pipe.read("report.txt") == "12\n"
    again = pipe.run("build")
    assert again.code == 0 and stages_run(again) == [] and stages_restored(again) == []
    assert "4 up to date" in again.out
    status = pipe.run("status", "--check")
    assert status.code == 0 and "4 stages up to date" in status.out


def test_dep_change_reruns_downstream_with_reasons(pipe):
    pipe.run("build")
    pipe.write({"data/raw.txt": "1 2 4\n"})
    st = pipe.run("status", "--check")
    assert st.code == 1
    assert "dep changed: data/raw.txt" in st.out and "upstream: prepare" in st.out
    r = pipe.run("build")
    assert stages_run(r) == ["prepare", "train", "report"]
    assert pipe.read("report.txt") == "14\n"


def test_imported_helper_change_reruns_stage(pipe):
    pipe.run("build")
    pipe.write({"helpers.py": "def scale(x, k):\n    return x * k + 1\n"})
    st = pipe.run("status")
    assert "code changed: helpers.py" in st.out
    assert stages_run(pipe.run("build")) == ["prepare", "train", "report"]


def test_cosmetic_code_change_is_cut_off_early(pipe):
    """prepare reruns; its output is byte-identical, so train and report stay skipped."""
    pipe.run("build")
    pipe.write({"helpers.py": "def scale(x, k):\n    # same result\n    return x * k\n"})
    assert stages_run(pipe.run("build")) == ["prepare"]


def test_param_change_reruns_only_its_stage(pipe):
    pipe.run("build")
    pipe.write(
        {
            "params.yaml": "prepare: {scale: 2}\ntrain: {depth: 4, lr: 0.1}\nother: {word: hi}\nunused: 1\n"
        }
    )
    st = pipe.run("status", "--json")
    import json

    doc = json.loads(st.out)
    assert doc["stale"] == ["train", "report"]
    assert doc["stages"]["train"]["reasons"] == ["param changed: train.depth 3 -> 4"]
    assert stages_run(pipe.run("build")) == ["train"]  # same sum: report cut off


def test_templated_param_is_tracked(pipe):
    pipe.run("build")
    pipe.write(
        {
            "params.yaml": "prepare: {scale: 3}\ntrain: {depth: 3, lr: 0.1}\nother: {word: hi}\nunused: 1\n"
        }
    )
    st = pipe.run("status")
    assert "param changed: prepare.scale 2 -> 3" in st.out
    assert stages_run(pipe.run("build")) == ["prepare", "train", "report"]
    assert pipe.read("report.txt") == "18\n"


def test_unused_param_changes_nothing(pipe):
    pipe.run("build")
    pipe.write(
        {
            "params.yaml": "prepare: {scale: 2}\ntrain: {depth: 3, lr: 0.1}\nother: {word: hi}\nunused: 2\n"
        }
    )
    assert pipe.run("status", "--check").code == 0
    assert stages_run(pipe.run("build")) == []


def test_env_var_change_reruns_everything(pipe, monkeypatch):
    pipe.run("build")
    monkeypatch.setenv("GREETING_STYLE", "loud")
    st = pipe.run("status")
    assert "env changed: GREETING_STYLE None -> loud" in st.out
    assert sorted(stages_run(pipe.run("build"))) == ["other", "prepare", "report", "train"]


def test_revert_restores_from_run_cache_without_running(pipe):
    pipe.run("build")
    pipe.write({"data/raw.txt": "5 5\n"})
    pipe.run("build")
    assert pipe.read("report.txt") == "20\n"
    pipe.write({"data/raw.txt": "1 2 3\n"})
    st = pipe.run("build", "--dry-run")
    assert "restore" in st.out
    r = pipe.run("build")
    assert stages_run(r) == []
    assert stages_restored(r) == ["prepare", "train", "report"]
    assert pipe.read("report.txt") == "12\n"
    # --force applies to the named stage only; upstream is up to date and stays so
    assert stages_run(pipe.run("build", "--no-run-cache", "--force", "report")) == ["report"]
    assert stages_run(pipe.run("build", "--force")) == ["prepare", "train", "report", "other"]


def test_touch_without_change_rebuilds_nothing(pipe):
    pipe.run("build")
    future = time.time() + 5
    os.utime(pipe.root / "data/raw.txt", (future, future))
    assert stages_run(pipe.run("build")) == []


def test_dry_run_changes_nothing_on_disk(pipe):
    def snapshot():
        return sorted(
            (str(p.relative_to(pipe.root)), p.stat().st_mtime_ns)
            for p in pipe.root.rglob("*")
            if ".git" not in p.parts
        )

    before = snapshot()
    r = pipe.run("build", "-n")
    assert r.code == 0 and "new stage" in r.out
    assert snapshot() == before


def test_output_modified_or_missing_is_stale(pipe):
    pipe.run("build")
    pipe.write({"models/model.txt": "tampered\n"})
    (pipe.root / "other.txt").unlink()
    st = pipe.run("status")
    assert "out modified: models/model.txt" in st.out and "out missing: other.txt" in st.out
    r = pipe.run("build")
    assert sorted(stages_restored(r)) == ["other", "train"]
    assert pipe.read("models/model.txt") == "12\n"


def test_targets_select_upstream_only(pipe):
    r = pipe.run("build", "train")
    assert stages_run(r) == ["prepare", "train"]
    r = pipe.run("build", "report.txt")
    assert stages_run(r) == ["report"]


def test_failure_keeps_lock_entry_and_keep_going(pipe):
    pipe.run("build")
    lock_before = pipe.read("reprobuild.lock")
    pipe.write(
        {
            "train.py": "import sys\nsys.exit(3)\n",
            "params.yaml": "prepare: {scale: 2}\ntrain: {depth: 3, lr: 0.1}\nother: {word: bye}\nunused: 1\n",
        }
    )
    r = pipe.run("build")
    assert r.code == 1 and "command exited with 3" in r.err
    assert "other" not in stages_run(r)  # stopped at the first failure (file order: other is last)
    assert "train:" in pipe.read("reprobuild.lock")
    r = pipe.run("build", "-k")
    assert r.code == 1 and "other" in stages_run(r) and "report" not in stages_run(r)
    lock = pipe.read("reprobuild.lock")
    train_before = lock_before.split("  train:")[1]
    assert lock.split("  train:")[1] == train_before  # unchanged entry for the failed stage
    assert pipe.run("status", "--check").code == 1


def test_missing_out_after_run_fails(pipe):
    pipe.write({"reprobuild.yaml": "stages:\n  s:\n    cmd: 'true'\n    outs: [never.txt]\n"})
    r = pipe.run("build")
    assert r.code == 1 and "out missing after run: never.txt" in r.err
    assert not (pipe.root / "reprobuild.lock").exists() or "s:" not in pipe.read("reprobuild.lock")


def test_from_scratch_rebuild_gives_byte_identical_lockfile(pipe):
    pipe.run("build")
    first = pipe.read("reprobuild.lock")
    import shutil

    for p in ("reprobuild.lock", "report.txt", "other.txt"):
        (pipe.root / p).unlink()
    shutil.rmtree(pipe.root / "models")
    shutil.rmtree(pipe.root / "cache")
    (pipe.root / "data/clean.txt").unlink()
    r = pipe.run("build")
    assert len(stages_run(r)) == 4
    assert pipe.read("reprobuild.lock") == first
    assert str(pipe.root) not in first


def test_params_with_shell_syntax_reach_command_as_one_word(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: printf '%s\\n' ${word} > out.txt\n    outs: [out.txt]\n",
            "params.yaml": "word: \"a b; touch pwned $(id) `x` 'q'\"\n",
        }
    )
    assert ws.run("build").code == 0
    assert ws.read("out.txt") == "a b; touch pwned $(id) `x` 'q'\n"
    assert not (ws.root / "pwned").exists()


def test_foreach_and_matrix_expand(ws):
    ws.write(
        {
            "reprobuild.yaml": """\
            stages:
              train:
                foreach: [a, b]
                do:
                  cmd: echo ${item} > out/${item}.txt
                  outs: ['out/${item}.txt']
              grid:
                matrix: {m: [x, y], s: [1, 2]}
                do:
                  cmd: echo ${m} ${s} > grid/${m}-${s}.txt
                  outs: ['grid/${m}-${s}.txt']
              per:
                foreach: {small: 1, big: 9}
                do:
                  cmd: echo ${key} ${item} > per/${key}.txt
                  outs: ['per/${key}.txt']
            """,
        }
    )
    r = ws.run("build")
    assert r.code == 0, r.err
    assert stages_run(r) == [
        "train@a",
        "train@b",
        "grid@x-1",
        "grid@x-2",
        "grid@y-1",
        "grid@y-2",
        "per@small",
        "per@big",
    ]
    assert ws.read("grid/y-2.txt") == "y 2\n" and ws.read("per/big.txt") == "big 9\n"
    assert stages_run(ws.run("build", "train")) == []


def test_second_build_waits_or_fails_with_no_wait(pipe):
    pipe.write(
        {
            "reprobuild.yaml": "stages:\n  slow:\n    cmd: sleep 3 && echo x > x.txt\n    outs: [x.txt]\n"
        }
    )
    import subprocess
    import sys

    first = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "build"],
        cwd=pipe.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 10
    while (
        not (pipe.root / ".reprobuild/lock").exists()
        or not (pipe.root / ".reprobuild/logs").exists()
    ):
        assert time.time() < deadline
        time.sleep(0.05)
    busy = pipe.run_process("build", "--no-wait")
    assert busy.returncode == 2
    assert f"pid {first.pid}" in busy.stderr and "error:" in busy.stderr
    waited = pipe.run_process("build")
    assert waited.returncode == 0 and "waiting for another reprobuild" in waited.stderr
    assert first.wait(timeout=30) == 0


@pytest.mark.parametrize("quiet", [False, True])
def test_a_stage_output_reaches_its_log_and_a_failure_shows_its_tail(ws, quiet):
    """Shown live, or (quiet) written by the command straight into its log file."""
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  talk:
                    cmd:
                      - echo first line; echo to stderr >&2
                      - echo second line; exit 3
                """
        }
    )
    r = ws.run("build", *(["-q"] if quiet else []))
    assert r.code != 0
    log = (ws.root / ".reprobuild/logs/talk.log").read_text()
    assert log.splitlines() == ["first line", "to stderr", "second line"]
    assert "second line" in r.err
    assert ("first line" in r.out) is not quiet


@pytest.mark.parametrize("quiet", [False, True])
def test_a_command_gets_default_sigpipe(ws, quiet):
    """Python ignores SIGPIPE; a stage's shell must not inherit that (`yes | head` would
    then end in 'Broken pipe' errors instead of a quiet stop)."""
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  pipe:
                    cmd: yes | head -n 2 > out.txt; yes | head -n 1
                    outs: [out.txt]
                """
        }
    )
    r = ws.run("build", *(["-q"] if quiet else []))
    assert r.code == 0, r.err
    log = (ws.root / ".reprobuild/logs/pipe.log").read_text()
    assert "Broken pipe" not in log and log.splitlines() == ["y"]


WAIT_FOR_TRASH = """\
import os, sys, time
trash = ".reprobuild/trash"
deadline = time.time() + 10
while os.path.isdir(trash) and os.listdir(trash) and time.time() < deadline:
    time.sleep(0.01)
left = len(os.listdir(trash)) if os.path.isdir(trash) else -1
os.makedirs("big", exist_ok=True)
for i in range(50):
    open(f"big/{i}.txt", "w").write(f"{i} {sys.argv[1]}\\n")
open("seen.txt", "w").write(f"{left}\\n")
"""


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_replaced_outs_are_deleted_while_the_stage_runs(ws, executor):
    if executor == "dask":
        pytest.importorskip("distributed")
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  make:
                    cmd: python make.py ${v}
                    deps: [make.py]
                    outs: [big/, seen.txt]
                """,
            "params.yaml": "v: 1\n",
            "make.py": WAIT_FOR_TRASH,
        }
    )
    assert stages_run(ws.run("build")) == ["make"]
    ws.write({"params.yaml": "v: 2\n"})
    r = ws.run("build", "--executor", executor)
    assert stages_run(r) == ["make"], r.err
    # the old big/ and seen.txt were moved aside, then deleted while the command ran
    assert (ws.root / "seen.txt").read_text() == "0\n"
    assert (ws.root / "big/0.txt").read_text() == "0 2\n"
    assert os.listdir(ws.root / ".reprobuild/trash") == []


def test_what_a_killed_build_left_in_the_trash_is_deleted_by_the_next(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  s:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n",
            ".reprobuild/trash/999-0/a/b.txt": "left by a killed build\n",
            ".reprobuild/trash/999-1": "another\n",
        }
    )
    assert stages_run(ws.run("build")) == ["s"]
    assert os.listdir(ws.root / ".reprobuild/trash") == []


@pytest.mark.parametrize("chained", [True, False])
def test_a_stage_is_recorded_while_the_next_one_runs(ws, monkeypatch, chained):
    """The object and run record of a finished stage are written once the next stage has
    started, while it runs, in a chain and at -j 1 alike; none is lost at the end, and no
    lockfile write names an object before it is written."""
    from reprobuild import cache as cache_mod
    from reprobuild import executors, lockfile

    ws.write(
        {
            "reprobuild.yaml": f"""\
                stages:
                  first:
                    cmd: echo one > one.txt
                    outs: [one.txt]
                  second:
                    cmd: echo two > two.txt{" && cat one.txt >> two.txt" if chained else ""}
                    deps: [{"one.txt" if chained else ""}]
                    outs: [two.txt]
                  third:
                    cmd: echo three > three.txt
                    outs: [three.txt]
                """,
        }
    )
    events = []
    real_spawn, real_record = executors._run_one, cache_mod.Cache.write_run
    real_object, real_lock = cache_mod.Cache.write_object, lockfile.write

    def write_object(self, digest, *args, **kwargs):
        events.append(("object",))
        return real_object(self, digest, *args, **kwargs)

    def write_lock(path, stages, *args, **kwargs):
        for entry in stages.values():
            for meta in entry["outs"].values():
                obj = ws.root / "cache/objects" / meta["hash"][:2] / meta["hash"][2:]
                assert obj.is_file(), "the lockfile would name an object not written"
        return real_lock(path, stages, *args, **kwargs)

    def spawn(job, cmd, *args, **kwargs):
        events.append(("spawn", cmd.split()[1]))
        return real_spawn(job, cmd, *args, **kwargs)

    def record(self, key, stage, *args, **kwargs):
        real_record(self, key, stage, *args, **kwargs)
        events.append(("record", stage))  # (written after the objects it names)

    monkeypatch.setattr(executors, "_run_one", spawn)
    monkeypatch.setattr(cache_mod.Cache, "write_run", record)
    monkeypatch.setattr(cache_mod.Cache, "write_object", write_object)
    monkeypatch.setattr(lockfile, "write", write_lock)
    r = ws.run("build", "-j", "1")
    assert stages_run(r) == ["first", "second", "third"], r.err
    obj = ("object",)
    assert events == [
        ("spawn", "one"),
        ("spawn", "two"),
        *(obj, ("record", "first")),
        ("spawn", "three"),
        *(obj, ("record", "second")),
        *(obj, ("record", "third")),  # the last one's at the end of the build
    ]
    assert len([p for p in (ws.root / "cache/runs").rglob("*") if p.is_file()]) == 3
    for name in ("one.txt", "two.txt", "three.txt"):
        (ws.root / name).unlink()
    assert stages_restored(ws.run("build")) == ["first", "second", "third"]


CHAIN = """\
stages:
  a: {cmd: echo a > a.txt, outs: [a.txt]}
  b: {cmd: cat a.txt > b.txt, deps: [a.txt], outs: [b.txt]}
  c: {cmd: cat b.txt > c.txt, deps: [b.txt], outs: [c.txt]}
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_build_holds_one_key_claim_at_a_time_released_once_recorded(ws, jobs):
    """Builds sharing a cache (experiments) claim a stage's key while it runs: the claim
    is let go once the record is written, before the next is taken, so that a build never
    waits for itself (two keys can share a lock stripe) nor others for its whole build."""
    from reprobuild.engine import BuildOptions, build
    from reprobuild.executors.local import LocalExecutor
    from reprobuild.project import Project
    from reprobuild.reporter import Reporter

    ws.write({"reprobuild.yaml": CHAIN})
    project = Project.open(str(ws.root / "reprobuild.yaml"), None, cwd=ws.root)
    held, events = [], []

    def claim(key):
        assert not held, "a second claim while one is held"
        held.append(key)

        def release():
            assert project.cache.run_path(key).is_file()  # the others will find it
            held.remove(key)
            events.append(key)

        return release

    opts = BuildOptions(jobs=jobs, claim=claim)
    summary = build(project, opts, Reporter(), executor=LocalExecutor(jobs))
    assert summary.ran == ["a", "b", "c"] and len(events) == 3 and not held


@pytest.mark.parametrize("idle", [True, False])
def test_a_finished_stage_reaches_the_lockfile_by_the_end_of_the_next(ws, monkeypatch, idle):
    """A finished stage's entry is written (when a write is due) while the next stage runs,
    or, under an executor with nothing to run meanwhile (experiments'), before it starts."""
    import types

    from reprobuild import executors, lockfile
    from reprobuild.engine import BuildOptions, build
    from reprobuild.executors.local import LocalExecutor
    from reprobuild.project import Project
    from reprobuild.reporter import Reporter

    ws.write({"reprobuild.yaml": CHAIN})
    # writes that cost nothing are always due
    monkeypatch.setattr(lockfile, "time", types.SimpleNamespace(monotonic=lambda: 0.0))
    monkeypatch.setattr(lockfile, "WRITE_COST", 0.0)
    seen, real = {}, executors._run_one

    def run_one(job, *args, **kwargs):
        code = real(job, *args, **kwargs)  # (an idle's write happens while it runs)
        seen[job.stage] = sorted(lockfile.read(ws.root / "reprobuild.lock")[0])
        return code

    monkeypatch.setattr(executors, "_run_one", run_one)
    project = Project.open(str(ws.root / "reprobuild.yaml"), None, cwd=ws.root)
    executor = LocalExecutor(1, idle=None)
    if idle:
        executor = None  # the build makes its own, which works while a stage runs
    summary = build(project, BuildOptions(jobs=1), Reporter(), executor=executor)
    assert summary.ran == ["a", "b", "c"]
    assert seen == {"a": [], "b": ["a"], "c": ["a", "b"]}
