"""Parallel builds and the Dask executor. Prints numbers; asserts nothing.

    python benchmarks/bench_parallel.py [--seconds 2] [--trivial 100]

- four independent CPU-bound stages of ~N s each: wall time of -j 2 against -j 1;
- per-stage overhead of `--executor dask` (a LocalCluster of 2 workers)
  against the local executor, on many trivial stages (cluster start-up
  reported apart).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BURN = "import sys, time\nend = time.process_time() + float(sys.argv[1])\nx = 0\nwhile time.process_time() < end:\n    x += 1\nopen(sys.argv[2], 'w').write('done\\n')\n"


def build(root: Path, *args: str) -> float:
    for p in ("reprobuild.lock",):
        (root / p).unlink(missing_ok=True)
    shutil.rmtree(root / "out", ignore_errors=True)
    shutil.rmtree(root / "cache", ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reprobuild", "build", "-q", *args], cwd=root, check=True)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--trivial", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "burn.py").write_text(BURN)
        (root / "reprobuild.yaml").write_text(
            "stages:\n  burn:\n    foreach: [1, 2, 3, 4]\n    do:\n"
            f"      cmd: python burn.py {args.seconds} out/${{item}}.txt\n      outs: ['out/${{item}}.txt']\n"
        )
        j1 = build(root, "-j", "1")
        j2 = build(root, "-j", "2")
        print(
            f"4 CPU-bound stages of {args.seconds:g} s: -j 1 {j1:.2f} s, -j 2 {j2:.2f} s, "
            f"ratio {j2 / j1:.2f}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "reprobuild.yaml").write_text(
            "stages:\n  t:\n    foreach: [" + ", ".join(str(i) for i in range(args.trivial)) + "]\n"
            "    do:\n      cmd: echo ${item} > out/${item}.txt\n      outs: ['out/${item}.txt']\n"
        )
        local = build(root, "-j", "2")
        empty = root / "empty"
        empty.mkdir()
        (empty / "reprobuild.yaml").write_text(
            "stages:\n  e:\n    cmd: echo > e.txt\n    outs: [e.txt]\n"
        )
        start_up = build(empty, "-j", "2", "--executor", "dask")
        dask = build(root, "-j", "2", "--executor", "dask")
        n = args.trivial
        print(
            f"{n} trivial stages, -j 2: local {local / n * 1000:.1f} ms/stage; "
            f"dask {(dask - start_up) / n * 1000:.1f} ms/stage after a cluster start-up of ~{start_up:.1f} s "
            f"(overhead {(dask - start_up - local) / n * 1000:.1f} ms/stage)"
        )


if __name__ == "__main__":
    main()
