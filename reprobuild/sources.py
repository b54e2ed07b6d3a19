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
import shlex
from dataclasses import dataclass

from .cache import CorruptObject, MissingObject
from .errors import PipelineError, UsageError
from .fsutil import atomic_write
from .hashing import Meta
from .pipeline import Source

OK, CHANGED, MISSING, UNRECORDED = "ok", "changed", "missing", "unrecorded"
ORIGIN_FIELDS = ("url", "etag", "version_id", "checksum", "mtime")  # pins of an import
OWNER = "tracked source"  # where messages name a stage ("stage: path"); no stage has a space


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
    def recorded_because(self) -> str:
        """Why `build` or `commit` records it (the user's reason lines say what to do)."""
        return "source changed" if self.status == CHANGED else "new source"

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
    """Each source's content for planning: as it is, or (missing) as a build would restore
    it. Stages reading a source then need not hash a large folder a second time."""
    found = {}
    for s in states:
        if s.current is not None:
            found[s.path] = s.current
        elif s.status == MISSING:
            found[s.path] = s.locked
    return found


def record(project, state: SourceState, old_entry: dict | None) -> dict:
    """Store the workspace's content of a source in the cache; its new lockfile entry.

    An import keeps its URL; its version pins (ETag, version id...) stay only
    while the content is the one they describe.
    """
    meta = project.cache.insert(
        project.prober.abspath(state.path), project.hasher, str(project.ws.root)
    )
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


# -- add, import, update ----------------------------------------------------


def add(project, paths: list[str], url: str | None = None) -> list[tuple[str, Meta]]:
    """Track `paths` (relative to the pipeline folder): declare them in the pipeline file,
    store their content in the cache, pin them in the lockfile. Returns (path, Meta).

    The new pipeline file is validated before anything is written; then the
    order is cache, pipeline file, lockfile, so no file ever names content
    the cache does not hold.
    """
    from . import gitignore
    from .wslock import workspace_lock

    declared = {s.path for s in project.pipeline.sources}
    for rel in paths:
        if not os.path.lexists(project.prober.abspath(rel)):
            raise UsageError(f"'{rel}' does not exist")
        inside = project.pipeline.source_of(rel)
        if inside is not None and inside.path != rel:
            raise UsageError(f"'{rel}' is inside the tracked source '{inside.path}'")
        if project.outs.related(rel):
            owner = project.outs.owner[project.outs.related(rel)[0]]
            raise UsageError(
                f"'{rel}' is an out of stage '{owner}' (or overlaps one): "
                "a path is either made by a stage or tracked"
            )
    new = [p for p in dict.fromkeys(paths) if p not in declared]
    in_git = sorted(gitignore.tracked_by_git(project.ws.dir, new))
    if in_git:  # two owners of one path: git would keep committing what the cache holds
        shown = " ".join(shlex.quote(p) for p in in_git)
        raise UsageError(
            f"'{in_git[0]}' is tracked by git; stop tracking it there first "
            f"(its files stay where they are): git rm -r --cached {shown}"
        )
    text = project.ws.pipeline_file.read_text()
    new_text = _declare(project, text, new, url)
    done = []
    with workspace_lock(project.ws.state_dir), project.cache.using():
        entries, _ = project.read_lock()
        writer = project.lock_writer(entries)
        for rel in paths:
            src = Source(rel, url) if rel in new else project.pipeline.source_of(rel)
            state = SourceState(src, CHANGED, None, None)
            entry = record(project, state, writer.sources.get(rel))
            writer.update_source(rel, entry)
            done.append((rel, Meta.from_lock(entry)))
        if new_text != text:
            atomic_write(project.ws.pipeline_file, new_text.encode())
            project.reload()
        writer.close()
        project.save_stats()
        gitignore.sync(project)
    return done


