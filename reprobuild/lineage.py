"""`reprobuild lineage PATH`: where an artifact came from, read from a lockfile.

The lineage walks lock entries only (the working tree's lockfile, or a git
revision's with `--rev`), so it is what was recorded, even for stages the
pipeline no longer has. A stage's upstream is the stage whose locked out
equals, contains or lies inside one of its code or dep paths; a path no stage
made is a source, where the walk stops. Stages the artifact does not depend
on never appear.

Out of date: each stage of the lineage is checked against the workspace with
`engine.plan()` using these lock entries (the same decision `status` makes);
a stage that would not be skipped, or that the pipeline no longer has, no
longer matches the workspace. Reasons read from the lineage to the workspace:
`param changed: train.depth 3 -> 4` means 3 in the lineage, 4 now.

JSON (`--json`), stable:

    {
      "schema": 1,
      "path": "models/model.txt",     # the artifact, relative to the pipeline folder
      "rev": "workspace" | REV,       # whose lockfile
      "stage": "train",               # the stage that made it
      "out_of_date": false,           # some stage of the lineage no longer matches the workspace
      "stages": {                     # the maker first, then upstream, breadth first
        "train": {"key": ..., "cmd": ..., "code": {PATH: {hash, size}},    # the lock entry as it is
                  "deps": {...}, "params": {KEY: VALUE}, "env": {...}, "outs": {...},  # ("wdir" when set)
                  "upstream": {"data/clean.txt": ["prepare"]},   # code/dep path -> stages that made it
                  "out_of_date": false, "reasons": []}
      },
      "sources": {"data/raw.txt": {"hash": ..., "size": ...}}     # code and deps no stage made
    }
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import UsageError
from .graph import OutIndex

SCHEMA = 1
GONE = "not in the pipeline any more"


@dataclass
class Lineage:
    path: str
    rev: str
    stage: str
    stages: dict[str, dict] = field(
        default_factory=dict
    )  # name -> entry + upstream/out_of_date/reasons
    sources: dict[str, dict] = field(default_factory=dict)

    @property
    def out_of_date(self) -> bool:
        return any(s["out_of_date"] for s in self.stages.values())

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "path": self.path,
            "rev": self.rev,
            "stage": self.stage,
            "out_of_date": self.out_of_date,
            "stages": self.stages,
            "sources": self.sources,
        }


def lock_index(entries: dict) -> OutIndex:
    """Who made each locked out (folders without their trailing '/')."""
    owner = {}
    for name, entry in entries.items():
        for path in entry.get("outs") or {}:
            owner[path.rstrip("/")] = name
    return OutIndex(sorted(owner), owner)


def resolve(path: str, entries: dict, index: OutIndex, pipeline_dir: str) -> tuple[str, str]:
    """(path relative to the pipeline folder, the stage that made it). PATH is relative to the
    current folder, else to the pipeline folder; a stage name is taken for its first out."""
    for base in (os.getcwd(), pipeline_dir):
        rel = (
            os.path.relpath(os.path.join(base, path), pipeline_dir).replace(os.sep, "/").rstrip("/")
        )
        maker = _maker(rel, index)
        if maker:
            return rel, maker
    if path in entries:
        outs = list(entries[path].get("outs") or {})
        return (outs[0].rstrip("/") if outs else path), path
    raise UsageError(f"no stage in the lockfile made '{path}' (a source file, or not built yet)")


def _maker(rel: str, index: OutIndex) -> str | None:
    """The stage whose out is `rel` or a folder holding it."""
    probe = rel
    while probe not in ("", ".", "/"):
        if probe in index.owner:
            return index.owner[probe]
        probe = os.path.dirname(probe)
    return None


def trace(
    path: str, entries: dict, rev: str, pipeline_dir: str, pins: dict | None = None
) -> Lineage:
    """The lineage of `path`: its maker and every upstream stage, down to the sources.

    `pins` (the lockfile's `sources:`) marks which sources are tracked: their bytes
    are in the cache (and a remote), and an import names its origin."""
    index = lock_index(entries)
    rel, maker = resolve(path, entries, index, pipeline_dir)
    lineage = Lineage(rel, rev, maker)
    todo = [maker]
    while todo:
        name = todo.pop(0)
        if name in lineage.stages:
            continue
        entry = dict(entries[name])
        upstream: dict[str, list[str]] = {}
        for group in ("code", "deps"):
            for dep, meta in (entry.get(group) or {}).items():
                makers = sorted({index.owner[p] for p in index.related(dep.rstrip("/"))} - {name})
                if makers:
                    upstream[dep] = makers
                    todo += makers
                else:
                    lineage.sources[dep] = {**meta, **_tracked(dep.rstrip("/"), pins or {})}
        entry.update(upstream=upstream, out_of_date=False, reasons=[])
        lineage.stages[name] = entry
    lineage.sources = dict(sorted(lineage.sources.items()))
    return lineage


def _tracked(path: str, pins: dict) -> dict:
    """{"tracked": SOURCE[, "url": URL]} when a tracked source is or holds `path`."""
    for src, pin in pins.items():
        if path == src or path.startswith(src + "/"):
            return {"tracked": src, **({"url": pin["url"]} if "url" in pin else {})}
    return {}


def check_workspace(lineage: Lineage, project, entries: dict) -> None:
    """Mark the stages of the lineage that no longer match the workspace, with the reasons."""
    from .engine import plan

    known = [n for n in lineage.stages if n in project.pipeline.stages]
    for name in lineage.stages:
        if name not in project.pipeline.stages:
            lineage.stages[name].update(out_of_date=True, reasons=[GONE])
    if not known:
        return
    for d in plan(project, project.select(known), entries):
        if d.stage in lineage.stages and d.stale:
            lineage.stages[d.stage].update(out_of_date=True, reasons=list(d.reasons))


# -- the tree for people -------------------------------------------------------------


def short(digest) -> str:
    return str(digest)[:8] if digest else "?"


def tree(lineage: Lineage):
    """A rich Tree: the artifact, its maker, and each dep's maker below it (a stage met twice
    is shown once, then named)."""
    from rich.tree import Tree

    from .safetext import markup_escape as escape

    flag = "  [red]out of date[/]" if lineage.out_of_date else "  [green]up to date[/]"
    root = Tree(
        f"[bold]{escape(lineage.path)}[/]{flag}"
        + (f"  [dim](lockfile at {escape(lineage.rev)})[/]" if lineage.rev != "workspace" else "")
    )
    _stage_branch(root, lineage, lineage.stage, set())
    return root


def _stage_branch(parent, lineage: Lineage, name: str, shown: set) -> None:
    from .safetext import markup_escape as escape

    entry = lineage.stages[name]
    state = (
        f"[red]out of date: {escape(', '.join(entry['reasons']))}[/]"
        if entry["out_of_date"]
        else "[green]up to date[/]"
    )
    if name in shown:
        parent.add(f"[bold]{escape(name)}[/] [dim](shown above)[/]")
        return
    shown.add(name)
    node = parent.add(f"[bold]{escape(name)}[/]  key {entry.get('key', '?')[:12]}  {state}")
    for label, text in _facts(entry):
        node.add(f"[dim]{label}[/] {escape(text)}")
    inputs = [
        (dep, meta, group)
        for group in ("deps", "code")
        for dep, meta in (entry.get(group) or {}).items()
        if group == "deps" or dep in entry["upstream"]
    ]  # source code files are listed under code
    deps = node.add("[dim]deps[/]") if inputs else None
    for dep, meta, group in inputs:
        makers = entry["upstream"].get(dep, [])
        kind = " (code)" if group == "code" else ""
        where = (
            f"  [dim]made by {escape(', '.join(makers))}[/]"
            if makers
            else _source_note(lineage.sources.get(dep, {}))
        )
        branch = deps.add(f"{escape(dep)}{kind} {short(_hash(meta))}{where}")
        for maker in makers:
            _stage_branch(branch, lineage, maker, shown)


def _hash(meta):
    return meta.get("hash") if isinstance(meta, dict) else None


def _facts(entry: dict) -> list[tuple[str, str]]:
    cmd = entry.get("cmd")
    facts = [("cmd", " && ".join(cmd) if isinstance(cmd, list) else str(cmd))]
    if entry.get("wdir", ".") != ".":
        facts.append(("wdir", entry["wdir"]))
    if entry.get("code"):
        facts.append(
            ("code", ", ".join(f"{p} {short(_hash(m))}" for p, m in entry["code"].items()))
        )
    if entry.get("params"):
        facts.append(("params", ", ".join(f"{k}={v}" for k, v in entry["params"].items())))
    if entry.get("env"):
        from .history import flat_env

        facts.append(("env", ", ".join(f"{k} {v}" for k, v in flat_env(entry["env"]).items())))
    if entry.get("outs"):
        facts.append(
            ("outs", ", ".join(f"{p} {short(_hash(m))}" for p, m in entry["outs"].items()))
        )
    return facts


def _source_note(meta: dict) -> str:
    from rich.markup import escape

    if "url" in meta:
        return f"  [dim]tracked source, imported from {escape(meta['url'])}[/]"
    if "tracked" in meta:
        return "  [dim]tracked source[/]"
    return "  [dim]source, not tracked (hash only; `reprobuild add` keeps its bytes)[/]"
