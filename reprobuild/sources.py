"""Tracked sources: the data no stage makes, versioned with the code.

A source is declared in the pipeline file (`sources:`, so it is reviewable),
its content is stored in the cache like a stage's out, and the lockfile's
`sources:` section pins it (lockfile.py):

    PATH: {hash, size[, nfiles]}                               # reprobuild add
    PATH: {hash, size[, nfiles], url, etag, version_id, ...}   # reprobuild import (origin.py)

A source is in one of four states, compared through the stat cache (so an
unchanged 100,000-file folder costs one stat per file, no reads):

    ok          the workspace holds the pinned content
    changed     the workspace differs from the pin: `source changed: PATH`
    missing     pinned, not in the workspace (a fresh clone): `missing: PATH (tracked source; reprobuild pull)`
    unrecorded  declared, never pinned: `source not recorded: PATH (reprobuild add PATH)`

`add`, `commit` and `build` record a changed or unrecorded source: its content
goes into the cache first, then the lockfile names it, so the lockfile never
names bytes that exist nowhere else. `build`, `checkout` and `pull` bring a
missing source back from the cache (and the remote).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .cache import CorruptObject, MissingObject
from .hashing import Meta
from .pipeline import Source

OK, CHANGED, MISSING, UNRECORDED = "ok", "changed", "missing", "unrecorded"
ORIGIN_FIELDS = ("url", "etag", "version_id", "checksum", "mtime")  # pins of an import


@dataclass
class SourceState:
    source: Source
    status: str
    current: Meta | None  # in the workspace now
    locked: Meta | None  # pinned in the lockfile

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def reason(self) -> str | None:
        if self.status == CHANGED:
            return f"source changed: {self.path}"
        if self.status == MISSING:
            return f"missing: {self.path} (tracked source; reprobuild pull)"
        if self.status == UNRECORDED:
            if self.current is None:
                return f"missing: {self.path} (tracked source, never added)"
            return f"source not recorded: {self.path} (reprobuild add {self.path})"
        return None


def check(project, locked: dict, only: list[Source] | None = None) -> list[SourceState]:
    """The state of each declared source (or of `only`) against the lockfile's pins."""
    states = []
    for src in project.pipeline.sources if only is None else only:
        entry = locked.get(src.path)
        pinned = Meta.from_lock(entry) if isinstance(entry, dict) else None
        current = project.prober.meta(src.path)
        if pinned is None:
            status = UNRECORDED
        elif current is None:
            status = MISSING
        elif current.hash != pinned.hash:
            status = CHANGED
        else:
            status = OK
        states.append(SourceState(src, status, current, pinned))
    return states


def needed_by(project, names: list[str]) -> list[Source]:
    """Sources the stages read: a dep or code path equal to, inside, or holding one."""
    wanted: dict[str, Source] = {}
    for name in names:
        stage = project.pipeline.stages[name]
        for dep in (*stage.code, *stage.deps):
            src = project.pipeline.source_of(dep.path)
            if src is not None:
                wanted[src.path] = src
            else:
                prefix = dep.path + "/"
                for s in project.pipeline.sources:
                    if s.path.startswith(prefix):
                        wanted[s.path] = s
    return [s for s in project.pipeline.sources if s.path in wanted]


def known_contents(states: list[SourceState]) -> dict[str, Meta]:
    """Pinned content of missing sources: what a build would restore, for planning."""
    return {s.path: s.locked for s in states if s.status == MISSING}


def record(project, state: SourceState, old_entry: dict | None) -> dict:
    """Store the workspace's content of a source in the cache; its new lockfile entry.

    An import keeps its URL; its version pins (ETag, version id...) stay only
    while the content is the one they describe.
    """
    meta = project.cache.insert(project.prober.abspath(state.path), project.hasher)
    entry = meta.to_lock()
    old = old_entry or {}
    if state.source.url:
        entry["url"] = state.source.url
        if old.get("hash") == meta.hash and old.get("url") == state.source.url:
            entry.update({k: old[k] for k in ORIGIN_FIELDS if k in old and k != "url"})
    return entry


def restore(project, state: SourceState) -> bool:
    """Bring a missing source's pinned content back from the local cache; False on a miss."""
    try:
        project.cache.restore(state.locked, project.prober.abspath(state.path), project.hasher)
        return True
    except (MissingObject, CorruptObject):
        return False


def metas(locked: dict, paths=None) -> list[tuple[str, Meta]]:
    """(path, Meta) of pinned sources (all, or those in `paths`), for push, pull and gc."""
    found = []
    for path, entry in sorted(locked.items()):
        if paths is not None and path not in paths:
            continue
        meta = Meta.from_lock(entry)
        if meta is not None:
            found.append((path, meta))
    return found


def undeclared(project, locked: dict) -> list[str]:
    """Pinned paths the pipeline no longer declares (their entries are dropped)."""
    declared = {s.path for s in project.pipeline.sources}
    return [p for p in locked if p not in declared]


def relative(project, path: str) -> str:
    """A command-line path (relative to the current folder) as the pipeline names it."""
    full = os.path.abspath(path)
    return os.path.relpath(full, project.ws.dir).replace(os.sep, "/").rstrip("/")
