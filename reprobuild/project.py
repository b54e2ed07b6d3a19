"""A loaded project: workspace, pipeline, graph, cache and hashing, opened once per command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from . import graph as graph_mod
from . import lockfile
from . import pipeline as pipeline_mod
from .cache import Cache
from .decision import Prober
from .graph import OutIndex
from .hashing import Hasher, StatCache
from .workspace import Workspace, cache_dir, open_workspace


@dataclass
class Project:
    ws: Workspace
    pipeline: pipeline_mod.Pipeline
    graph: nx.DiGraph
    cache: Cache
    hasher: Hasher
    prober: Prober
    outs: OutIndex

    @classmethod
    def open(
        cls, file_opt: str | None = None, cache_opt: str | None = None, cwd: Path | None = None
    ) -> Project:
        ws = open_workspace(file_opt, cwd)
        pipe = pipeline_mod.load(ws, cache_opt)
        g = graph_mod.build(pipe, str(ws.dir))
        cache = Cache(cache_dir(ws, pipe.cache, cache_opt), link=pipe.link)
        if pipe.trusted_keys or os.environ.get("REPROBUILD_TRUSTED_KEYS"):
            from .signature import trust_for

            cache.trust = trust_for(pipe.trusted_keys)
        hasher = Hasher(StatCache(cache.stat_cache_path()))
        return cls(
            ws, pipe, g, cache, hasher, Prober(str(ws.dir), hasher), OutIndex.build(pipe.stages)
        )

    def read_lock(self) -> tuple[dict, str | None]:
        return lockfile.read(self.ws.lock_file, self.parsed_lock)

    @property
    def parsed_lock(self) -> Path:
        return self.ws.state_dir / "lock.json"

    def lock_writer(self, entries: dict) -> lockfile.LockWriter:
        return lockfile.LockWriter(
            self.ws.lock_file,
            entries,
            known=set(self.pipeline.stages),
            parsed_copy=self.parsed_lock,
        )

    def select(self, targets) -> list[str]:
        return graph_mod.select(self.graph, self.pipeline, list(targets), str(self.ws.dir))

    def sweep_lock_temps(self) -> None:
        """Temp lockfiles left by a killed process (only call while holding the workspace lock)."""
        for tmp in self.ws.dir.glob(".tmp-*-" + self.ws.lock_file.name):
            tmp.unlink(missing_ok=True)

    def save_stats(self) -> None:
        if self.cache.root.is_dir():
            self.hasher.stats.save()
