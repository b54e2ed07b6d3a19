"""The stage graph: edges inferred from paths, checked for overlaps and cycles.

Stage B follows stage A when a dep or code path of B equals, lies inside, or
contains an out of A. Lookups go through a sorted list of out paths, so
building the graph is O(n log n) in the number of paths, not O(n^2).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from .errors import PipelineError, UsageError
from .pipeline import Pipeline, Stage

TYPE_CHECKING = False  # typing's, which type checkers honour, without importing typing (2 ms)
if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True)
class OutIndex:
    """Every out path of the pipeline, for 'who makes this path' questions."""

    paths: list[str]  # sorted
    owner: dict[str, str]  # out path -> stage name

    @classmethod
    def build(cls, stages: dict[str, Stage]) -> OutIndex:
        owner = {}
        for stage in stages.values():
            for out in stage.outs:
                owner[out.path] = stage.name
        return cls(sorted(owner), owner)

    def related(self, path: str) -> list[str]:
        """Out paths equal to `path`, containing it, or inside it."""
        found = []
        probe = path
        while probe not in ("", "."):  # outs that contain the path (or equal it)
            if probe in self.owner:
                found.append(probe)
            probe = os.path.dirname(probe)
        prefix = path + "/" if path != "." else ""
        i = bisect.bisect_left(self.paths, prefix)
        while i < len(self.paths) and self.paths[i].startswith(prefix):  # outs inside it
            found.append(self.paths[i])
            i += 1
        return found


def build(pipeline: Pipeline, root_dir: str, check_missing: bool = True) -> nx.DiGraph:
    """The DAG of stages (nodes are stage names, in file order); raises on bad structure.

    `root_dir` is the pipeline folder, for the check (unless not `check_missing`,
    as when `import` is about to bring one) that deps no stage makes exist.
    """
    import networkx as nx  # not on the no-op path: the plan cache holds the edges

    stages = pipeline.stages
    g = nx.DiGraph()
    g.add_nodes_from(stages)
    index = OutIndex.build(stages)
    _check_overlapping_outs(pipeline, index)
    for stage in stages.values():
        for dep in (*stage.code, *stage.deps):
            producers = index.related(dep.path)
            for out_path in producers:
                upstream = index.owner[out_path]
                if upstream != stage.name:
                    g.add_edge(upstream, stage.name)
                else:
                    raise PipelineError(
                        f"'{dep.path}' is both a dep and an out of the stage",
                        file=pipeline.file,
                        line=dep.line,
                        stage=stage.name,
                    )
            if (
                check_missing
                and not producers
                and pipeline.source_of(dep.path) is None  # a fresh clone pulls it
                and not os.path.exists(os.path.join(root_dir, dep.path))
            ):
                kind = "code file" if dep in stage.code else "dep"
                raise PipelineError(
                    f"{kind} '{dep.path}' does not exist and no stage makes it",
                    file=pipeline.file,
                    line=dep.line,
                    stage=stage.name,
                )
    _check_cycles(g, pipeline)
    return g


def _check_overlapping_outs(pipeline: Pipeline, index: OutIndex) -> None:
    seen: dict[str, str] = {}
    for stage in pipeline.stages.values():
        for out in stage.outs:
            if out.path in seen and seen[out.path] != stage.name:
                raise PipelineError(
                    f"out '{out.path}' is also an out of stage '{seen[out.path]}'",
                    file=pipeline.file,
                    line=out.line,
                    stage=stage.name,
                )
            if out.path in seen:
                raise PipelineError(
                    f"out '{out.path}' is declared twice",
                    file=pipeline.file,
                    line=out.line,
                    stage=stage.name,
                )
            seen[out.path] = stage.name
    for path in index.paths:
        for other in index.related(path):
            if other != path:
                a, b = index.owner[path], index.owner[other]
                stage = pipeline.stages[b]
                line = next(o.line for o in stage.outs if o.path == other)
                raise PipelineError(
                    f"out '{other}' overlaps out '{path}' of stage '{a}'",
                    file=pipeline.file,
                    line=line,
                    stage=b,
                )


def from_edges(names, edges) -> nx.DiGraph:
    """The graph `build` made, from its nodes and its edges in the order `edges_of` gives."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from(edges)
    return g


def edges_of(g: nx.DiGraph) -> list[tuple[str, str]]:
    """Edges in the order `build` added them (into each stage, in file order), so that
    `from_edges` gives the same order of successors and predecessors."""
    return [(u, v) for v in g.nodes for u in g.predecessors(v)]


def _check_cycles(g: nx.DiGraph, pipeline: Pipeline) -> None:
    import networkx as nx

    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return
    names = [u for u, _ in cycle] + [cycle[0][0]]
    first = pipeline.stages[names[0]]
    raise PipelineError(
        "cycle: " + " -> ".join(names), file=pipeline.file, line=first.line, stage=names[0]
    )


def order(g: nx.DiGraph) -> list[str]:
    """Stages in a stable topological order: file order among ready stages."""
    import networkx as nx

    position = {name: i for i, name in enumerate(g.nodes)}
    return list(nx.lexicographical_topological_sort(g, key=position.__getitem__))


def select(g: nx.DiGraph, pipeline: Pipeline, targets: list[str], pipeline_dir: str) -> list[str]:
    """Stages needed for `targets` (stage names, stage-name prefixes of foreach groups,
    or output paths), upstream included, in build order. No targets: all of them."""
    import networkx as nx

    if not targets:
        return order(g)
    index = OutIndex.build(pipeline.stages)
    wanted: set[str] = set()
    for target in targets:
        names = resolve_target(target, pipeline, index, pipeline_dir)
        for name in names:
            wanted.add(name)
            wanted.update(nx.ancestors(g, name))
    return [n for n in order(g) if n in wanted]


def resolve_target(
    target: str, pipeline: Pipeline, index: OutIndex, pipeline_dir: str
) -> list[str]:
    if target in pipeline.stages:
        return [target]
    group = [n for n in pipeline.stages if n.startswith(target + "@")]
    if group:
        return group
    # an output path: relative to the current folder, else to the pipeline's folder
    for base in (os.getcwd(), pipeline_dir):
        rel = (
            os.path.relpath(os.path.join(base, target), pipeline_dir)
            .replace(os.sep, "/")
            .rstrip("/")
        )
        owners = {index.owner[p] for p in index.related(rel)}
        if owners:
            return sorted(owners)
    raise UsageError(f"'{target}' is neither a stage nor an out of one")
