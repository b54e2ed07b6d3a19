"""reprobuild beside make, ninja, Snakemake and DVC on the same generated graphs, in one run.

    python benchmarks/bench_compare.py [--stages 200,1000] [--quick] [--tools ...]

Every tool gets its own copy of the same graph (the pipeline written by
`bench_core.make_pipeline`, or a chain, or big files) and the same `cat`
commands; Makefile, build.ninja, Snakefile and dvc.yaml are generated from
that reprobuild.yaml. Measures, each the best of --repeat runs as separate
processes:

- cold, each stage added: (cold of the largest wide graph - cold of the smallest) /
  the stages between, what a stage costs without the start-up;
- cold: the first build, and ms per stage: the best of --repeat first builds, each
  in its own fresh copy of the graph (Snakemake and DVC: one). Every copy of every
  tool is made before the first is built and nothing is deleted until all are
  built, and the tools take turns: on this machine's ext4 a file made just after
  many were deleted costs up to 20x more kernel time, which would fall on
  whichever tool came next;
- no-op: build again with nothing changed;
- status: reprobuild status, `make -q`, `ninja -n`, `snakemake -n`, `dvc status`;
- incremental: one input's content changed, then build (its chain of 10 reruns;
  in the chain scenario, all of it);
- touch: every input's mtime moved, content unchanged, then build (make, ninja
  and Snakemake rerun everything; reprobuild and DVC nothing).

Snakemake and DVC run when found on PATH or in --peer-bin, on graphs of at
most --peer-max stages (DVC needs minutes for 1,000). The 10,000-stage rows
are reprobuild only. Prints a Markdown table with ratios to make; progress
goes to stderr. Asserts nothing. PYTHONDONTWRITEBYTECODE is dropped, so
Python tools start from cached byte-code as they do when installed.
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import best_of, make_pipeline, run  # noqa: E402

TOOLS = ("reprobuild", "make", "ninja", "snakemake", "dvc")
PEERS = ("snakemake", "dvc")
REPEAT = [3]  # --repeat


# -- graphs (reprobuild.yaml first; the other tools' files are made from it) ----------


def make_chain(root: Path, n: int) -> None:
    """n stages, each reading its own input and the previous stage's out."""
    (root / "in").mkdir(parents=True)
    lines = ["stages:"]
    for i in range(n):
        (root / "in" / f"{i}.txt").write_text(f"input {i}\n")
        deps = [f"in/{i}.txt"] + ([f"out/{i - 1}.txt"] if i else [])
        lines.append(
            f"  s{i}:\n    cmd: cat {' '.join(deps)} > out/{i}.txt\n"
            f"    deps: [{', '.join(deps)}]\n    outs: [out/{i}.txt]"
        )
    (root / "reprobuild.yaml").write_text("\n".join(lines) + "\n")
    _age(root / "in")


def make_bigfiles(root: Path, count: int, mib: int, source: Path) -> None:
    """`count` stages, each copying a `mib` MiB input (hard links to one set of files)."""
    (root / "in").mkdir(parents=True)
    lines = ["stages:"]
    for i in range(count):
        os.link(source / f"{i}.bin", root / "in" / f"{i}.bin")
        lines.append(
            f"  s{i}:\n    cmd: cat in/{i}.bin > out/{i}.bin\n"
            f"    deps: [in/{i}.bin]\n    outs: [out/{i}.bin]"
        )
    (root / "reprobuild.yaml").write_text("\n".join(lines) + "\n")


def write_bigfiles(folder: Path, count: int, mib: int) -> None:
    folder.mkdir()
    block = os.urandom(1024 * 1024)
    for i in range(count):
        with open(folder / f"{i}.bin", "wb") as f:
            for k in range(mib):
                f.write(block[:-8] + k.to_bytes(4, "big") + i.to_bytes(4, "big"))
    _age(folder)


def _age(folder: Path) -> None:
    old = time.time() - 10  # past the stat cache's racy window
    for p in folder.iterdir():
        os.utime(p, (old, old))


def stages_of(root: Path) -> list[tuple[str, str, list[str], list[str]]]:
    data = yaml.safe_load((root / "reprobuild.yaml").read_text())
    return [(n, b["cmd"], b["deps"], b["outs"]) for n, b in data["stages"].items()]


