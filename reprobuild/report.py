"""`reprobuild report`: one offline HTML page documenting the pipeline as it is now.

Everything on the page is read when it is made, so it never goes stale: the
DAG (Graphviz's `dot` when installed, else a plain layered SVG of the same
graph) with each stage's fate; what is stale and why (the decision `status`
prints); each stage's description, command, code, deps, params with their
values, outs with sizes and hashes (from the lockfile) and environment; the
metrics of the workspace, HEAD and every experiment; the plots (plots.py);
and, with `--lineage PATH`, that artifact's lineage (lineage.py).

A part that cannot be read (no git, no lockfile, a missing plot, plots
without `reprobuild[plots]`) becomes a note on the page; the rest is drawn.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess

import networkx as nx

from . import dag, gitrev, history, lineage
from .decision import SKIP
from .errors import ReprobuildError

BOX_H, LAYER_GAP, BOX_GAP, CHAR_W = 40, 56, 24, 7.2


def build(project, lineage_path: str | None = None) -> str:
    """The page's HTML."""
    from .engine import plan

    entries, problem = project.read_lock()
    decisions = plan(project, project.select([]), entries)
    project.save_stats()
    view = dag.build_view(project, decisions)
    notes = [problem] if problem else []
    body = [f"<h1>Pipeline {_e(project.pipeline.file)}</h1>", _contents(project, lineage_path)]
    body += [_note(n) for n in notes]
    body.append('<h2 id="graph">Graph</h2>')
    body.append(f'<div class="dag">{dag_svg(view)}</div>')
    body.append(_legend())
    body.append(_stale(decisions))
    body.append(_stages(project, entries, decisions))
    body.append(_metrics(project))
    plots_html, specs = _plots(project)
    body.append(plots_html)
    if lineage_path:
        body.append(_lineage(project, entries, lineage_path))
    from . import plots

    return plots.page(project, f"Pipeline {project.pipeline.file}", "\n".join(body), specs)


def _e(value) -> str:
    return html.escape(str(value))


def _contents(project, lineage_path: str | None) -> str:
    links = [("graph", "Graph"), ("stale", "What is stale"), ("stages", "Stages")]
    links += [("metrics", "Metrics")]
    if any(stage.plots for stage in project.pipeline.stages.values()):
        links.append(("plots", "Plots"))
    if lineage_path:
        links.append(("lineage", f"Lineage of {lineage_path}"))
    stages = ", ".join(f'<a href="#stage-{_e(n)}">{_e(n)}</a>' for n in project.pipeline.stages)
    items = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in links)
    return f"<nav><ul>{items}</ul><p>Stages: {stages}</p></nav>"


def _note(text: str) -> str:
    return f'<div class="note">{_e(text)}</div>'


def _legend() -> str:
    items = [
        f'<span style="background:{dag.FATE_COLORS[f]};padding:2px 8px;border-radius:4px">'
        f"{dag.FATE_WORDS[f]}</span>"
        for f in dag.FATE_COLORS
    ]
    return "<p>" + " ".join(items) + "</p>"


# -- the DAG picture ------------------------------------------------------------------


def dag_svg(view: dict) -> str:
    """The graph as inline SVG: Graphviz when installed, else `plain_svg`."""
    dot = shutil.which("dot")
    if dot:
        proc = subprocess.run([dot, "-Tsvg"], input=dag.to_dot(view).encode(), capture_output=True)
        text = proc.stdout.decode("utf-8", errors="replace")
        if proc.returncode == 0 and "<svg" in text:
            return text[text.index("<svg") :]
    return plain_svg(view)


