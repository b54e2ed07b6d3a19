"""Removing cache objects and run records that no kept lockfile refers to.

Kept lockfiles: every `NAME.lock` beside a `NAME.yaml` in the workspace
(their stages' outs and run records, and their tracked sources; so pipelines
that share one cache keep each other's objects), the experiments' versions of
them (`refs/reprobuild/exps/`), and with `all_commits` every version of them
in git history. The caller holds the cache's exclusive lock

Environments (`cache/envs/`, envs.py) go too when no kept lock entry names
their lock files' hashes.
(cache.py), so no build, in this workspace or another sharing the cache, has
objects in flight that no lockfile names yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import gitrev, lockfile
from .cache import Cache, CorruptObject, MissingObject
from .errors import CacheError, GitError
from .fsutil import remove_path
from .workspace import STATE_DIR


@dataclass
class GcResult:
    objects: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    bytes: int = 0
    lockfiles: int = 0
    envs: list[str] = field(default_factory=list)  # uv-built environments (envs.py)


def workspace_lockfiles(root: Path, cache_root: Path, extra=()) -> list[Path]:
    """Every NAME.lock beside a NAME.yaml below root, hidden folders included (`.ml/`), and
    `extra`."""
    found = [Path(p) for p in extra if Path(p).is_file()]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in (".git", STATE_DIR) and Path(dirpath, d) != cache_root
        )
        for name in filenames:  # NAME.lock beside its pipeline file NAME.yaml
            found_here = Path(dirpath, name)
            if name.endswith(".lock") and name[:-5] + ".yaml" in filenames:
                if found_here not in found:
                    found.append(found_here)
    return found


def kept_entries(
    root: Path, cache_root: Path, all_commits: bool, extra=()
) -> tuple[list[dict], int]:
    """Stage entries of every kept lockfile, and how many lockfile versions were read."""
    entries, versions = [], 0
    files = workspace_lockfiles(root, cache_root, extra)
    for path in files:
        stages, sources, problem = lockfile.read_all(path)
        if problem:  # e.g. merge-conflict markers: what it names is unknown, so keep everything
            raise CacheError(
                f"{path}: {problem.split(';')[0]}; gc removes nothing until it is fixed"
            )
        entries.extend(stages.values())
        entries.append({"outs": sources})  # tracked sources: kept like outs, no run record
        versions += 1
    exp_entries, exp_versions = _experiment_entries(root, files)
    entries.extend(exp_entries)
    versions += exp_versions
    if all_commits:
        top = gitrev.require_repo(root)
        paths = {str(p.resolve().relative_to(top.resolve())) for p in files}
        for rel in sorted(paths):
            for commit in gitrev.commits_touching(top, rel):
                text = gitrev.show(top, commit, rel)
                if text:
                    entries += _entries_of(text, f"{rel} at {commit[:12]}")
                    versions += 1
    return entries, versions


def _entries_of(text: str, where: str) -> list[dict]:
    """A lockfile version's stage entries and its sources (kept like outs, no run record);
    one that cannot be read stops gc: what it names is unknown."""
    stages, sources, problem = lockfile.parse_all(text)
    if problem:
        raise CacheError(
            f"{where}: {problem.split(';')[0]}; gc removes nothing until it can read every version"
        )
    return [*stages.values(), {"outs": sources}]


def _experiment_entries(root: Path, files: list[Path]) -> tuple[list[dict], int]:
    """What the experiments' lockfiles name (experiments.py): `exp apply` needs it later."""
    from . import experiments

    try:
        top = gitrev.require_repo(root)
    except GitError:
        return [], 0
    rels = sorted({Path(os.path.relpath(p.resolve(), top.resolve())).as_posix() for p in files})
    entries, versions = [], 0
    for name, rel, text in experiments.lockfile_texts(top, rels):
        entries += _entries_of(text, f"{rel} of experiment {name}")
        versions += 1
    return entries, versions


def collect(
    cache: Cache, root: Path, all_commits: bool = False, dry_run: bool = False, extra=()
) -> GcResult:
    """`extra`: lockfiles kept wherever they are (the one of the pipeline gc was pointed at)."""
    entries, versions = kept_entries(root, cache.root, all_commits, extra)
    keep_objects: set[tuple[str, bool]] = set()
    keep_runs: set[str] = set()
    for entry in entries:
        if "key" in entry:
            keep_runs.add(entry["key"])
        for d in (entry.get("outs") or {}).values():
            if not isinstance(d, dict) or "hash" not in d:
                continue
            is_dir = d.get("nfiles") is not None
            keep_objects.add((d["hash"], is_dir))
            if is_dir:
                try:
                    keep_objects.update((e["hash"], False) for e in cache.read_manifest(d["hash"]))
                except (MissingObject, CorruptObject):
                    pass
    result = GcResult(lockfiles=versions)
    for path, digest, is_dir in list(cache.iter_objects()):
        if (digest, is_dir) in keep_objects:
            continue
        result.objects.append(digest + (".dir" if is_dir else ""))
        result.bytes += path.stat().st_size
        if not dry_run:
            path.unlink()  # needs the folder's write permission only (a group cache)
    for path, key in list(cache.iter_runs()):
        if key in keep_runs:
            continue
        result.runs.append(key)
        if not dry_run:
            path.unlink()
    from .envs import unreferenced

    for path in unreferenced(cache.root, entries):
        if path.is_dir():  # else the lock file of a removed environment
            result.envs.append(path.name)
        if not dry_run:
            remove_path(path)
    if not dry_run:
        cache.sweep_tmp()
    return result
