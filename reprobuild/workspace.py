"""Where things are: the pipeline file, the workspace root, the cache, the state folder.

- pipeline file: `-f PATH` (a folder means its reprobuild.yaml), else the first
  reprobuild.yaml from the current folder upward;
- workspace root: the top of the git work tree holding the pipeline file, else
  the pipeline's folder; every path a pipeline names must stay inside it;
- cache: `<root>/cache`, overridden (lowest first) by `cache:` in the pipeline
  file, REPROBUILD_CACHE_DIR, then --cache-dir;
- lockfile: beside the pipeline file, `NAME.yaml` -> `NAME.lock`;
- state folder: `<pipeline folder>/.reprobuild/` (workspace lock, stage logs),
  never in git: it holds its own .gitignore.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

PIPELINE_FILE = "reprobuild.yaml"
LOCK_FILE = "reprobuild.lock"
STATE_DIR = ".reprobuild"


@dataclass(frozen=True)
class Workspace:
    pipeline_file: Path  # absolute
    root: Path  # absolute, the workspace root

    @property
    def dir(self) -> Path:
        """The pipeline's folder: paths in the lockfile are relative to it."""
        return self.pipeline_file.parent

    @property
    def lock_file(self) -> Path:
        """Each pipeline file has its own lockfile: `NAME.yaml` -> `NAME.lock`."""
        return self.pipeline_file.with_suffix(".lock")

    @property
    def state_dir(self) -> Path:
        return self.dir / STATE_DIR

    def display(self, path: Path) -> str:
        """A path as the user should see it: relative to the current folder when inside it."""
        try:
            return os.path.relpath(path)
        except ValueError:  # pragma: no cover - other drive on Windows
            return str(path)


def find_pipeline(file_opt: str | None, cwd: Path | None = None) -> Path:
    cwd = (cwd or Path.cwd()).absolute()
    if file_opt:
        path = Path(os.path.abspath(cwd / file_opt))
        if path.is_dir():
            path = path / PIPELINE_FILE
        if not path.is_file():
            raise UsageError(f"{file_opt}: no pipeline file there")
        return path
    for folder in (cwd, *cwd.parents):
        candidate = folder / PIPELINE_FILE
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no {PIPELINE_FILE} in {cwd} or any folder above it",
        hint="run `reprobuild init`, or name one with -f PATH",
    )


def find_root(pipeline_dir: Path) -> Path:
    """Top of the git work tree holding the pipeline, else the pipeline's folder.

    A `.git` entry (folder, or file for worktrees and submodules) marks the top;
    nothing inside it is read.
    """
    for folder in (pipeline_dir, *pipeline_dir.parents):
        if (folder / ".git").exists():
            return folder
    return pipeline_dir


def open_workspace(file_opt: str | None, cwd: Path | None = None) -> Workspace:
    pipeline = find_pipeline(file_opt, cwd)
    return Workspace(pipeline_file=pipeline, root=find_root(pipeline.parent))


def cache_dir(ws: Workspace, configured: str | None, cli_opt: str | None) -> Path:
    """The cache folder by precedence (lowest first): default, pipeline file, env, CLI."""
    path = ws.root / "cache"
    if configured:
        path = ws.dir / configured
    if os.environ.get("REPROBUILD_CACHE_DIR"):
        path = Path(os.environ["REPROBUILD_CACHE_DIR"])
    if cli_opt:
        path = Path(cli_opt)
    return Path(os.path.abspath(path))
