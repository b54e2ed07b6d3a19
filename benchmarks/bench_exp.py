"""Experiments. Prints numbers; asserts nothing.

    python benchmarks/bench_exp.py [--show 500] [--noop 20] [--fraud]

- `exp show` with N recorded experiments (made cheaply: commits with records,
  no builds), as the table and as JSON, wall time of the whole command;
- per-experiment overhead (worktree, build bookkeeping, record commit) on a
  pipeline whose one stage is restored from the run cache, against a plain
  no-op `build`;
- with --fraud: a 3x3 grid of the fraud pipeline at 8,000 rows (forest
  n_estimators x boosting learning_rate), `-j 2` against one at a time, each
  with a fresh cache (CPU heavy: minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def git(cwd, *args, input=None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, input=input, env=ENV
    ).stdout.decode()


def rb(cwd, *args) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "reprobuild", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        env=ENV,
    )
    return time.perf_counter() - t


def small_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "reprobuild.yaml").write_text(
        "env: {python: false, platform: false}\nstages:\n  s:\n"
        "    cmd: echo ${train.lr} > s.txt && echo 0.5 > m.json\n"
        "    params: [train]\n    outs: [s.txt]\n    metrics: [m.json]\n"
    )
    (root / "params.yaml").write_text("train:\n  lr: 0.1\n  depth: 3\n")
    (root / ".gitignore").write_text("s.txt\nm.json\ncache/\n")
    git(root, "init", "-q")
    rb(root, "build", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")


def bench_show(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        small_repo(root)
        base = git(root, "rev-parse", "HEAD").strip()
        tree = git(root, "rev-parse", "HEAD^{tree}").strip()
        refs = []
        t = time.perf_counter()
        for i in range(n):
            record = {
                "schema": 1,
                "name": f"e{i}",
                "status": "done",
                "base": base,
                "pipeline": "reprobuild.yaml",
                "targets": [],
                "overrides": {"train.lr": i / 1000, "train.depth": i % 7},
                "params": {"train.lr": i / 1000, "train.depth": i % 7},
                "metrics": {
                    "m.json": {f"m{k}": (i * 37 + k) % 101 / 100 for k in range(10)},
                },
                "created": 1.8e9 + i,
                "duration": 1.5,
            }
            msg = f"reprobuild experiment e{i}\n\n{json.dumps(record, sort_keys=True)}\n"
            commit = git(root, "commit-tree", tree, "-p", base, "-F", "-", input=msg.encode())
            refs.append(f"create refs/reprobuild/exps/e{i} {commit.strip()}\n")
        git(root, "update-ref", "--stdin", input="".join(refs).encode())
        made = time.perf_counter() - t
        rb(root, "exp", "show")  # warm
        table = min(rb(root, "exp", "show") for _ in range(3))
        as_json = min(rb(root, "exp", "show", "--json") for _ in range(3))
        sort = min(rb(root, "exp", "show", "--sort-by", "m3", "--csv") for _ in range(3))
        noop = min(rb(root, "status") for _ in range(3))
        print(
            f"exp show, {n} experiments (made in {made:.1f} s): table {table * 1000:.0f} ms, "
            f"--json {as_json * 1000:.0f} ms, --sort-by --csv {sort * 1000:.0f} ms "
            f"(a no-op `status` for scale: {noop * 1000:.0f} ms)"
        )


def bench_noop(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        small_repo(root)
        build = min(rb(root, "build", "-q") for _ in range(3))
        values = ",".join("0.1" for _ in range(1))  # same value: the stage is restored
        one = min(rb(root, "exp", "run", "-q", "-S", f"train.lr={values}") for _ in range(3))
        grid = ",".join(["0.1"] * n)
        total = rb(root, "exp", "run", "-q", "-S", f"train.lr={grid}")
        print(
            f"no-op experiments: one `exp run` {one * 1000:.0f} ms (a no-op `build` {build * 1000:.0f} ms); "
            f"{n} in one `exp run`: {total * 1000 / n:.0f} ms each"
        )


def bench_fraud() -> None:
    grid = [
        "-S",
        "train.models.forest.n_estimators=50,100,150",
        "-S",
        "train.models.boosting.learning_rate=0.05,0.1,0.2",
    ]
    times = {}
    for jobs in ("1", "2"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "repo"
            shutil.copytree(
                REPO / "pipelines" / "fraud",
                root,
                ignore=shutil.ignore_patterns("data", "models", ".reprobuild", "cache"),
            )
            params = (root / "params.yaml").read_text().replace("rows: 100000", "rows: 8000")
            (root / "params.yaml").write_text(params)
            (root / ".gitignore").write_text("data/\nmodels/\ncache/\n")
            git(root, "init", "-q")
            git(root, "add", "-A")
            git(root, "commit", "-qm", "fraud")
            times[jobs] = rb(root, "exp", "run", "-q", *grid, "-j", jobs)
    print(
        f"fraud 3x3 grid, 8,000 rows, fresh cache: one at a time {times['1']:.1f} s, "
        f"-j 2 {times['2']:.1f} s (ratio {times['2'] / times['1']:.2f})"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", type=int, default=500)
    ap.add_argument("--noop", type=int, default=20)
    ap.add_argument("--fraud", action="store_true")
    args = ap.parse_args()
    bench_show(args.show)
    bench_noop(args.noop)
    if args.fraud:
        bench_fraud()


if __name__ == "__main__":
    main()
