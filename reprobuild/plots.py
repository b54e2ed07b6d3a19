"""Plots: the stages' `plots:` drawn as Vega-Lite charts, for the workspace or revisions.

A plot is an out (or a file inside an out folder) that a stage lists under
`plots:`: a data file or an image (.png, .svg). Plots that share a `title`
are drawn in one chart (so `foreach` stages overlay their curves); the first
one's `template`, `x` and `y` are the chart's.

Data files hold records: a JSON or YAML list of mappings; or a mapping whose
first list-of-mappings value is the records (`{"points": [...]}`); or a
mapping of values, which is one record (nested keys flattened with dots, as
`metrics show` does). CSV and TSV have a header row; numbers are read as
numbers. Each record also gets `rev` (the revision's label), `file` (its
path), `stage` (the stage declaring it) and `step` (its index), unless it
holds those fields itself, so `x: stage` makes one bar per stage. Without
`y` the last numeric field is drawn, without `x` the `step`.

Templates: `line` (one line per file and revision), `scatter`, `bar` (bars
of one x side by side per revision), `confusion` (x = actual, y = predicted;
a record counts once, or `count` times when it has a numeric `count`; one
matrix per file and revision).

Revisions are read as `metrics diff` reads them (history.py): the file at
that git revision (or experiment, a commit under refs/reprobuild/exps/),
else from the cache by the hash that revision's lockfile records for it (or
for the out folder holding it); a cached object is re-hashed before use.
The plots drawn are the current pipeline's. A revision that cannot be read,
or a plot file missing, unreadable or lacking a field, becomes a note, and
every other chart and revision still renders.

Written by `plots show` / `plots diff` (default folder `reprobuild_plots/`
beside the pipeline file, holding a `.gitignore` of `*`):

    index.html         one page, readable offline: Vega, Vega-Lite and vega-embed
                       are inlined, each chart's Vega-Lite spec is in the page
    01-<title>.svg     each chart rendered by vl-convert (an image plot: its own bytes);
                       its first line `<!-- reprobuild plot HASH vl-convert VERSION -->`
                       names the spec it shows, so an unchanged chart is not drawn again;
                       pictures so named that this run did not make are removed

The JavaScript bundle takes vl-convert ~2 s to build, so it is kept in
`.reprobuild/vega-<vl-convert version>-<Vega-Lite version>.js`.

altair and vl-convert-python (`reprobuild[plots]`) are imported only here,
when a page or a picture is made.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import gitrev, hashing, history, yamlio
from .cache import CorruptObject, MissingObject
from .errors import ReprobuildError, UsageError
from .fsutil import atomic_write

INSTALL = "pip install 'reprobuild[plots]'"
META_FIELDS = ("rev", "file", "stage", "step")
OUT_FOLDER = "reprobuild_plots"
WIDTH, HEIGHT = 420, 300
PICTURE = re.compile(r"^\d{2}-[a-z0-9-]+\.(svg|png)$")  # the names `write` gives pictures


@dataclass
class Chart:
    """One chart: the plots drawn in it, and after `load`, its records and notes."""

    title: str
    template: str
    x: str | None
    y: str | None
    plots: list = field(default_factory=list)  # [(stage name, pipeline.Plot)]
    records: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # {"file", "rev", "type", "data"}
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> bool:
        return self.plots[0][1].image

    @property
    def files(self) -> list[str]:
        return [p.path for _, p in self.plots]


# -- which charts ---------------------------------------------------------------------


def charts(project, targets=()) -> list[Chart]:
    """The declared plots grouped into charts; `targets` are plot paths (or folders holding
    them), stage names or foreach group names, relative to the pipeline folder."""
    wanted = _target_filter(project, targets)
    found: dict[tuple, Chart] = {}
    for name, stage in project.pipeline.stages.items():
        for plot in stage.plots:
            if not wanted(name, plot.path):
                continue
            title = plot.title or plot.path
            key = (title, plot.image)  # images and data never share a chart
            if key not in found:
                found[key] = Chart(title, plot.template, plot.x, plot.y)
            found[key].plots.append((name, plot))
    return list(found.values())


def _target_filter(project, targets):
    if not targets:
        return lambda stage, path: True
    stages = project.pipeline.stages
    names = set(stages) | {n.split("@")[0] for n in stages}
    paths = [p.path for s in stages.values() for p in s.plots]

    def under(path: str, target: str) -> bool:
        target = target.rstrip("/")
        return path == target or path.startswith(target + "/")

    for t in targets:
        if t not in names and not any(under(p, t) for p in paths):
            raise UsageError(f"'{t}' is neither a declared plot nor a stage")
    return lambda stage, path: (
        stage in targets or stage.split("@")[0] in targets or any(under(path, t) for t in targets)
    )


# -- reading data ---------------------------------------------------------------------


class Reader:
    """File bytes of the workspace (rev None) or of revisions, with each lockfile read once."""

    def __init__(self, project):
        self.project = project
        self.locks: dict[str, tuple[dict | None, str | None]] = {}

    def read(self, rev: str | None, path: str) -> bytes:
        """The bytes; LookupError(reason) when they cannot be had."""
        if rev is None:
            full = os.path.realpath(self.project.ws.dir / path)
            root = os.path.realpath(self.project.ws.root)
            if not full.startswith(os.path.join(root, "")):  # an out made into a symlink
                raise LookupError("leads out of the workspace through a symlink; not read")
            try:
                return (self.project.ws.dir / path).read_bytes()
            except FileNotFoundError:
                raise LookupError("missing from the workspace (not built yet?)") from None
            except OSError as exc:
                raise LookupError(f"cannot read: {exc.strerror}") from None
        entries, problem = self.lock(rev)
        if entries is None:
            raise LookupError(problem)
        try:
            top = history.git_top(self.project)
            data = gitrev.show_bytes(top, rev, history.in_repo(top, self.project.ws.dir / path))
        except ReprobuildError as exc:
            raise LookupError(str(exc)) from None
        if data is not None:
            return data
        data = self._from_cache(entries, path)
        if data is None:
            raise LookupError(f"not in git at {rev}, nor in the cache")
        return data

    def lock(self, rev: str) -> tuple[dict | None, str | None]:
        if rev not in self.locks:
            try:
                entries, problem = history.read_lock(self.project, rev)
                self.locks[rev] = (entries, None)
            except ReprobuildError as exc:  # not a revision, or no git: the whole side is out
                self.locks[rev] = (None, str(exc))
        return self.locks[rev]

    def _from_cache(self, entries: dict, path: str) -> bytes | None:
        cache = self.project.cache
        for entry in entries.values():
            for out, meta in (entry.get("outs") or {}).items():
                digest = meta.get("hash") if isinstance(meta, dict) else None
                if not digest:
                    continue
                if out == path:
                    return _verified(cache.object_path(digest), digest)
                folder = out.rstrip("/")
                if out.endswith("/") and path.startswith(folder + "/"):
                    try:
                        manifest = cache.read_manifest(digest)
                    except (MissingObject, CorruptObject):  # then it is not in the cache
                        return None
                    inner = path[len(folder) + 1 :]
                    for item in manifest:
                        if item["path"] == inner:
                            return _verified(cache.object_path(item["hash"]), item["hash"])
                    return None
        return None


def _verified(path: Path, digest: str) -> bytes | None:
    """An object's bytes, only when they still hash to its name."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashing.hash_bytes(data) == digest else None


