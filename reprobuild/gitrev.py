"""Reading files of git revisions through the `git` command (never by reading .git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import GitError


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    except FileNotFoundError:
        raise GitError("git is not installed; revisions cannot be read") from None
    if check and proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])}: {msg[-1] if msg else 'failed'}")
    return proc


def require_repo(cwd: Path) -> Path:
    proc = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise GitError(f"{cwd} is not in a git repository; revisions need git history")
    return Path(proc.stdout.decode().strip())


EXPERIMENT_REFS = "refs/reprobuild/exps/"  # see experiments.py


def resolve(cwd: Path, rev: str) -> str:
    """The commit a git revision or an experiment name stands for; an unknown one raises.

    A git revision wins over an experiment of the same name.
    """
    for candidate in (rev, EXPERIMENT_REFS + rev):
        proc = _git(cwd, "rev-parse", "--verify", "--quiet", candidate + "^{commit}", check=False)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
    raise GitError(f"unknown git revision '{rev}'")


def show(cwd: Path, rev: str, path_in_repo: str) -> str | None:
    """Text of a file at a revision (or experiment), None when it lacks it; a bad rev raises."""
    data = show_bytes(cwd, rev, path_in_repo)
    return None if data is None else data.decode("utf-8", errors="replace")


def show_bytes(cwd: Path, rev: str, path_in_repo: str) -> bytes | None:
    """Bytes of a file at a revision (or an experiment's name), None when it lacks it."""
    commit = resolve(cwd, rev)
    proc = _git(cwd, "show", f"{commit}:{path_in_repo}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def commits_touching(cwd: Path, path_in_repo: str) -> list[str]:
    """Every commit, on every ref, that changed the file."""
    proc = _git(cwd, "log", "--all", "--format=%H", "--", path_in_repo)
    return proc.stdout.decode().split()


def experiments(cwd: Path) -> list[str]:
    """Names of the experiments (refs under refs/reprobuild/exps/), sorted."""
    proc = _git(cwd, "for-each-ref", "--format=%(refname)", EXPERIMENT_REFS, check=False)
    return sorted(
        r[len(EXPERIMENT_REFS) :]
        for r in proc.stdout.decode().split()
        if r.startswith(EXPERIMENT_REFS)
    )