def plain_svg(view: dict) -> str:
    """A layered drawing: layers by longest path, order by the parents' mean, straight arrows."""
    g = nx.DiGraph()
    nodes = {n["id"]: n for n in view["nodes"]}
    g.add_nodes_from(nodes)
    g.add_edges_from((e["from"], e["to"]) for e in view["edges"])
    layers = [sorted(layer, key=list(nodes).index) for layer in nx.topological_generations(g)]
    width = {n: max(90, len(n) * CHAR_W + 24) for n in nodes}
    x: dict[str, float] = {}
    rows = []
    for depth, layer in enumerate(layers):
        if depth:  # under the mean of its parents, so chains stay straight
            layer.sort(key=lambda n: sum(x[p] for p in g.predecessors(n)) / max(1, g.in_degree(n)))
        pos, row = 0.0, []
        for n in layer:
            x[n] = pos + width[n] / 2
            pos += width[n] + BOX_GAP
            row.append(n)
        rows.append((row, pos - BOX_GAP))
    total = max((w for _, w in rows), default=0)
    y = {}
    for depth, (row, w) in enumerate(rows):
        for n in row:
            x[n] += (total - w) / 2 + 10
            y[n] = 10 + depth * (BOX_H + LAYER_GAP)
    height = 20 + len(rows) * (BOX_H + LAYER_GAP) - LAYER_GAP
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total + 20:.0f}" height="{height}" '
        'font-family="Helvetica, sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#475569"/></marker></defs>',
    ]
    for u, v in g.edges:
        out.append(
            f'<line class="edge" x1="{x[u]:.1f}" y1="{y[u] + BOX_H}" x2="{x[v]:.1f}" y2="{y[v]}" '
            'stroke="#475569" marker-end="url(#arrow)"/>'
        )
    for n, node in nodes.items():
        fate = node.get("fate", SKIP)
        tip = "; ".join(node.get("reasons") or []) or dag.FATE_WORDS[fate]
        out.append(
            f'<g class="node" data-stage="{_e(n)}" data-fate="{fate}"><title>{_e(tip)}</title>'
            f'<rect x="{x[n] - width[n] / 2:.1f}" y="{y[n]}" width="{width[n]:.0f}" height="{BOX_H}" '
            f'rx="6" fill="{dag.FATE_COLORS[fate]}" stroke="#334155"/>'
            f'<text x="{x[n]:.1f}" y="{y[n] + 17}" text-anchor="middle">{_e(n)}</text>'
            f'<text x="{x[n]:.1f}" y="{y[n] + 32}" text-anchor="middle" fill="#475569" '
            f'font-size="10">{_e(dag.FATE_WORDS[fate])}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


# -- sections -------------------------------------------------------------------------


def _stale(decisions) -> str:
    stale = [d for d in decisions if d.stale]
    if not stale:
        return f'<h2 id="stale">What is stale</h2><p>Nothing: all {len(decisions)} stages are up to date.</p>'
    rows = "".join(
        f"<tr><td>{_e(d.stage)}</td><td>{_e(dag.FATE_WORDS[d.fate])}</td>"
        f"<td>{'<br>'.join(_e(r) for r in d.reasons)}</td></tr>"
        for d in stale
    )
    return (
        f'<h2 id="stale">What is stale</h2><p>{len(stale)} of {len(decisions)} stages.</p>'
        f"<table><tr><th>stage</th><th>if built now</th><th>why</th></tr>{rows}</table>"
    )


def _stages(project, entries: dict, decisions) -> str:
    fates = {d.stage: d for d in decisions}
    parts = ['<h2 id="stages">Stages</h2>']
    for name, stage in project.pipeline.stages.items():
        entry = entries.get(name) or {}
        d = fates.get(name)
        parts.append(f'<section class="stage" id="stage-{_e(name)}"><h3>{_e(name)}</h3>')
        if stage.desc:
            parts.append(f"<p>{_e(stage.desc)}</p>")
        if d is not None:
            parts.append(f"<p><b>{_e(dag.FATE_WORDS[d.fate])}</b></p>")
        flags = [f"wdir {stage.wdir}"] if stage.wdir != "." else []
        flags += [f for f in ("always_run", "frozen") if getattr(stage, f)]
        if flags:
            parts.append(f"<p>{_e(', '.join(flags))}</p>")
        parts.append(f"<pre>{_e(' && '.join(stage.cmd))}</pre>")
        rows = []
        for label, items, locked in (
            ("code", stage.code, entry.get("code")),
            ("deps", stage.deps, entry.get("deps")),
            ("outs", stage.outs, entry.get("outs")),
        ):
            for item in items:
                meta = _locked(locked, item.path)
                rows.append(
                    f"<tr><td>{label}</td><td>{_e(item.path)}</td>"
                    f"<td>{_e(_size(meta))}</td><td><code>{_e(meta.get('hash', 'not built'))}</code></td></tr>"
                )
        for key, value in stage.params.items():
            rows.append(
                f"<tr><td>param</td><td>{_e(key)}</td><td colspan=2>{_e(json.dumps(value))}</td></tr>"
            )
        env = entry.get("env") or {}  # as locked; what the pipeline asks for when not built
        declared = {p: "(not built)" for p in (*stage.env.packages, *stage.env.vars)}
        for key, value in (history.flat_env(env) or declared).items():
            rows.append(f"<tr><td>env</td><td>{_e(key)}</td><td colspan=2>{_e(value)}</td></tr>")
        parts.append(
            "<table><tr><th></th><th>path / name</th><th>size</th><th>hash / value</th></tr>"
            + "".join(rows)
            + "</table></section>"
        )
    return "\n".join(parts)


def _locked(locked, path: str) -> dict:
    locked = locked or {}
    meta = locked.get(path) or locked.get(path + "/")
    return meta if isinstance(meta, dict) else {}


def _size(meta: dict) -> str:
    size = meta.get("size")
    if size is None:
        return ""
    text = f"{size:,} B"
    if meta.get("nfiles"):
        text += f" ({meta['nfiles']} files)"
    return text


def _metrics(project) -> str:
    revs: list[str | None] = [None]
    notes = []
    try:
        top = history.git_top(project)
        revs += ["HEAD", *gitrev.experiments(top)]
    except ReprobuildError as exc:
        notes.append(f"metrics of HEAD and experiments: {exc}")
    reads = [
        history.metrics_at(project, r) if r is None else _metrics_at(project, r, notes)
        for r in revs
    ]
    reads = [r for r in reads if r is not None]
    keys = sorted({(p, k) for r in reads for p, vals in r.metrics.items() for k in vals})
    for r in reads:
        if r.warning:
            notes.append(f"{history.label(r.rev)}: {r.warning}")
        notes += [f"{p} ({history.label(r.rev)}): {e}" for p, e in sorted(r.errors.items())]
    head = "".join(f"<th>{_e(history.label(r.rev))}</th>" for r in reads)
    rows = "".join(
        f"<tr><td>{_e(p)}</td><td>{_e(k)}</td>"
        + "".join(f"<td>{_e(_value(r.metrics.get(p, {}).get(k)))}</td>" for r in reads)
        + "</tr>"
        for p, k in keys
    )
    table = (
        f"<table><tr><th>file</th><th>metric</th>{head}</tr>{rows}</table>"
        if keys
        else "<p>No metrics.</p>"
    )
    return '<h2 id="metrics">Metrics</h2>' + "".join(_note(n) for n in notes) + table


def _metrics_at(project, rev: str, notes: list):
    try:
        return history.metrics_at(project, rev)
    except ReprobuildError as exc:
        notes.append(f"{rev}: {exc}")
        return None


def _value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plots(project) -> tuple[str, dict]:
    from . import plots

    chart_list = plots.charts(project)
    if not chart_list:
        return "", {}
    try:
        plots.need_libraries()
    except ReprobuildError as exc:
        return '<h2 id="plots">Plots</h2>' + _note(f"{exc} ({exc.hint})"), {}
    plots.load(project, chart_list, [None])
    specs: dict = {}
    blocks = [plots.chart_html(chart, i, specs) for i, chart in enumerate(chart_list, 1)]
    return '<h2 id="plots">Plots</h2>' + "\n".join(blocks), specs


def _lineage(project, entries: dict, path: str) -> str:
    try:
        found = lineage.trace(path, entries, "workspace", str(project.ws.dir))
        lineage.check_workspace(found, project, entries)
    except ReprobuildError as exc:
        return f'<h2 id="lineage">Lineage of {_e(path)}</h2>' + _note(str(exc))
    parts = [
        f'<h2 id="lineage">Lineage of {_e(found.path)}</h2>',
        f"<p>Made by <b>{_e(found.stage)}</b>; "
        + (
            "some stage no longer matches the workspace."
            if found.out_of_date
            else "it matches the workspace."
        )
        + "</p>",
        "<table><tr><th>stage</th><th>key</th><th>command</th><th>params</th><th>from</th><th>now</th></tr>",
    ]
    for name, info in found.stages.items():
        upstream = sorted({s for names in (info.get("upstream") or {}).values() for s in names})
        cmd = info.get("cmd")
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in (info.get("params") or {}).items())
        parts.append(
            f'<tr class="lineage-stage"><td>{_e(name)}</td><td><code>{_e(lineage.short(info.get("key")))}</code></td>'
            f"<td><code>{_e(' && '.join(cmd) if isinstance(cmd, list) else cmd)}</code></td>"
            f"<td>{_e(params)}</td><td>{_e(', '.join(upstream))}</td>"
            f"<td>{'<br>'.join(_e(r) for r in info.get('reasons') or []) or 'up to date'}</td></tr>"
        )
    parts.append("</table>")
    if found.sources:
        parts.append("<p>Sources:</p><table><tr><th>path</th><th>hash</th></tr>")
        for src, meta in found.sources.items():
            parts.append(
                f"<tr><td>{_e(src)}</td><td><code>{_e((meta or {}).get('hash'))}</code></td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)