def write_make(root: Path, stages) -> None:
    lines = [".PHONY: all", "all: " + " ".join(o for s in stages for o in s[3])]
    for _, cmd, deps, outs in stages:
        lines += [f"{outs[0]}: {' '.join(deps)}", f"\t@{cmd}"]
    (root / "Makefile").write_text("\n".join(lines) + "\n")
    (root / "out").mkdir()


def write_ninja(root: Path, stages) -> None:
    lines = []
    for name, cmd, deps, outs in stages:
        lines += [f"rule r_{name}", f"  command = {cmd}"]
        lines.append(f"build {outs[0]}: r_{name} {' '.join(deps)}")
    (root / "build.ninja").write_text("\n".join(lines) + "\n")


def write_snakefile(root: Path, stages) -> None:
    rules = ["rule all:\n    input: " + ", ".join(repr(o) for s in stages for o in s[3])]
    for name, cmd, deps, outs in stages:
        rules.append(
            f"rule {name}:\n    input: {', '.join(map(repr, deps))}\n"
            f"    output: {outs[0]!r}\n    shell: {cmd!r}"
        )
    (root / "Snakefile").write_text("\n".join(rules) + "\n")


def write_dvc(root: Path, stages) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=root, check=True)
    shutil.copy(root / "reprobuild.yaml", root / "dvc.yaml")
    (root / "out").mkdir()  # dvc does not make the parent folders of outs


# -- tools ------------------------------------------------------------------


def commands(tool: str) -> dict:
    """{setup, build, status} for a tool; status commands may exit non-zero."""
    rb = [sys.executable, "-m", "reprobuild"]
    return {
        "reprobuild": dict(setup=None, build=rb + ["build", "-q"], status=rb + ["status"]),
        "make": dict(setup=write_make, build=["make", "-s"], status=["make", "-q"]),
        "ninja": dict(setup=write_ninja, build=["ninja"], status=["ninja", "-n"]),
        "snakemake": dict(
            setup=write_snakefile,
            build=["snakemake", "-c1", "-q"],
            status=["snakemake", "-c1", "-n", "-q"],
        ),
        "dvc": dict(setup=write_dvc, build=["dvc", "repro", "-q"], status=["dvc", "status"]),
    }[tool]


def bench_tool(tool: str, root: Path, stages, inputs: list[Path], measures, repeat: int):
    """Seconds per measure (cold aside) for one tool on its own built copy of a graph."""
    c = commands(tool)
    got = {}
    time.sleep(1.1)  # the outputs leave the racy window, as after any real build
    run(c["status"], root, check=False)  # e.g. fills reprobuild's stat cache
    if "no-op" in measures:
        got["no-op"] = best_of(repeat, lambda: run(c["build"], root)[0])
    if "status" in measures:
        got["status"] = best_of(repeat, lambda: run(c["status"], root, check=False)[0])
    if "incremental" in measures:
        edits = iter(range(1_000_000))

        def incremental():
            with open(inputs[0], "a") as f:
                f.write(f"edit {next(edits)}\n")
            return run(c["build"], root)[0]

        got["incremental"] = best_of(repeat, incremental)
    if "touch" in measures:

        def touch():
            now = time.time()
            for p in inputs:
                os.utime(p, (now, now))
            return run(c["build"], root)[0]

        got["touch"] = best_of(repeat, touch)
    return got


def scenario(label: str, make_graph, n: int, tools, measures, rows) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copies = {t: 1 if t in PEERS or "cold" not in measures else REPEAT[0] for t in tools}
        roots = {}
        for tool in tools:  # every copy first (see the module docstring)
            for i in range(copies[tool]):
                root = roots[tool, i] = Path(tmp) / f"{tool}-{i}"
                make_graph(root)
                setup = commands(tool)["setup"]
                if setup:
                    setup(root, stages_of(root))
        cold: dict = {}
        for i in range(max(copies.values())):
            turn = [t for t in tools[i % len(tools) :] + tools[: i % len(tools)] if i < copies[t]]
            for tool in turn:  # the first build of copy i, the tools taking turns
                print(f"{label}: {tool} cold {i + 1} ...", file=sys.stderr, flush=True)
                cold.setdefault(tool, []).append(run(commands(tool)["build"], roots[tool, i])[0])
        for tool in tools:
            root = roots[tool, 0]
            inputs = sorted((root / "in").iterdir(), key=lambda p: int(p.stem))
            print(f"{label}: {tool} ...", file=sys.stderr, flush=True)
            got = bench_tool(tool, root, stages_of(root), inputs, measures, REPEAT[0])
            got["cold"] = min(cold[tool])  # (a scenario not measuring it had one)
            for m, secs in got.items():
                rows.setdefault((label, m, n), {})[tool] = secs
            if tool in PEERS or label.startswith("bigfile"):
                shutil.rmtree(root)  # big files and DVC's cache go as soon as measured