def _declare(project, text: str, paths: list[str], url: str | None) -> str:
    """The pipeline file's text with `paths` added to `sources:`, checked by loading it."""
    from . import graph as graph_mod
    from . import pipeline as pipeline_mod
    from . import pipeline_edit, yamlio

    if not paths:
        return text
    try:
        new_text = pipeline_edit.add_sources(text, [(p, url) for p in paths])
    except ValueError as exc:
        raise UsageError(f"{project.pipeline.file}: {exc}; add the source by hand") from None
    display = project.pipeline.file
    loader = pipeline_mod.Loader(project.ws, display, str(project.cache.root))
    try:
        pipe = loader.load(yamlio.load(new_text, display))
        graph_mod.build(pipe, str(project.ws.dir))
    except PipelineError as exc:  # the file is fine: the paths given are the problem
        raise UsageError(f"cannot track {', '.join(paths)}: {exc.bare}") from None
    return new_text


def import_url(project, url: str, rel: str) -> Meta:
    """Download `url` into `rel`, track it, pin its origin's version."""
    from . import origin

    tracked = project.pipeline.source_of(rel)
    if tracked is not None and tracked.url != url:
        how = f"imported from {tracked.url}" if tracked.url else "added"
        raise UsageError(
            f"'{tracked.path}' is already a tracked source ({how}); "
            "remove it from `sources:` first to import over it"
        )

    ident = origin.identity(url)
    meta = origin.download(project, url, rel)
    full = project.prober.abspath(rel)
    if os.path.lexists(full):
        current = project.prober.meta(rel)
        if current is not None and current.hash != meta.hash and not project.cache.has(current):
            raise UsageError(
                f"'{rel}' exists and its content is in no cache; move it away or "
                f"`reprobuild add {rel}` it first"
            )
    origin.install(project, rel, meta)
    add(project, [rel], url=url)
    _pin(project, rel, ident)
    return meta


def _pin(project, rel: str, ident: dict) -> None:
    from . import origin
    from .wslock import workspace_lock

    with workspace_lock(project.ws.state_dir):
        entries, _ = project.read_lock()
        writer = project.lock_writer(entries)
        entry = dict(writer.sources[rel])
        for k in origin.PIN_FIELDS:
            entry.pop(k, None)
        entry.update(origin.pins_of(ident))
        writer.update_source(rel, entry)
        writer.close()


@dataclass
class UpdateResult:
    path: str
    status: str  # "up to date" | "updated"
    old: str | None = None
    new: str | None = None


def update(project, paths: list[str] | None) -> list[UpdateResult]:
    """Ask each import's origin for its current version; download and pin what changed."""
    from . import origin

    locked = project.read_sources()
    chosen = [s for s in project.pipeline.sources if paths is None or s.path in paths]
    unknown = set(paths or ()) - {s.path for s in chosen}
    if unknown:
        raise UsageError(f"'{sorted(unknown)[0]}' is not a tracked source")
    plain = [s.path for s in chosen if not s.url]
    if paths is not None and plain:
        raise UsageError(f"'{plain[0]}' was added, not imported: it has no origin to ask")
    results = []
    for src in (s for s in chosen if s.url):
        entry = locked.get(src.path) or {}
        ident = origin.identity(src.url)
        if entry.get("url") == src.url and origin.same_version(entry, ident):
            results.append(UpdateResult(src.path, "up to date"))
            continue
        current = project.prober.meta(src.path)
        if current is not None and current.hash != entry.get("hash"):
            project.cache.insert(project.prober.abspath(src.path), project.hasher)
        meta = origin.download(project, src.url, src.path)
        if meta.hash == entry.get("hash"):  # no pins to compare (plain http): same bytes
            results.append(UpdateResult(src.path, "up to date"))
            continue
        origin.install(project, src.path, meta)
        add(project, [src.path], url=src.url)
        _pin(project, src.path, ident)
        results.append(UpdateResult(src.path, "updated", entry.get("hash"), meta.hash))
    return results
