"""Data versioning speed (issue: tracked sources). Prints a table; asserts nothing.

    python benchmarks/bench_data.py [--files 100000] [--big-gib 1] [--dvc PATH/TO/dvc]

Two datasets, each in fresh git repositories: a folder of N small files and a
folder of 2 large files. For each: `add`, no-op `status`, `status` after one
file changed, `push` and `pull` to a folder remote, `checkout` into an empty
workspace (a fresh clone whose local cache is filled by `pull`), timed as a
user runs them (separate processes). `cp -r` of the same folder is the
baseline for `add`; DVC (`dvc add`, `dvc status`, `dvc push/pull`, `dvc
checkout`) runs on the same data in the same run when `--dvc` (or `dvc` on
PATH) is available. DVC is not a project dependency: install it in a side
virtual environment.

Nothing is deleted while a measure runs, and no measured step follows a mass
deletion: trees the steps replace are moved aside and deleted at the end.
Each measured command starts after a `sync`, so that no tool's own sync pays
for writing back the data an earlier step made.
On ext4 without a journal (as on this project's CI machines: the `discard`
mount with no journal task), the kernel will not reuse an inode freed in the
last minutes and scans past each one on every file it creates
(`recently_deleted` in `find_inode_bit`): after `rm -rf` of 100,000 files,
creating files costs 400-600 us each instead of 20-40, for any tool. That
measures the filesystem's recent history, not the tool.
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

REPROBUILD = [sys.executable, "-m", "reprobuild"]
PIPE = (
    "stages:\n  count:\n    cmd: ls -R data > count.txt\n    deps: [data]\n    outs: [count.txt]\n"
)


def timed(cmd, cwd, env=None) -> float:
    # What earlier steps wrote reaches the disk first: reprobuild's group commit (one
    # syncfs) must not be charged with writing back the data the benchmark just made.
    os.sync()
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"failed in {cwd}: {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    return dt


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_small(folder: Path, n: int) -> None:
    for i in range(n):
        sub = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:06d}.txt").write_bytes(f"row {i}\n".encode() * (1 + i % 7))


def make_big(folder: Path, gib: float) -> None:
    folder.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for name in ("a.bin", "b.bin"):
        with open(folder / name, "wb") as f:
            for _ in range(int(gib * 1024)):
                f.write(chunk)


def set_aside(path: Path) -> None:
    """Move a tree out of the way (into the case's trash/, deleted at its end): see above."""
    trash = path.parent.parent / "trash"  # the case folder: the same filesystem
    trash.mkdir(exist_ok=True)
    os.rename(path, trash / f"{path.parent.name}-{path.name}-{time.monotonic_ns()}")


def repo(base: Path, name: str, data: Path) -> Path:
    root = base / name
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "b@b")
    git(root, "config", "user.name", "b")
    shutil.copytree(data, root / "data", copy_function=os.link)  # same bytes, no copy cost
    return root


def bench_reprobuild(base: Path, data: Path, one_file: str) -> dict:
    root = repo(base, "rb", data)
    (root / "reprobuild.yaml").write_text(PIPE)
    r = {}
    # the baseline copies inside the same repository, where the cache is: on ext4 a new
    # file's inode is placed near its folder's, so where a copy lands changes its cost
    r["cp -r (same folder)"] = timed(["cp", "-r", "data", "cp-baseline"], root)
    set_aside(root / "cp-baseline")
    r["add"] = timed([*REPROBUILD, "add", "data"], root)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "data")
    r["status (no-op)"] = min(timed([*REPROBUILD, "status"], root) for _ in range(3))
    target = root / "data" / one_file
    original = target.read_bytes()
    os.unlink(target)  # break the hardlink to the shared input
    target.write_bytes(original + b"changed\n")
    r["status (1 changed)"] = timed([*REPROBUILD, "status"], root)
    os.unlink(target)
    target.write_bytes(original)
    remote = base / "rb-remote"
    remote.mkdir()
    r["push"] = timed([*REPROBUILD, "push", "data", "--remote", str(remote)], root)
    clone = base / "rb-clone"
    git(base, "clone", "-q", str(root), str(clone))
    r["pull (into an empty workspace)"] = timed(
        [*REPROBUILD, "pull", "data", "--remote", str(remote)], clone
    )
    set_aside(clone / "data")
    r["checkout (empty workspace)"] = timed([*REPROBUILD, "checkout", "data"], clone)
    return r


def bench_dvc(base: Path, data: Path, one_file: str, dvc: str) -> dict:
    root = repo(base, "dvc", data)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    timed([dvc, "init", "-q"], root, env)
    r = {}
    r["add"] = timed([dvc, "add", "-q", "data"], root, env)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "data")
    r["status (no-op)"] = min(timed([dvc, "status", "-q"], root, env) for _ in range(3))
    target = root / "data" / one_file
    original = target.read_bytes()
    os.unlink(target)
    target.write_bytes(original + b"changed\n")
    proc = subprocess.run([dvc, "status"], cwd=root, capture_output=True, env=env)
    t = time.perf_counter()
    subprocess.run([dvc, "status"], cwd=root, capture_output=True, env=env)
    r["status (1 changed)"] = time.perf_counter() - t
    assert proc.returncode in (0, 1)
    os.unlink(target)
    target.write_bytes(original)
    remote = base / "dvc-remote"
    remote.mkdir()
    timed([dvc, "remote", "add", "-q", "-d", "store", str(remote)], root, env)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "remote")
    r["push"] = timed([dvc, "push", "-q"], root, env)
    clone = base / "dvc-clone"
    git(base, "clone", "-q", str(root), str(clone))
    r["pull (into an empty workspace)"] = timed([dvc, "pull", "-q"], clone, env)
    set_aside(clone / "data")
    r["checkout (empty workspace)"] = timed([dvc, "checkout", "-q"], clone, env)
    return r


def report(title: str, ours: dict, theirs: dict | None) -> None:
    baseline = ours.pop("cp -r (same folder)")
    print(f"\n{title}")
    print("| measure | reprobuild | DVC | DVC / reprobuild |")
    print("| --- | --- | --- | --- |")
    for k, v in ours.items():
        other = theirs.get(k) if theirs else None
        cells = f"{other:.2f} s | {other / v:.1f}x" if other else "- | -"
        print(f"| {k} | {v:.2f} s | {cells} |")
    ratio = ours["add"] / baseline
    print(
        f"| `cp -r` in the repository | {baseline:.2f} s | | add / cp -r = {ratio:.2f} |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--big-gib", type=float, default=1.0)
    ap.add_argument("--dvc", default=shutil.which("dvc"))
    ap.add_argument("--only", choices=("small", "big"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        base = Path(tmp)
        sets = []
        if args.only in (None, "small"):
            sets.append((f"{args.files:,} small files", make_small, args.files, "d000/f000001.txt"))
        if args.only in (None, "big"):
            sets.append((f"2 files x {args.big_gib:g} GiB", make_big, args.big_gib, "a.bin"))
        for title, make, size, one in sets:
            case = base / title.split()[0].replace(",", "")
            case.mkdir()
            data = case / "source"
            make(data, size)
            subprocess.run(["sync"])
            ours = bench_reprobuild(case, data, one)
            theirs = bench_dvc(case, data, one, args.dvc) if args.dvc else None
            report(title, ours, theirs)
            shutil.rmtree(case)


if __name__ == "__main__":
    main()
