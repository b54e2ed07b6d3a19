"""`reprobuild dag`: the stage graph with each stage's fate if built now, in several formats.

Fates and reasons come from `engine.plan()`: the one up-to-date decision that
`status` and `build --dry-run` print too.

JSON (`--format json`), for tools; a stable format, extended only by new keys:

    {
      "schema": 1,
      "nodes": [                               # build order; with --outs each stage is followed by its outs
        {"id": "train", "kind": "stage",
         "fate": "skip" | "restore" | "run",   # up to date | would restore from the cache | would run
         "stale": true,                        # fate != "skip"
         "reasons": ["param changed: train.depth 3 -> 4"],   # as `status` prints them; [] when up to date
         "desc": "",                           # the stage's desc, "" when none
         "outs": ["models/model.txt"]},        # its outs (metrics files included), pipeline folder relative
        {"id": "out:models/model.txt", "kind": "out",        # only with --outs
         "path": "models/model.txt", "stage": "train", "metric": false}
      ],
      "edges": [{"from": "prepare", "to": "train"}],   # upstream -> downstream; with --outs
                                                       # stage -> out and out -> stage instead
      "warning": "..."                         # only when the lockfile could not be read
    }

A stage's id is its name; an out's id is `out:` + its path (stage names never
hold `:`). Mermaid (`flowchart TD`) and DOT use the same nodes: DOT node names
are the ids, with `fate` and `reasons` kept as attributes (and reasons as the
SVG tooltip); Mermaid ids are `n0, n1, ...` with the fate as a class and the
reasons in `%%` comments.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .decision import RESTORE, RUN, SKIP
from .errors import UsageError

SCHEMA = 1
FORMATS = ("text", "mermaid", "dot", "json")
IMAGE_TYPES = (".svg", ".png", ".pdf")
FATE_WORDS = {SKIP: "up to date", RESTORE: "would restore", RUN: "would run"}
FATE_MARKS = {SKIP: "✓", RESTORE: "↻", RUN: "●"}
FATE_STYLES = {SKIP: "green", RESTORE: "cyan", RUN: "yellow"}
FATE_COLORS = {
    SKIP: "#dcfce7",
    RESTORE: "#e0f2fe",
    RUN: "#fef3c7",
}  # fill colours in DOT and Mermaid
OUT_COLOR = "#f1f5f9"
INSTALL_GRAPHVIZ = (
    "install Graphviz (apt install graphviz, brew install graphviz, or conda install graphviz), "
    "or print DOT with --format dot"
)


def out_id(path: str) -> str:
    return "out:" + path


def build_view(project, decisions, with_outs: bool = False, warning: str | None = None) -> dict:
    """The graph of the planned stages as the JSON document above."""
    stages = project.pipeline.stages
    names = [d.stage for d in decisions]
    selected = set(names)
    nodes, edges = [], []
    for d in decisions:
        stage = stages[d.stage]
        nodes.append(
            {
                "id": d.stage,
                "kind": "stage",
                "fate": d.fate,
                "stale": d.fate != SKIP,
                "reasons": list(d.reasons),
                "desc": stage.desc,
                "outs": [o.path for o in stage.outs],
            }
        )
        if with_outs:
            for out in stage.outs:
                nodes.append(
                    {
                        "id": out_id(out.path),
                        "kind": "out",
                        "path": out.path,
                        "stage": d.stage,
                        "metric": out.metric,
                    }
                )
                edges.append({"from": d.stage, "to": out_id(out.path)})
    if with_outs:
        for name in names:
            for path in _consumed_outs(project, stages[name], selected):
                edges.append({"from": out_id(path), "to": name})
    else:
        edges += [
            {"from": u, "to": v}
            for u in names
            for v in project.graph.successors(u)
            if v in selected
        ]
    doc = {"schema": SCHEMA, "nodes": nodes, "edges": edges}
    if warning:
        doc["warning"] = warning
    return doc


def _consumed_outs(project, stage, selected: set) -> list[str]:
    """Outs of other selected stages that this stage reads (equal to, inside or containing a dep)."""
    found = []
    for dep in (*stage.code, *stage.deps):
        for path in project.outs.related(dep.path):
            owner = project.outs.owner[path]
            if owner != stage.name and owner in selected and path not in found:
                found.append(path)
    return found


# -- formats ---------------------------------------------------------------------


def to_json(view: dict) -> str:
    return json.dumps(view, indent=2, ensure_ascii=False)


def node_label(node: dict) -> str:
    return node["id"] if node["kind"] == "stage" else node["path"]


def to_mermaid(view: dict) -> str:
    ids = {n["id"]: f"n{i}" for i, n in enumerate(view["nodes"])}
    lines = ["flowchart TD"]
    for n in view["nodes"]:
        label = _mermaid_text(node_label(n))
        if n["kind"] == "stage":
            lines.append(f'    {ids[n["id"]]}["{label}<br/>{FATE_WORDS[n["fate"]]}"]')
            if n["reasons"]:
                lines.append(f"    %% {_one_line(n['id'])}: {_one_line('; '.join(n['reasons']))}")
        else:
            lines.append(f'    {ids[n["id"]]}(["{label}"])')
    lines += [f"    {ids[e['from']]} --> {ids[e['to']]}" for e in view["edges"]]
    for fate, color in FATE_COLORS.items():
        lines.append(f"    classDef {fate} fill:{color}")
    lines.append(f"    classDef out fill:{OUT_COLOR}")
    for n in view["nodes"]:
        lines.append(f"    class {ids[n['id']]} {n['fate'] if n['kind'] == 'stage' else 'out'}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_dot(view: dict) -> str:
    lines = [
        "digraph reprobuild {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for n in view["nodes"]:
        if n["kind"] == "stage":
            attrs = {
                "label": f"{n['id']}\n{FATE_WORDS[n['fate']]}",
                "fillcolor": FATE_COLORS[n["fate"]],
                "fate": n["fate"],
                "reasons": "; ".join(n["reasons"]),
                "tooltip": "\n".join(n["reasons"]) or FATE_WORDS[n["fate"]],
            }
        else:
            attrs = {
                "label": n["path"],
                "shape": "note",
                "style": "filled",
                "fillcolor": OUT_COLOR,
                "stage": n["stage"],
            }
        body = ", ".join(f"{k}={_dot_quote(v)}" for k, v in attrs.items())
        lines.append(f"    {_dot_quote(n['id'])} [{body}];")
    lines += [f"    {_dot_quote(e['from'])} -> {_dot_quote(e['to'])};" for e in view["edges"]]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_drawing(view: dict, direction: str = "auto", width: int = 80):
    """The text drawing (dagtext.Drawing): stages as boxes marked with their fate, outs as rounded boxes."""
    from .dagtext import Node, draw

    nodes = []
    for n in view["nodes"]:
        if n["kind"] == "stage":
            nodes.append(
                Node(n["id"], f"{FATE_MARKS[n['fate']]} {n['id']}", FATE_STYLES[n["fate"]])
            )
        else:
            nodes.append(Node(n["id"], n["path"], "dim", rounded=True))
    return draw(nodes, [(e["from"], e["to"]) for e in view["edges"]], direction, width)


def legend() -> str:
    return "   ".join(f"{FATE_MARKS[f]} {FATE_WORDS[f]}" for f in (SKIP, RESTORE, RUN))


# -- images ------------------------------------------------------------------------


def render_image(dot_text: str, target: Path) -> None:
    """SVG/PNG/PDF through Graphviz's `dot`; a clear error when it is not installed."""
    kind = target.suffix.lower()
    if kind not in IMAGE_TYPES:
        raise UsageError(f"cannot render {target.name}: -o takes a .svg, .png or .pdf file")
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            f"Graphviz's `dot` is not installed, so the graph cannot be rendered to {target.name}",
            hint=INSTALL_GRAPHVIZ,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [dot, f"-T{kind[1:]}", "-o", os.fspath(target)],
        input=dot_text.encode(),
        capture_output=True,
    )
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(
            f"Graphviz could not render {target.name}: {message[-1] if message else 'failed'}"
        )
