"""Keeping data out of git: `.gitignore` lines for tracked sources and cached outs.

As DVC users expect, each tracked source and each cached out (metrics are
small and reviewable, so they stay in git) is listed in a `.gitignore` next
to it, in a block that reprobuild owns:

    # >>> reprobuild reprobuild.yaml: tracked sources and cached outs (managed; edit outside this block)
    /claims.parquet
    /features
    # <<< reprobuild reprobuild.yaml

Only the lines between the marks are ever written; every other line of the
file is left exactly as it was, and a file reprobuild created holding nothing
but its block is removed when the block empties. A path that git already
tracks is not listed (ignoring it would have no effect but confusion).

The block names its pipeline file, so two pipelines in one folder each keep
their own. Only in a git work tree. What was last written is remembered in
`.reprobuild/NAME.yaml.gitignore.json` (`{folder: [line, ...]}`, folders
relative to the pipeline folder), so an unchanged pipeline costs one small
read and no git call.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .fsutil import atomic_write

# one block per pipeline file: two pipelines in one folder keep their own lines
BEGIN = "# >>> reprobuild {}: tracked sources and cached outs (managed; edit outside this block)"
END = "# <<< reprobuild {}"


def wanted_paths(pipeline) -> list[str]:
    """Paths that should stay out of git: tracked sources and cached non-metric outs."""
    found = [s.path for s in pipeline.sources]
    for stage in pipeline.stages.values():
        found += [o.path for o in stage.outs if o.cache and not o.metric]
    return sorted(set(found))


def sync(project) -> None:
    """Bring every managed block in line with the pipeline; no-op outside git."""
    ws = project.ws
    if not (ws.root / ".git").exists():
        return
    owner = ws.pipeline_file.name
    state_file = ws.state_dir / (owner + ".gitignore.json")
    desired = _desired(project)
    try:
        previous = json.loads(state_file.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == desired:
        return
    tracked = tracked_by_git(ws.dir, wanted_paths(project.pipeline))
    if tracked:
        desired = _desired(project, skip=tracked)
    for folder in sorted(set(desired) | set(previous or {})):
        _write_block(ws.dir / folder, desired.get(folder, []), owner)
    if ws.state_dir.is_dir():
        atomic_write(state_file, json.dumps(desired, sort_keys=True).encode())


def _desired(project, skip: frozenset | set = frozenset()) -> dict[str, list[str]]:
    """{folder: lines}; `/NAME` matches a file or a folder, so nothing needs a stat."""
    by_folder: dict[str, set[str]] = {}
    for path in wanted_paths(project.pipeline):
        if path not in skip:
            folder, name = os.path.split(path)
            by_folder.setdefault(folder or ".", set()).add("/" + name)
    return {f: sorted(lines) for f, lines in sorted(by_folder.items())}


def tracked_by_git(base: Path, paths: list[str]) -> set[str]:
    """Of `paths` (relative to `base`), those git tracks (the path or a file below it);
    none outside a git repository."""
    if not paths:
        return set()
    try:
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--", *paths],
            cwd=base,
            capture_output=True,
            check=False,
        )
    except OSError:
        return set()
    if proc.returncode != 0:
        return set()
    listed = [p for p in proc.stdout.decode(errors="replace").split("\0") if p]
    return {p for p in paths if any(f == p or f.startswith(p + "/") for f in listed)}


def _write_block(folder: Path, lines: list[str], owner: str) -> None:
    path = folder / ".gitignore"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = None
    if text is None and not lines:
        return
    outside, had_block = split_block(text or "", owner)
    if not lines and not had_block:
        return
    if not lines and not "".join(outside).strip():
        path.unlink()  # it held nothing but our block
        return
    body = list(outside)
    if lines:
        if body and body[-1].strip():
            body.append("")
        body += [BEGIN.format(owner), *lines, END.format(owner)]
    new = "\n".join(body).rstrip("\n") + "\n"
    if new != text:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, new.encode())


def split_block(text: str, owner: str) -> tuple[list[str], bool]:
    """(the lines outside `owner`'s block, whether there was one)."""
    begin, end = BEGIN.format(owner), END.format(owner)
    outside, inside, had = [], False, False
    for line in text.splitlines():
        if line == begin:
            inside, had = True, True
        elif line == end and inside:
            inside = False
        elif not inside:
            outside.append(line)
    while had and outside and not outside[-1].strip():
        outside.pop()  # the blank line we put before the block
    return outside, had