def records_of(data: bytes, path: str) -> list[dict]:
    """The records of a data file (see the module docstring); ValueError when there are none."""
    lower = path.lower()
    if lower.endswith((".csv", ".tsv")):
        text = data.decode("utf-8-sig", errors="replace")
        rows = csv.DictReader(io.StringIO(text), delimiter="\t" if lower.endswith(".tsv") else ",")
        records = [{k: _number(v) for k, v in row.items() if k is not None} for row in rows]
    elif lower.endswith(".json"):
        records = _records_in(history.parse_metrics(data, path))
    else:  # YAML through yamlio: no Python tags, alias bombs stopped (a revision is untrusted)
        try:
            doc = yamlio.load(data.decode("utf-8", errors="replace"), path)
        except ReprobuildError as exc:
            raise ValueError(str(exc)) from None
        records = _records_in(_plain(doc))
    if not records:
        raise ValueError("no records in it")
    return records


def _plain(node):
    """yamlio's mappings and lists (which carry line marks) as plain ones, for JSON."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _records_in(doc) -> list[dict]:
    if isinstance(doc, list):
        return [history.flatten(r) for r in doc if isinstance(r, dict)]
    if isinstance(doc, dict):
        for value in doc.values():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                return [history.flatten(r) for r in value]
        return [history.flatten(doc)]
    return []


def _number(text):
    if text is None:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load(project, chart_list: list[Chart], revs: list[str | None]) -> None:
    """Fill each chart's records (or images) and notes from the workspace (None) and `revs`."""
    reader = Reader(project)
    for chart in chart_list:
        for stage, plot in chart.plots:
            for rev in revs:
                label = history.label(rev)
                try:
                    data = reader.read(rev, plot.path)
                except LookupError as exc:
                    chart.notes.append(f"{plot.path} ({label}): {exc.args[0]}")
                    continue
                if plot.image:
                    chart.images.append(
                        {"file": plot.path, "rev": label, "type": _mime(plot.path), "data": data}
                    )
                    continue
                try:
                    records = records_of(data, plot.path)
                except ValueError as exc:
                    chart.notes.append(f"{plot.path} ({label}): cannot parse: {exc}")
                    continue
                meta = {"rev": label, "file": plot.path, "stage": stage}
                rows = [{**meta, "step": i, **r} for i, r in enumerate(records)]
                y = _y(chart, rows)
                if y is None:
                    chart.notes.append(f"{plot.path} ({label}): no numeric field to draw as y")
                    continue
                missing = [f for f in (_x(chart), y) if f not in rows[0]]
                if missing:
                    chart.notes.append(f"{plot.path} ({label}): no field '{missing[0]}'")
                    continue
                chart.records.extend(rows)


