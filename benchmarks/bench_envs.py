"""Environments benchmarks (issue: environments). Prints a table; asserts nothing.

    python benchmarks/bench_envs.py [--stages 1000] [--packages scikit-learn,polars,numpy]
                                    [--source DIR]

- no-op `build` of N trivial stages whose pipeline lists `env.packages`
  (each one's closure is in every key), best of 5, in separate processes
  as a user runs them; `--source DIR` runs the reprobuild found in DIR
  instead (e.g. an export of an older commit, to compare);
- creating a small uv environment (two tiny local wheels) from a warm uv
  cache, best of 5: the first time a stage with `env.requirements` runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(cmd, cwd, env=None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    return dt


def bench_noop(n: int, packages: list[str], source: str | None) -> list[tuple[str, str]]:
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source
    rb = [sys.executable, "-m", "reprobuild"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = [f"env: {{packages: [{', '.join(packages)}]}}", "stages:"]
        for i in range(n):
            lines.append(f"  s{i}:\n    cmd: echo {i} > out/{i}.txt\n    outs: [out/{i}.txt]")
        (root / "reprobuild.yaml").write_text("\n".join(lines) + "\n")
        run(rb + ["build", "-q"], root, env)
        time.sleep(1.1)  # outputs out of the stat cache's racy window
        run(rb + ["status"], root, env)
        noop = min(run(rb + ["build", "-q"], root, env) for _ in range(5))
        which = subprocess.run(
            [*rb[:1], "-c", "import reprobuild; print(reprobuild.__file__)"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
    return [
        (
            f"no-op build, {n} stages, packages {','.join(packages)}",
            f"{noop * 1000:.0f} ms  ({which})",
        )
    ]


def bench_uv_env() -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    from reprobuild.envs import ensure, request
    from tests.wheels import make_wheel

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_wheel(root / "wheels", "tinydep", "1.0")
        make_wheel(root / "wheels", "tinyapp", "1.0", ("tinydep",))
        (root / "requirements.lock").write_text(
            f"--no-index\n--find-links {root / 'wheels'}\ntinyapp==1.0\ntinydep==1.0\n"
        )
        for i in range(6):  # the first warms uv's cache
            req = request("requirements.lock", str(root), str(root / f"cache{i}"))
            t = time.perf_counter()
            ensure(req)
            times.append(time.perf_counter() - t)
    return [("create a small uv environment (warm uv cache)", f"{min(times[1:]) * 1000:.0f} ms")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=1000)
    ap.add_argument("--packages", default="scikit-learn,polars,numpy")
    ap.add_argument("--source", help="folder holding the reprobuild package to measure")
    ap.add_argument("--no-uv", action="store_true")
    args = ap.parse_args()
    rows = bench_noop(args.stages, args.packages.split(","), args.source)
    if not args.no_uv:
        rows += bench_uv_env()
    for name, value in rows:
        print(f"{name:<60}  {value}", flush=True)


if __name__ == "__main__":
    main()
