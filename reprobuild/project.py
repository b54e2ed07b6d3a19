"""A loaded project: workspace, pipeline, graph, cache and hashing, opened once per command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import graph as graph_mod
from . import lockfile
from . import pipeline as pipeline_mod
from . import plancache as plan_mod
from .cache import Cache
from .decision import Prober
from .graph import OutIndex
from .hashing import Hasher, StatCache
from .packages import Installed
from .workspace import Workspace, cache_dir, open_workspace

TYPE_CHECKING = False  # typing's, which type checkers honour, without importing typing (2 ms)
if TYPE_CHECKING:
    import networkx as nx


@dataclass
class Project:
    ws: Workspace
    pipeline: pipeline_mod.Pipeline
    _graph: nx.DiGraph | None  # from `edges` when first asked for (networkx is slow)
    cache: Cache
    hasher: Hasher
    prober: Prober
    outs: OutIndex
    _lock_memo: tuple | None = field(default=None, repr=False)  # (file identity, read_all)
    edges: list[tuple[str, str]] | None = None  # graph.edges_of, when _graph is None
    order: list[str] | None = None  # graph.order, from the plan cache
    plan_used: bool = False  # the pipeline came from the plan cache (plancache.py)

    @property
    def graph(self) -> nx.DiGraph:
        if self._graph is None:
            self._graph = graph_mod.from_edges(self.pipeline.stages, self.edges or ())
        return self._graph

    @graph.setter
    def graph(self, g: nx.DiGraph) -> None:
        self._graph, self.edges, self.order, self._adjacent = g, None, None, None

    _adjacent = None

    def predecessors(self, name: str) -> list[str]:
        return self._adjacency()[0].get(name, [])

    def successors(self, name: str) -> list[str]:
        return self._adjacency()[1].get(name, [])

    def _adjacency(self) -> tuple[dict, dict]:
        """{stage: predecessors}, {stage: successors} in the graph's own order, without it."""
        if self._adjacent is None:
            if self.edges is None:
                g = self.graph
                self._adjacent = (
                    {n: list(g.predecessors(n)) for n in g},
                    {n: list(g.successors(n)) for n in g},
                )
            else:
                preds: dict[str, list[str]] = {}
                succs: dict[str, list[str]] = {}
                for u, v in self.edges:
                    preds.setdefault(v, []).append(u)
                    succs.setdefault(u, []).append(v)
                self._adjacent = (preds, succs)
        return self._adjacent

    @classmethod
    def open(
        cls,
        file_opt: str | None = None,
        cache_opt: str | None = None,
        cwd: Path | None = None,
        check_missing: bool = True,
        before_parse=None,
    ) -> Project:
        """`before_parse(ws)` runs when the plan cache cannot serve, before the pipeline
        file is parsed (a build starts the machine probe there, to run meanwhile)."""
        ws = open_workspace(file_opt, cwd)
        cache = hasher = None
        doc = plan_mod.read(ws)
        if doc is not None:
            settings = plan_mod.settings(doc)
            cache = Cache(cache_dir(ws, settings[0], cache_opt), link=settings[1])
            hasher = Hasher(StatCache(cache.stat_cache_path(), cache.make_dirs))
            found = plan_mod.check(doc, ws, hasher, check_missing, cache_opt)
            if found is not None:
                pipe = found.pipeline
                return cls._made(ws, pipe, None, cache, hasher, found.edges, found.order, True)
        if before_parse is not None:
            before_parse(ws)
        started = plan_mod.started()
        seen = pipeline_mod.Observed()
        pipe = pipeline_mod.load(ws, cache_opt, seen)
        g = graph_mod.build(pipe, str(ws.dir), check_missing)
        if cache is None or (pipe.cache, pipe.link) != plan_mod.settings(doc):
            cache = Cache(cache_dir(ws, pipe.cache, cache_opt), link=pipe.link)
            hasher = Hasher(StatCache(cache.stat_cache_path(), cache.make_dirs))
        plan = plan_mod.Plan(pipe, graph_mod.order(g), graph_mod.edges_of(g))
        plan_mod.save(ws, plan, seen, hasher, started, cache_opt)
        return cls._made(ws, pipe, g, cache, hasher, None, plan.order, False)

    @classmethod
    def _made(cls, ws, pipe, g, cache, hasher, edges, order, plan_used) -> Project:
        if pipe.trusted_keys or os.environ.get("REPROBUILD_TRUSTED_KEYS"):
            from .signature import trust_for

            cache.trust = trust_for(pipe.trusted_keys)
        installed = Installed(cache.root / "packages.json")
        prober = Prober(str(ws.dir), hasher, installed)
        outs = OutIndex.build(pipe.stages)
        return cls(
            ws, pipe, g, cache, hasher, prober, outs, edges=edges, order=order, plan_used=plan_used
        )

    def reload(self) -> None:
        """Read the pipeline file again (after reprobuild itself edited it)."""
        self.pipeline = pipeline_mod.load(self.ws, str(self.cache.root))
        self.graph = graph_mod.build(self.pipeline, str(self.ws.dir))
        self.outs = OutIndex.build(self.pipeline.stages)

    def read_lock(self) -> tuple[dict, str | None]:
        stages, _, problem = self._read_lock_all()
        return stages, problem

    def lock_at_rev(self, rev: str) -> tuple[dict, dict]:
        """The stages and sources of this lockfile as it was at a git revision."""
        from . import gitrev
        from .errors import UsageError

        top = gitrev.require_repo(self.ws.dir)
        rel = self.ws.lock_file.resolve().relative_to(top.resolve()).as_posix()
        text = gitrev.show(top, rev, rel)
        if text is None:
            raise UsageError(f"revision '{rev}' has no {rel}")
        stages, sources, problem = lockfile.parse_all(text, f"{rel} at {rev}")
        if problem:
            raise UsageError(problem)
        return stages, sources

    def _read_lock_all(self) -> tuple[dict, dict, str | None]:
        """The lockfile read once per version of it (each write is a rename: a new inode),
        so its warnings are printed once; callers get their own copies to change."""
        try:
            st = os.stat(self.ws.lock_file)
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            identity = None
        if self._lock_memo is None or self._lock_memo[0] != identity:
            self._lock_memo = (identity, lockfile.read_all(self.ws.lock_file, self.parsed_lock))
        stages, sources, problem = self._lock_memo[1]
        return dict(stages), dict(sources), problem

    @property
    def parsed_lock(self) -> Path:
        return self.ws.state_dir / (self.ws.lock_file.name + ".json")

    def read_sources(self) -> dict:
        """The lockfile's `sources:` section: {path: entry}."""
        return self._read_lock_all()[1]

    def lock_writer(self, entries: dict, sources: dict | None = None) -> lockfile.LockWriter:
        """Writes `entries` (stages); the sources section is kept as read unless given."""
        return lockfile.LockWriter(
            self.ws.lock_file,
            entries,
            known=set(self.pipeline.stages),
            parsed_copy=self.parsed_lock,
            sources=self.read_sources() if sources is None else sources,
            before_write=self.cache.commit,  # group commit: what it names is on disk first
        )

    def select(self, targets) -> list[str]:
        if not targets and self.order is not None:
            return list(self.order)
        return graph_mod.select(self.graph, self.pipeline, list(targets), str(self.ws.dir))

    def resolve(self, targets) -> list[str]:
        """The stages `targets` name (stage names, foreach groups, out paths), no upstream."""
        names = []
        for t in targets:
            names += graph_mod.resolve_target(t, self.pipeline, self.outs, str(self.ws.dir))
        return list(dict.fromkeys(names))

    def relative(self, path: str) -> str:
        """A command-line path (relative to the current folder) as the pipeline names it."""
        rel = os.path.relpath(os.path.abspath(path), self.ws.dir)
        return rel.replace(os.sep, "/").rstrip("/")

    def split_sources(self, targets) -> tuple[list[str], list[str]]:
        """(tracked source paths, other targets) among command-line targets."""
        declared = {s.path for s in self.pipeline.sources}
        paths, rest = [], []
        for t in targets:
            rel = self.relative(t)
            if rel in declared:
                paths.append(rel)
            else:
                rest.append(t)
        return paths, rest

    def sweep_lock_temps(self) -> None:
        """Temp lockfiles left by a killed process (only call while holding the workspace lock)."""
        for tmp in self.ws.dir.glob(".tmp-*-" + self.ws.lock_file.name):
            tmp.unlink(missing_ok=True)

    def save_stats(self) -> None:
        if self.cache.root.is_dir():
            self.hasher.stats.save()
            if self.prober.installed is not None:
                self.prober.installed.save()