def _mime(path: str) -> str:
    return "image/svg+xml" if path.lower().endswith(".svg") else "image/png"


def _x(chart: Chart) -> str:
    return chart.x or "step"


def _y(chart: Chart, rows: list[dict]) -> str | None:
    if chart.y:
        return chart.y
    for key in reversed(list(rows[0])):
        value = rows[0][key]
        if (
            key not in META_FIELDS
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            return key
    return None


# -- drawing --------------------------------------------------------------------------


def need_libraries():
    """altair and vl_convert, or a clear error naming the extra."""
    try:
        import altair
        import vl_convert
    except ImportError as exc:
        raise UsageError(
            f"plots need altair and vl-convert-python ({exc.name} is missing)", hint=INSTALL
        ) from None
    return altair, vl_convert


def series_label(row: dict, many_files: bool, many_revs: bool) -> str:
    """What a legend calls one file of one revision."""
    if many_files and many_revs:
        return f"{row['file']} ({row['rev']})"
    return row["rev"] if many_revs else row["file"]


def spec(chart: Chart) -> dict | None:
    """The chart's Vega-Lite spec (a dict), None when it has no records to draw."""
    if chart.image or not chart.records:
        return None
    alt, _ = need_libraries()
    many_files = len(chart.files) > 1
    many_revs = len({r["rev"] for r in chart.records}) > 1
    rows = [{**r, "series": series_label(r, many_files, many_revs)} for r in chart.records]
    x, y = _x(chart), _y(chart, rows)
    base = alt.Chart(alt.Data(values=rows), title=chart.title)
    if chart.template == "confusion":
        return _confusion(alt, chart, rows, x, y)
    xtype = _type(rows, x)
    tooltip = [f"{_esc(k)}:{_type(rows, k)}" for k in dict.fromkeys(["series", x, y])]
    revs = list(dict.fromkeys(r["rev"] for r in rows))  # in the order asked for
    files = list(dict.fromkeys(r["file"] for r in rows))
    legend = alt.Legend(labelLimit=400)
    if chart.template == "bar":
        enc = {
            "x": alt.X(f"{_esc(x)}:N", title=x, axis=alt.Axis(labelAngle=0)),
            "y": alt.Y(f"{_esc(y)}:Q", title=y),
        }
        if many_revs:
            enc["color"] = alt.Color(
                "rev:N", title=None, scale=alt.Scale(domain=revs), legend=legend
            )
            enc["xOffset"] = alt.XOffset("rev:N", sort=revs)
        else:
            enc["color"] = alt.Color(f"{_esc(x)}:N", legend=None)
        mark = base.mark_bar()
    else:
        enc = {"x": alt.X(f"{_esc(x)}:{xtype}", title=x), "y": alt.Y(f"{_esc(y)}:Q", title=y)}
        line = chart.template == "line"
        if many_revs and len(files) > 1:  # colour tells the file, the dash (or shape) the revision
            enc["color"] = alt.Color(
                "file:N", title=None, scale=alt.Scale(domain=files), legend=legend
            )
            kind = alt.StrokeDash if line else alt.Shape
            enc["strokeDash" if line else "shape"] = kind(
                "rev:N", title=None, scale=alt.Scale(domain=revs), legend=legend
            )
        else:
            domain = list(dict.fromkeys(r["series"] for r in rows))
            enc["color"] = alt.Color(
                "series:N", title=None, scale=alt.Scale(domain=domain), legend=legend
            )
        mark = base.mark_line() if line else base.mark_point(filled=True, size=60)
        if line:
            enc["order"] = alt.Order("step:Q")
    return mark.encode(**enc, tooltip=tooltip).properties(width=WIDTH, height=HEIGHT).to_dict()


def _confusion(alt, chart: Chart, rows: list[dict], x: str, y: str) -> dict:
    """Heat maps of (actual, predicted) counts, one per file and revision, counted here."""
    counts: dict[tuple, float] = {}
    for r in rows:
        n = r.get("count", 1)
        n = n if isinstance(n, (int, float)) and not isinstance(n, bool) else 1
        cell = (r["series"], str(r.get(x)), str(r.get(y)))
        counts[cell] = counts.get(cell, 0) + n
    cells = [{"series": s, "actual": a, "predicted": p, "n": n} for (s, a, p), n in counts.items()]
    dark = max(counts.values()) / 2  # white text on the darker half of the scale
    base = alt.Chart(alt.Data(values=cells)).encode(
        x=alt.X("actual:N", title=x, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("predicted:N", title=y),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("n:Q", title="count", scale=alt.Scale(scheme="blues"))
    )
    text = base.mark_text(fontSize=14).encode(
        text=alt.Text("n:Q", format=","),
        color=alt.condition(f"datum.n > {dark}", alt.value("white"), alt.value("black")),
    )
    layered = alt.layer(rect, text).properties(width=160, height=160)
    if len(counts) and len({c["series"] for c in cells}) > 1:
        facet = layered.facet(column=alt.Column("series:N", title=None))
        return facet.properties(title=chart.title).to_dict()
    return layered.properties(title=chart.title).to_dict()


def _esc(name: str) -> str:
    """A field name for an altair shorthand: dots and brackets escaped."""
    return re.sub(r"([.\[\]:])", r"\\\1", name)


def _type(rows: list[dict], name: str) -> str:
    values = [r.get(name) for r in rows if r.get(name) is not None]
    numeric = values and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )
    return "Q" if numeric else "N"


def svg(spec_dict: dict) -> str:
    _, vlc = need_libraries()
    text = vlc.vegalite_to_svg(spec_dict, vl_version=_vl_version(spec_dict))
    # Vega numbers gradients and clips per process; renumber them per picture, so the same
    # chart gives the same bytes however many were drawn before it.
    ids: dict[str, str] = {}

    def renumber(found) -> str:
        kind, old = found.group(1), found.group(0)
        if old not in ids:
            ids[old] = f"{kind}_{sum(k.startswith(kind + '_') for k in ids.values())}"
        return ids[old]

    return re.sub(r"\b(gradient|clip)_\d+\b", renumber, text)


def _vl_version(spec_dict: dict) -> str:
    """`6.4` from the spec's $schema (altair's Vega-Lite), so vl-convert draws what altair meant."""
    found = re.search(r"/v(\d+)\.(\d+)", spec_dict.get("$schema", ""))
    return f"{found.group(1)}.{found.group(2)}" if found else "6.4"


def javascript(project) -> str:
    """Vega, Vega-Lite and vega-embed in one script, built once by vl-convert and kept."""
    alt, vlc = need_libraries()
    vl = _vl_version({"$schema": alt.SCHEMA_URL})
    kept = project.ws.state_dir / f"vega-{vlc.__version__}-{vl}.js"
    try:
        return kept.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vlc.javascript_bundle(vl_version=vl)
    _state_dir(project)
    atomic_write(kept, bundle.encode("utf-8"))
    return bundle


def _state_dir(project) -> None:
    folder = project.ws.state_dir
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, b"*\n")


