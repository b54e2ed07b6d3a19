"""Experiments through the CLI: grids, the queue, -j and Dask, failures, interrupts,
apply, push/pull between clones, and experiments surviving a rebase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import git

# prepare is shared by every experiment; train and evaluate depend on train.* params.
# Each stage appends its name to $RUNLOG (outside the workspace): what really ran.
PIPE = {
    "reprobuild.yaml": """\
        env: {python: false, platform: false}
        stages:
          prepare:
            cmd: echo prepare >> "$RUNLOG" && sort data/raw.txt > clean.txt
            deps: [data/raw.txt]
            outs: [clean.txt]
          train:
            cmd: echo train >> "$RUNLOG" && sleep ${train.pause} && echo ${train.a} ${train.b} > model.txt && cat clean.txt >> model.txt
            deps: [clean.txt]
            params: [train]
            outs: [model.txt]
          evaluate:
            cmd: echo evaluate >> "$RUNLOG" && python3 evaluate.py
            code: [evaluate.py]
            deps: [model.txt]
            metrics: [scores.json]
        """,
    "params.yaml": """\
        # hyperparameters
        train:
          a: 1      # the first knob
          b: 2
          pause: 0
        """,
    "evaluate.py": """\
        import json
        a, b = open("model.txt").read().split()[:2]
        json.dump({"score": float(a) * 10 + float(b), "rows": 2}, open("scores.json", "w"))
        """,
    "data/raw.txt": "b\na\n",
    ".gitignore": "clean.txt\nmodel.txt\nscores.json\ncache/\n",
}


@pytest.fixture
def runlog(tmp_path, monkeypatch):
    path = tmp_path / "runlog"
    monkeypatch.setenv("RUNLOG", str(path))

    def ran():
        return path.read_text().split() if path.exists() else []

    ran.path = path
    return ran


@pytest.fixture
def pipe(ws, runlog):
    """Built and committed; then a new raw file committed unbuilt, so `prepare` must run again."""
    ws.write(PIPE)
    assert ws.run("build", "-q").code == 0
    ws.commit_all("v1")
    ws.write({"data/raw.txt": "c\nb\na\n"})
    ws.commit_all("v2: more data")
    runlog.path.unlink()
    return ws


def show(ws, *args) -> dict:
    r = ws.run("exp", "show", "--json", *args)
    assert r.code == 0, r.err
    return {row["name"]: row for row in json.loads(r.out)["rows"]}


def lock_at(ws, ref: str) -> str:
    return git(ws.root, "show", f"refs/reprobuild/exps/{ref}:reprobuild.lock")


def worktrees(ws) -> list[str]:
    return [
        line
        for line in git(ws.root, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def test_grid_records_six_runs_shared_stage_once_and_leaves_the_workspace_alone(pipe, runlog):
    lock_before = (pipe.root / "reprobuild.lock").read_bytes()
    scores_before = pipe.read("scores.json")
    r = pipe.run("exp", "run", "-S", "train.a=1,2,3", "-S", "train.b=5,6", "-j", "2", "-n", "g")
    assert r.code == 0, r.err
    assert runlog().count("prepare") == 1  # shared upstream stage: once, not six times
    assert runlog().count("train") == 6 and runlog().count("evaluate") == 6
    rows = show(pipe)
    exps = {n: row for n, row in rows.items() if n.startswith("g-")}
    assert len(exps) == 6 and {row["status"] for row in exps.values()} == {"done"}
    scores = sorted(row["metrics"]["scores.json"]["score"] for row in exps.values())
    assert scores == [15.0, 16.0, 25.0, 26.0, 35.0, 36.0]
    assert exps["g-1"]["overrides"] == {"train.a": 1, "train.b": 5}
    # the workspace: nothing changed, no output made, lockfile bytes the same
    assert git(pipe.root, "status", "--porcelain") == ""
    assert (pipe.root / "reprobuild.lock").read_bytes() == lock_before
    assert pipe.read("scores.json") == scores_before and pipe.read("clean.txt") == "a\nb\n"
    assert len(worktrees(pipe)) == 1
    # the params file of an experiment keeps its comments
    text = git(pipe.root, "show", "refs/reprobuild/exps/g-6:params.yaml")
    assert "a: 3      # the first knob" in text and "# hyperparameters" in text


def test_parallel_and_dask_give_the_same_lockfiles_and_metrics_as_one_at_a_time(pipe):
    grid = ["-S", "train.a=1,2", "-S", "train.b=3,4"]
    # separate caches, so that each mode really runs every stage
    assert pipe.run("--cache-dir", "c1", "exp", "run", *grid, "-n", "seq").code == 0
    assert pipe.run("--cache-dir", "c2", "exp", "run", *grid, "-n", "par", "-j", "2").code == 0
    r = pipe.run(
        "--cache-dir", "c3", "exp", "run", *grid, "-n", "dask", "-j", "2", "--executor", "dask"
    )
    assert r.code == 0, r.err
    rows = show(pipe)
    for i in range(1, 5):
        assert lock_at(pipe, f"seq-{i}") == lock_at(pipe, f"par-{i}") == lock_at(pipe, f"dask-{i}")
        assert (
            rows[f"seq-{i}"]["metrics"]
            == rows[f"par-{i}"]["metrics"]
            == rows[f"dask-{i}"]["metrics"]
        )
        assert rows[f"dask-{i}"]["status"] == "done"


def test_a_failed_experiment_is_recorded_failed_and_the_others_go_on(pipe):
    r = pipe.run("exp", "run", "-S", "train.a=1,oops,3", "-n", "f")
    assert r.code == 1
    assert "experiment 'f-2' failed" in r.err
    rows = show(pipe)
    assert [rows[f"f-{i}"]["status"] for i in (1, 2, 3)] == ["done", "failed", "done"]
    assert "evaluate" in rows["f-2"]["error"] and "ValueError" in rows["f-2"]["error"]
    assert rows["f-3"]["metrics"]["scores.json"]["score"] == 32.0


def test_an_override_that_breaks_the_pipeline_is_a_failed_experiment(pipe):
    r = pipe.run("exp", "run", "-S", "train.a=[1, 2]", "-n", "listy")
    assert r.code == 1
    row = show(pipe)["listy"]
    assert row["status"] == "failed"
    assert row["error"].startswith("reprobuild.yaml:")
    assert "'${train.a}' is a list" in row["error"]
    assert len(worktrees(pipe)) == 1


def test_unknown_key_is_exit_2_naming_the_params_file_and_records_nothing(pipe):
    r = pipe.run("exp", "run", "-S", "train.a=1,2", "-S", "train.nope=3")
    assert r.code == 2
    assert r.err.strip().splitlines() == [
        "error: params.yaml: no param 'train.nope' (from -S train.nope=3)"
    ]
    assert show(pipe).keys() == {"workspace", "HEAD"}


def test_queue_then_run_all_and_interrupt_leaves_finished_recorded_rest_queued(pipe, runlog):
    r = pipe.run(
        "exp", "run", "--queue", "-S", "train.a=1,2,3,4", "-S", "train.pause=1.5", "-n", "q"
    )
    assert r.code == 0 and r.out.split() == [
        "queued",
        "q-1",
        "queued",
        "q-2",
        "queued",
        "q-3",
        "queued",
        "q-4",
    ]
    assert {row["status"] for n, row in show(pipe).items() if n.startswith("q-")} == {"queued"}
    assert runlog() == []  # queueing runs nothing
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprobuild", "exp", "run", "--run-all"],
        cwd=pipe.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline:  # wait for the first to be recorded, then Ctrl-C the second
        out = git(pipe.root, "for-each-ref", "--format=%(contents:body)", "refs/reprobuild/exps/")
        if '"status":"done"' in out and runlog().count("train") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    statuses = {n: row["status"] for n, row in show(pipe).items() if n.startswith("q-")}
    assert statuses["q-1"] == "done"
    assert "queued" in statuses.values() and "failed" not in statuses.values()
    assert len(worktrees(pipe)) == 1  # the interrupted one's worktree is gone
    r = pipe.run("exp", "run", "--run-all", "-j", "2")
    assert r.code == 0, r.err
    assert {row["status"] for n, row in show(pipe).items() if n.startswith("q-")} == {"done"}


def test_apply_writes_params_lockfile_and_outputs_then_status_is_clean_and_nothing_ran(
    pipe, runlog
):
    assert pipe.run("exp", "run", "-S", "train.a=4", "-n", "best").code == 0
    before = runlog()
    r = pipe.run("exp", "apply", "best")
    assert r.code == 0, r.err
    assert "a: 4      # the first knob" in pipe.read("params.yaml")
    assert json.loads(pipe.read("scores.json"))["score"] == 42.0
    assert pipe.read("reprobuild.lock") == lock_at(pipe, "best")
    st = pipe.run("status", "--check")
    assert st.code == 0 and "3 stages up to date" in st.out
    assert runlog() == before  # nothing ran
    assert pipe.run("build").out.strip().endswith("3 up to date") or runlog() == before
    assert runlog() == before


def test_apply_refuses_to_overwrite_uncommitted_params_edits(pipe):
    assert pipe.run("exp", "run", "-S", "train.a=4", "-n", "e").code == 0
    pipe.write({"params.yaml": "train: {a: 9, b: 2, pause: 0}\n"})
    r = pipe.run("exp", "apply", "e")
    assert r.code == 2 and "params.yaml has uncommitted changes" in r.err
    assert "a: 9" in pipe.read("params.yaml")


def test_uncommitted_code_and_params_changes_are_part_of_the_experiment(pipe):
    pipe.write({"evaluate.py": PIPE["evaluate.py"].replace("* 10", "* 100")})
    assert pipe.run("exp", "run", "-n", "edit").code == 0
    assert show(pipe)["edit"]["metrics"]["scores.json"]["score"] == 102.0
    assert "* 100" in git(pipe.root, "show", "refs/reprobuild/exps/edit:evaluate.py")


def test_untracked_raw_data_is_copied_into_the_experiment(ws, runlog):
    files = dict(PIPE)
    files[".gitignore"] += "data/\n"  # raw data kept out of git
    ws.write(files)
    ws.commit_all("v1")
    r = ws.run("exp", "run", "-n", "raw")
    assert r.code == 0, r.out + r.err
    assert show(ws)["raw"]["status"] == "done"


def test_revision_commands_accept_experiment_names(pipe):
    assert pipe.run("exp", "run", "-S", "train.b=7", "-n", "b7").code == 0
    r = pipe.run("params", "diff", "HEAD", "b7", "--json")
    assert json.loads(r.out)["params"]["train.b"] == {"old": 2, "new": 7, "change": 5}
    r = pipe.run("metrics", "diff", "HEAD", "b7", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["metrics"]["scores.json"]["score"]["new"] == 17.0
    assert pipe.run("diff", "HEAD", "b7", "--json").code == 0
    assert json.loads(pipe.run("lineage", "scores.json", "--rev", "b7", "--json").out)
    r = pipe.run("checkout", "--rev", "b7")
    assert r.code == 0, r.err
    assert json.loads(pipe.read("scores.json"))["score"] == 17.0
    r = pipe.run("exp", "diff", "HEAD", "b7", "--json")
    doc = json.loads(r.out)
    assert (
        doc["params"]["train.b"]["new"] == 7
        and doc["metrics"]["scores.json"]["score"]["new"] == 17.0
    )
    assert pipe.run("metrics", "diff", "HEAD", "no-such").code == 2


def test_show_sorts_by_metric_and_writes_csv(pipe):
    assert pipe.run("exp", "run", "-S", "train.a=3,1,2", "-n", "s").code == 0
    r = pipe.run("exp", "show", "--sort-by", "score", "--desc", "--csv")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split(",")[:5] == ["name", "status", "created", "duration", "train.a"]
    names = [line.split(",")[0] for line in lines[1:]]
    assert names == ["workspace", "HEAD", "s-1", "s-3", "s-2"]
    r = pipe.run("exp", "show", "--sort-by", "nope")
    assert r.code == 2 and "no such metric" in r.err


def test_remove_branch_and_queued(pipe):
    assert pipe.run("exp", "run", "-S", "train.a=5", "-n", "keep").code == 0
    assert pipe.run("exp", "run", "--queue", "-S", "train.a=6,7").code == 0
    assert pipe.run("exp", "remove", "--queued").code == 0
    assert [n for n in show(pipe) if n not in ("workspace", "HEAD")] == ["keep"]
    assert pipe.run("exp", "branch", "keep", "try-a5").code == 0
    assert "a: 5" in git(pipe.root, "show", "try-a5:params.yaml")
    assert pipe.run("exp", "remove", "keep").code == 0
    assert pipe.run("exp", "apply", "keep").code == 2


def test_experiments_survive_a_rebase_of_their_branch(pipe):
    assert pipe.run("exp", "run", "-S", "train.a=9", "-n", "old").code == 0
    base = git(pipe.root, "rev-parse", "HEAD").strip()
    git(pipe.root, "commit", "--amend", "-qm", "v2 reworded")  # HEAD is rewritten
    git(pipe.root, "reflog", "expire", "--expire=now", "--all")
    git(pipe.root, "gc", "-q", "--prune=now")
    assert "old" not in show(pipe)  # another base now
    row = show(pipe, "--all")["old"]
    assert row["base"] == base and row["metrics"]["scores.json"]["score"] == 92.0
    assert pipe.run("exp", "apply", "old").code == 0
    assert json.loads(pipe.read("scores.json"))["score"] == 92.0


def test_push_and_pull_between_two_clones(pipe, tmp_path, runlog):
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(pipe.root, "push", "-q", str(bare), "HEAD:refs/heads/main")
    remote_cache = tmp_path / "remote-cache"
    assert pipe.run("exp", "run", "-S", "train.a=6", "-n", "shared").code == 0
    r = pipe.run("exp", "push", str(bare), "--remote", str(remote_cache))
    assert r.code == 0, r.err
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "-b", "main", str(bare), str(clone))
    env = {**os.environ, "REPROBUILD_REMOTE": str(remote_cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "reprobuild", "exp", "pull", "origin"],
        cwd=clone,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    before = runlog()
    proc = subprocess.run(
        [sys.executable, "-m", "reprobuild", "exp", "apply", "shared"],
        cwd=clone,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((clone / "scores.json").read_text())["score"] == 62.0
    assert runlog() == before  # outputs came through the cache remote, nothing ran
    proc = subprocess.run(
        [sys.executable, "-m", "reprobuild", "status", "--check"], cwd=clone, capture_output=True
    )
    assert proc.returncode == 0


def test_gc_keeps_what_experiments_name(pipe, runlog):
    assert pipe.run("exp", "run", "-S", "train.a=8", "-n", "kept").code == 0
    assert pipe.run("gc").code == 0
    before = runlog()
    assert pipe.run("exp", "apply", "kept").code == 0
    assert json.loads(pipe.read("scores.json"))["score"] == 82.0 and runlog() == before


def test_experiments_belong_to_their_pipeline(pipe):
    pipe.write(
        {
            "other/reprobuild.yaml": "stages:\n  o:\n    cmd: echo ${k} > o.txt\n    outs: [o.txt]\n",
            "other/params.yaml": "k: 1\n",
            "other/.gitignore": "o.txt\n",
        }
    )
    pipe.commit_all("second pipeline")
    assert pipe.run("-f", "other", "exp", "run", "--queue", "-S", "k=2", "-n", "o2").code == 0
    assert pipe.run("exp", "run", "--queue", "-S", "train.a=2", "-n", "main2").code == 0
    assert "o2" not in show(pipe) and "main2" in show(pipe)
    r = pipe.run("exp", "run", "--run-all")
    assert r.code == 0 and "[o2]" not in r.out
    assert show(pipe, "-f", "other")["o2"]["status"] == "queued"
    assert pipe.run("-f", "other", "exp", "run", "--run-all").code == 0
    assert show(pipe, "-f", "other")["o2"]["params"] == {"k": 2}


def test_a_worktree_left_by_a_killed_run_is_swept(pipe):
    stale = pipe.root / ".reprobuild" / "exps" / "wt-gone-0123abcd"
    git(pipe.root, "worktree", "add", "--detach", "-q", str(stale), "HEAD")
    assert len(worktrees(pipe)) == 2
    assert pipe.run("exp", "run", "-n", "next").code == 0
    assert len(worktrees(pipe)) == 1 and not stale.exists()


def test_a_queued_experiment_keeps_the_code_it_was_queued_with(pipe):
    assert pipe.run("exp", "run", "--queue", "-S", "train.a=2", "-n", "snap").code == 0
    pipe.write({"evaluate.py": PIPE["evaluate.py"].replace("* 10", "* 1000")})
    assert pipe.run("exp", "run", "--run-all").code == 0
    assert show(pipe)["snap"]["metrics"]["scores.json"]["score"] == 22.0


def test_overrides_in_a_second_params_file(pipe):
    pipe.write(
        {
            "reprobuild.yaml": PIPE["reprobuild.yaml"].replace(
                "env: {python: false, platform: false}",
                "params: [params.yaml, extra.yaml]\n        env: {python: false, platform: false}",
            ),
            "extra.yaml": "note: {text: hello}\n",
        }
    )
    pipe.commit_all("extra params")
    assert pipe.run("exp", "run", "-S", "extra.yaml:note.text=bye", "-n", "x").code == 0
    row = show(pipe)["x"]
    assert row["overrides"] == {"extra.yaml:note.text": "bye"}
    assert row["params"]["extra.yaml:note.text"] == "bye"
    r = pipe.run("exp", "run", "-S", "other.yaml:a=1")
    assert r.code == 2 and "'other.yaml' is not a params file" in r.err


@pytest.mark.slow
def test_fraud_grid_sort_by_recall_and_apply_the_winner(tmp_path, capsys):
    """The fraud README's walk-through, at 4,000 rows."""
    pytest.importorskip("polars")
    pytest.importorskip("sklearn")
    import shutil

    from tests.conftest import REPO, Workspace

    root = tmp_path / "fraud"
    shutil.copytree(
        REPO / "pipelines" / "fraud",
        root,
        ignore=shutil.ignore_patterns(
            "data", "models", "reports", "reprobuild.lock", ".reprobuild", "__pycache__"
        ),
    )
    params = (root / "params.yaml").read_text().replace("rows: 100000", "rows: 4000")
    (root / "params.yaml").write_text(params)
    (root / ".gitignore").write_text("data/\nmodels/\nreports/\ncache/\n")
    git(root, "init", "-q")
    ws = Workspace(root, capsys)
    ws.commit_all("fraud")
    r = ws.run(
        "exp", "run", "-j", "2", "-n", "grid",
        "-S", "train.models.forest.n_estimators=20,60",
        "-S", "train.models.boosting.learning_rate=0.2",
    )  # fmt: skip
    assert r.code == 0, r.out + r.err
    r = ws.run("exp", "show", "--sort-by", "best.json:recall", "--desc", "--json")
    rows = [row for row in json.loads(r.out)["rows"] if row["name"].startswith("grid-")]
    recalls = [row["metrics"]["reports/best.json"]["recall"] for row in rows]
    assert len(rows) == 2 and recalls == sorted(recalls, reverse=True)
    r = ws.run("exp", "apply", rows[0]["name"])
    assert r.code == 0, r.err
    assert ws.run("status", "--check").code == 0
    best = json.loads(ws.read("reports/best.json"))
    assert best["recall"] == recalls[0]
    assert git(root, "status", "--porcelain").splitlines() == [
        " M params.yaml",
        "?? reprobuild.lock",
    ]