# -- the table --------------------------------------------------------------


def fmt(secs: float | None, measure: str, n: int) -> str:
    if secs is None:
        return "—"
    text = f"{secs * 1000:,.0f} ms" if secs >= 0.1 else f"{secs * 1000:.1f} ms"
    if measure == "cold":
        text += f" ({secs / n * 1000:.1f}/stage)"
    return text


def table(rows, tools) -> str:
    head = ["scenario", "measure", *tools, "reprobuild / make"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (label, measure, n), got in rows.items():
        cells = [fmt(got.get(t), measure, n) for t in tools]
        ratio = (
            f"{got['reprobuild'] / got['make']:.1f}x"
            if "reprobuild" in got and got.get("make")
            else "—"
        )
        out.append("| " + " | ".join([label, measure, *cells, ratio]) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default="200,1000", help="sizes of the wide graph (comma list)")
    ap.add_argument("--chain", type=int, default=100, help="stages of the chain (0: skip)")
    ap.add_argument("--huge", type=int, default=10000, help="reprobuild-only size (0: skip)")
    ap.add_argument("--big-mib", type=int, default=512, help="size of each of 2 big files")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--peer-bin", default="", help="folder holding snakemake and dvc")
    ap.add_argument("--peer-max", type=int, default=200, help="largest graph for Snakemake/DVC")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measure (best is kept)")
    ap.add_argument(
        "--quick", action="store_true", help="a small run: 50 stages, chain 20, 16 MiB, no huge"
    )
    args = ap.parse_args()
    if args.quick:
        args.stages, args.chain, args.huge, args.big_mib = "50", 20, 0, 16
    REPEAT[0] = args.repeat
    # byte-code cached as in any installed package (pip compiles on install), for every tool
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.peer_bin:
        os.environ["PATH"] = args.peer_bin + os.pathsep + os.environ["PATH"]
    wanted = [t for t in args.tools.split(",") if t]
    tools = [t for t in wanted if t == "reprobuild" or shutil.which(t)]
    for t in set(wanted) - set(tools):
        print(f"{t}: not installed, skipped", file=sys.stderr)
    all_measures = ("cold", "no-op", "status", "incremental", "touch")

    def peers_ok(n):
        return [t for t in tools if t not in PEERS or n <= args.peer_max]

    rows: dict = {}
    for n in [int(s) for s in args.stages.split(",") if s]:
        scenario(
            f"wide-{n}", lambda r, n=n: make_pipeline(r, n), n, peers_ok(n), all_measures, rows
        )
    sizes = sorted(int(s) for s in args.stages.split(",") if s)
    if len(sizes) > 1:  # a stage's own cost, the fixed start-up (imports, parsing) left out
        a, b = sizes[0], sizes[-1]
        small, big = rows.get((f"wide-{a}", "cold", a), {}), rows.get((f"wide-{b}", "cold", b), {})
        rows[(f"wide-{a} to {b}", "cold, each stage added", b - a)] = {
            t: (big[t] - small[t]) / (b - a) for t in big if t in small
        }
    if args.chain:
        n = args.chain
        scenario(f"chain-{n}", lambda r: make_chain(r, n), n, peers_ok(n), ("incremental",), rows)
    if args.huge:
        n = args.huge
        scenario(
            f"wide-{n}", lambda r: make_pipeline(r, n), n, ["reprobuild"], ("no-op", "status"), rows
        )
    if args.big_mib:
        with tempfile.TemporaryDirectory() as big:
            write_bigfiles(Path(big) / "src", 2, args.big_mib)
            scenario(
                f"bigfile 2×{args.big_mib} MiB",
                lambda r: make_bigfiles(r, 2, args.big_mib, Path(big) / "src"),
                2,
                tools,
                ("no-op", "status"),
                rows,
            )
    print(table(rows, tools))


if __name__ == "__main__":
    main()