# -- the page -------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #1e293b; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; }
.note { color: #92400e; background: #fef3c7; padding: 4px 8px; border-radius: 4px; margin: 4px 0; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
figure img { max-width: 480px; border: 1px solid #e2e8f0; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #e2e8f0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f8fafc; }
code, pre { font: 12.5px ui-monospace, monospace; background: #f1f5f9; }
pre { padding: 8px; white-space: pre-wrap; }
.chart { margin: 12px 0 24px; }
"""

EMBED = """
for (const el of document.querySelectorAll(".vl-chart")) {
  const spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
  vegaEmbed(el, spec, {renderer: "svg", actions: false}).catch((e) => console.error(e));
}
"""


def chart_html(chart: Chart, index: int, specs: dict) -> str:
    """A chart's block: its notes, then the chart (drawn in the page) or its images."""
    parts = [f'<div class="chart" id="plot-{index}">']
    if chart.image:
        parts.append(f"<h3>{html.escape(chart.title)}</h3>")
        for image in chart.images:
            uri = f"data:{image['type']};base64," + base64.b64encode(image["data"]).decode()
            caption = html.escape(f"{image['file']} ({image['rev']})")
            parts.append(
                f'<figure><img src="{uri}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
            )
    else:
        chart_spec = spec(chart)
        if chart_spec is not None:
            specs[f"spec-{index}"] = chart_spec
            parts.append(f'<div class="vl-chart" data-spec="spec-{index}"></div>')
        else:
            parts.append(f"<h3>{html.escape(chart.title)}</h3>")
    for note in chart.notes:
        parts.append(f'<div class="note">{html.escape(note)}</div>')
    parts.append("</div>")
    return "\n".join(parts)


def page(project, title: str, body: str, specs: dict) -> str:
    """A whole offline page: the body, the specs as JSON, and the inlined JavaScript."""
    blocks = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        body,
    ]
    for name, chart_spec in specs.items():
        text = json.dumps(chart_spec, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")
        blocks.append(f'<script type="application/json" id="{name}">{text}</script>')
    if specs:
        blocks.append(f"<script>{javascript(project)}</script>")
        blocks.append(f"<script>{EMBED}</script>")
    blocks.append("</body></html>")
    return "\n".join(blocks) + "\n"


def write(project, chart_list: list[Chart], folder: Path, heading: str) -> list[Path]:
    """index.html and one picture per chart into `folder`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ".gitignore").exists():
        atomic_write(folder / ".gitignore", b"*\n")
    specs: dict = {}
    body = [f"<h1>{html.escape(heading)}</h1>"]
    written = []
    for i, chart in enumerate(chart_list, 1):
        body.append(chart_html(chart, i, specs))
        stem = f"{i:02d}-{_slug(chart.title)}"
        if f"spec-{i}" in specs:
            target = folder / f"{stem}.svg"
            _write_svg(target, specs[f"spec-{i}"])
            written.append(target)
        for j, image in enumerate(chart.images):
            suffix = ".svg" if image["type"] == "image/svg+xml" else ".png"
            extra = f"-{j + 1}" if len(chart.images) > 1 else ""
            target = folder / f"{stem}{extra}{suffix}"
            atomic_write(target, image["data"])
            written.append(target)
    index = folder / "index.html"
    atomic_write(index, page(project, heading, "\n".join(body), specs).encode("utf-8"))
    for old in folder.iterdir():  # pictures of an earlier run that this one did not make
        if PICTURE.match(old.name) and old not in written:
            old.unlink()
    return [index, *written]


def _write_svg(target: Path, chart_spec: dict) -> None:
    """Render the chart, unless `target` already holds this spec's picture (its first line
    names the spec's hash and vl-convert's version): drawing is most of the time `show` takes."""
    _, vlc = need_libraries()
    digest = hashing.hash_bytes(json.dumps(chart_spec, sort_keys=True).encode())
    stamp = f"<!-- reprobuild plot {digest} vl-convert {vlc.__version__} -->\n"
    try:
        with open(target, encoding="utf-8") as f:
            if f.readline() == stamp:
                return
    except OSError:
        pass
    atomic_write(target, (stamp + svg(chart_spec)).encode("utf-8"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "plot"
