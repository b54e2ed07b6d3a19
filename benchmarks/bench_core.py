"""Core speed benchmarks (issue: the core engine). Prints a table; asserts nothing.

    python benchmarks/bench_core.py [--stages 1000] [--big-gib 1] [--peers] [--peer-stages 200]

- cold build of N trivial stages (`cat in/i.txt > out/i.txt`, chained in
  tens so the graph has depth), per stage, against the bare cost of spawning
  the same `sh -c` commands;
- no-op `build` and `status` of that pipeline (separate processes, as a user runs them);
- `touch` of every input without a content change: nothing rebuilds;
- hashing a large file cold against `cat FILE > /dev/null` in the same run,
  and warm (stat cache);
- with --peers, the same graph (of --peer-stages stages: DVC needs minutes
  for 1,000) under DVC and Snakemake when they are installed, with ratios to
  reprobuild on that same graph. Rows print as they are measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd, cwd, check=True):
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if check and proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return dt, proc


def best_of(n, fn):
    return min(fn() for _ in range(n))


def make_pipeline(root: Path, n: int) -> None:
    (root / "in").mkdir(parents=True)
    lines = ["stages:"]
    for i in range(n):
        (root / "in" / f"{i}.txt").write_text(f"input {i}\n")
        # every 10th stage starts a chain; the others read their predecessor too
        deps = [f"in/{i}.txt"] + ([f"out/{i - 1}.txt"] if i % 10 else [])
        lines.append(
            f"  s{i}:\n    cmd: cat {' '.join(deps)} > out/{i}.txt\n"
            f"    deps: [{', '.join(deps)}]\n    outs: [out/{i}.txt]"
        )
    (root / "reprobuild.yaml").write_text("\n".join(lines) + "\n")
    old = time.time() - 10  # past the stat cache's racy window
    for p in (root / "in").iterdir():
        os.utime(p, (old, old))


def spawn_baseline(root: Path, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        subprocess.run(["sh", "-c", f"cat in/{i}.txt > /dev/null"], cwd=root, check=True)
    return time.perf_counter() - t


def bench_pipeline(n: int, ours: dict) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pipeline(root, n)
        rb = [sys.executable, "-m", "reprobuild"]
        cold, _ = run(rb + ["build", "-q"], root)
        base = spawn_baseline(root, n)
        rows.append((f"cold build, {n} stages", f"{cold:.2f} s  ({cold / n * 1000:.2f} ms/stage)"))
        rows.append(("  of which spawning `sh -c cat` alone", f"{base / n * 1000:.2f} ms/stage"))
        rows.append(("  reprobuild's own overhead", f"{(cold - base) / n * 1000:.2f} ms/stage"))
        time.sleep(1.1)  # let the outputs leave the racy window, as after any real build
        run(rb + ["status"], root)  # fills the stat cache for the new outputs
        noop = best_of(3, lambda: run(rb + ["build", "-q"], root)[0])
        status = best_of(3, lambda: run(rb + ["status"], root)[0])
        rows.append((f"no-op build, {n} stages", f"{noop * 1000:.0f} ms"))
        ours.update(cold=cold, noop=noop)
        rows.append((f"no-op status, {n} stages", f"{status * 1000:.0f} ms"))
        for p in (root / "in").iterdir():
            p.touch()
        _, proc = run(rb + ["build"], root)
        ran = sum(1 for line in proc.stdout.splitlines() if line.split()[:1] == ["running"])
        rows.append(("touch every input, then build", f"{ran} stages ran"))
        helpv = best_of(3, lambda: run(rb + ["--help"], root)[0])
        rows.append(("reprobuild --help", f"{helpv * 1000:.0f} ms"))
    return rows


def bench_hash(gib: float) -> list[tuple[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from reprobuild.hashing import Hasher, StatCache

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        size = int(gib * 1024**3)
        with open(big, "wb") as f:
            block = os.urandom(16 * 1024 * 1024)
            for _ in range(size // len(block)):
                f.write(block)
        old = time.time() - 10
        os.utime(big, (old, old))
        cat = best_of(3, lambda: run(["sh", "-c", f"cat {big} > /dev/null"], tmp)[0])

        def cold():
            t = time.perf_counter()
            Hasher(StatCache(None)).path(str(big))
            return time.perf_counter() - t

        hash_cold = best_of(3, cold)
        sc = StatCache(Path(tmp) / "stat.json")
        Hasher(sc).path(str(big))
        sc.save()

        def warm():
            t = time.perf_counter()
            Hasher(StatCache(Path(tmp) / "stat.json")).path(str(big))
            return time.perf_counter() - t

        hash_warm = best_of(5, warm)
        mb = size / 1e6
        rows.append((f"cat {gib:g} GiB > /dev/null (page cache)", f"{mb / cat:,.0f} MB/s"))
        rows.append(
            (
                f"hash {gib:g} GiB cold (no stat cache)",
                f"{mb / hash_cold:,.0f} MB/s ({cat / hash_cold * 100:.0f}% of cat)",
            )
        )
        rows.append((f"hash {gib:g} GiB warm (stat cache)", f"{hash_warm * 1000:.2f} ms"))
    return rows


def bench_peers(n: int, ours: dict) -> list[tuple[str, str]]:
    """The same graph under Snakemake and DVC, with ratios to reprobuild's numbers."""
    rows = []
    if shutil.which("snakemake"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_pipeline(root, n)
            rules = ["rule all:\n    input: " + ", ".join(f"'out/{i}.txt'" for i in range(n))]
            for i in range(n):
                deps = [f"in/{i}.txt"] + ([f"out/{i - 1}.txt"] if i % 10 else [])
                rules.append(
                    f"rule s{i}:\n    input: {', '.join(repr(d) for d in deps)}\n"
                    f"    output: 'out/{i}.txt'\n    shell: 'cat {{input}} > {{output}}'"
                )
            (root / "Snakefile").write_text("\n".join(rules) + "\n")
            cold, _ = run(["snakemake", "-c1", "-q"], root)
            noop, _ = run(["snakemake", "-c1", "-q"], root)
            rows.append(
                (
                    f"snakemake cold, {n} stages",
                    f"{cold / n * 1000:.2f} ms/stage ({cold / ours['cold']:.1f}x reprobuild)",
                )
            )
            rows.append(
                (
                    f"snakemake no-op, {n} stages",
                    f"{noop * 1000:.0f} ms ({noop / ours['noop']:.1f}x reprobuild)",
                )
            )
    else:
        rows.append(("snakemake", "not installed: skipped"))
    if shutil.which("dvc"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_pipeline(root, n)
            subprocess.run(["git", "init", "-q"], cwd=root, check=True)
            subprocess.run(["dvc", "init", "-q"], cwd=root, check=True)
            os.rename(root / "reprobuild.yaml", root / "dvc.yaml")
            (root / "out").mkdir()  # dvc does not make the parent folders of outs
            cold, _ = run(["dvc", "repro", "-q"], root)
            noop, _ = run(["dvc", "repro", "-q"], root)
            rows.append(
                (
                    f"dvc cold, {n} stages",
                    f"{cold / n * 1000:.2f} ms/stage ({cold / ours['cold']:.1f}x reprobuild)",
                )
            )
            rows.append(
                (
                    f"dvc no-op, {n} stages",
                    f"{noop * 1000:.0f} ms ({noop / ours['noop']:.1f}x reprobuild)",
                )
            )
    else:
        rows.append(("dvc", "not installed: skipped"))
    return rows


def show(rows) -> None:
    for name, value in rows:
        print(f"{name:<40}  {value}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=1000)
    ap.add_argument("--big-gib", type=float, default=1.0)
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--peer-stages", type=int, default=200)
    args = ap.parse_args()
    show(bench_pipeline(args.stages, {}))
    show(bench_hash(args.big_gib))
    if args.peers:
        ours: dict = {}
        show(bench_pipeline(args.peer_stages, ours)[:4])
        show(bench_peers(args.peer_stages, ours))


if __name__ == "__main__":
    main()
