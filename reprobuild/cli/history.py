"""Commands that read the graph and lockfile history: dag, lineage, diff, metrics, params.

`register(add)` adds their subparsers; `add(name, help)` returns an argparse
parser that already has the global options. COMMANDS maps a command name to
its function `f(args) -> exit code`.

This module is imported at start-up: everything it needs beyond argparse is
imported inside the command functions. JSON formats are described in
reprobuild/dag.py, lineage.py and history.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EXIT_OK, UsageError
from ..safetext import clean

DAG_FORMATS = ("text", "mermaid", "dot", "json")
SUFFIX_FORMATS = {
    ".txt": "text",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".json": "json",
}
NONE = "(none)"


def register(add) -> None:
    from .main import _global_options  # the global options again, for `metrics show` and the like

    common = _global_options(suppress=True)

    d = add("dag", "the stage graph, each stage marked with its fate if built now")
    d.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="only these stages (or outputs) and their upstream",
    )
    d.add_argument("--format", choices=DAG_FORMATS, help="text (default), mermaid, dot or json")
    d.add_argument("--json", action="store_true", help="same as --format json")
    d.add_argument("--outs", action="store_true", help="draw outputs as nodes too")
    d.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE: .svg/.png/.pdf through Graphviz, .dot/.mmd/.json/.txt as text",
    )
    d.add_argument(
        "--direction",
        choices=("auto", "down", "right"),
        default="auto",
        help="text layout: top-down, left-to-right, or top-down when it fits (default)",
    )

    lin = add(
        "lineage",
        "where an artifact came from: its stage and every upstream stage, from the lockfile",
    )
    lin.add_argument("path", metavar="PATH", help="an output (or a file inside an output folder)")
    lin.add_argument("--rev", metavar="REV", help="read the lockfile of this git revision")
    lin.add_argument("--json", action="store_true", help="print JSON")

    df = add("diff", "what changed between two lockfiles (default: HEAD against the working tree)")
    _rev_pair(df)
    df.add_argument("--json", action="store_true", help="print JSON")

    m = add("metrics", "metrics files of the workspace or of git revisions")
    msub = m.add_subparsers(dest="metrics_command", metavar="ACTION")
    show = msub.add_parser("show", parents=[common], help="the metrics, as a table")
    show.add_argument(
        "--rev", metavar="REV", help="of this git revision (default: the working tree)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    mdiff = msub.add_parser(
        "diff", parents=[common], help="metrics that changed between two revisions"
    )
    _rev_pair(mdiff)
    mdiff.add_argument("--all", action="store_true", help="unchanged metrics too")
    mdiff.add_argument("--json", action="store_true", help="print JSON")

    p = add("params", "params of the workspace and git revisions")
    psub = p.add_subparsers(dest="params_command", metavar="ACTION")
    pdiff = psub.add_parser(
        "diff", parents=[common], help="params that changed between two revisions"
    )
    _rev_pair(pdiff)
    pdiff.add_argument("--all", action="store_true", help="unchanged params too")
    pdiff.add_argument("--json", action="store_true", help="print JSON")


def _rev_pair(parser) -> None:
    parser.add_argument(
        "rev_a", nargs="?", default="HEAD", metavar="REV_A", help="git revision (default HEAD)"
    )
    parser.add_argument(
        "rev_b",
        nargs="?",
        default=None,
        metavar="REV_B",
        help="git revision (default: the working tree)",
    )


def _open(args):
    from ..project import Project

    return Project.open(args.file, args.cache_dir)


def _warn(message: str) -> None:
    print(f"warning: {clean(message)}", file=sys.stderr)


def _print_json(doc: dict) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


# -- dag ---------------------------------------------------------------------------


def cmd_dag(args) -> int:
    from .. import dag
    from ..engine import plan

    project = _open(args)
    entries, problem = project.read_lock()
    decisions = plan(project, project.select(args.targets), entries)
    project.save_stats()
    view = dag.build_view(project, decisions, args.outs, problem)
    fmt = "json" if args.json else args.format
    if problem and (fmt != "json" or args.output):  # JSON on stdout carries it as "warning"
        _warn(problem)
    if args.output:
        return _write_dag(view, Path(args.output), fmt, args)
    fmt = fmt or "text"
    if fmt == "json":
        print(dag.to_json(view))
    elif fmt == "mermaid":
        sys.stdout.write(clean(dag.to_mermaid(view)))
    elif fmt == "dot":
        sys.stdout.write(clean(dag.to_dot(view)))
    else:
        _print_drawing(view, args.direction)
    return EXIT_OK


def _print_drawing(view: dict, direction: str) -> None:
    from .console import make_console

    console = make_console()
    drawing = _drawing_text(view, direction, console.width)
    console.print(drawing, crop=False, overflow="ignore", no_wrap=True)
    width = max((len(line) for line in drawing.plain.splitlines()), default=0)
    if console.is_terminal and width > console.width:
        _warn(
            f"the drawing is {width} columns wide, the terminal {console.width}: page it with "
            "`reprobuild dag | less -S`, or render it with -o dag.svg"
        )


def _drawing_text(view: dict, direction: str, width: int):
    """The drawing, its legend, and the reasons of every stale stage, as one rich Text."""
    from rich.text import Text

    from .. import dag

    out = dag.to_drawing(view, direction, width).rich()
    out.append("\n\n" + dag.legend(), style="dim")
    groups: dict[tuple, list[str]] = {}  # stages with the same reasons share a line
    for node in view["nodes"]:
        if node["kind"] == "stage" and node["stale"]:
            groups.setdefault(tuple(node["reasons"] or [dag.FATE_WORDS[node["fate"]]]), []).append(
                node["id"]
            )
    for reasons, names in groups.items():
        out.append("\n")
        out.append(Text(", ".join(names), style="bold"))
        out.append(": " + clean(", ".join(reasons)))
    return out


def _write_dag(view: dict, target: Path, fmt: str | None, args) -> int:
    from .. import dag

    suffix = target.suffix.lower()
    if suffix in dag.IMAGE_TYPES:
        dag.render_image(dag.to_dot(view), target)
    else:
        fmt = SUFFIX_FORMATS.get(suffix) or fmt
        if fmt is None:
            raise UsageError(
                f"-o {target.name}: name a .svg, .png, .pdf, .dot, .mmd, .json or .txt file, "
                "or give --format"
            )
        text = {
            "json": lambda: dag.to_json(view) + "\n",
            "mermaid": lambda: dag.to_mermaid(view),
            "dot": lambda: dag.to_dot(view),
            "text": lambda: _drawing_text(view, args.direction, 100).plain + "\n",
        }[fmt]()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    if not args.quiet:
        print(f"wrote {target}")
    return EXIT_OK


# -- lineage -----------------------------------------------------------------------


def cmd_lineage(args) -> int:
    from .. import history, lineage

    project = _open(args)
    entries, pins, problem = history.read_lock_all(project, args.rev)
    if problem:  # no lockfile there, or not a valid one: no lineage to read
        raise UsageError(problem)
    named, _ = project.split_sources([args.path])
    if named and named[0] in pins:  # a tracked source: its lineage is its pin
        return _source_lineage(named[0], pins[named[0]], history.label(args.rev), args.json)
    found = lineage.trace(args.path, entries, history.label(args.rev), str(project.ws.dir), pins)
    lineage.check_workspace(found, project, entries)
    project.save_stats()
    if args.json:
        _print_json(found.to_json())
    else:
        _wide_console().print(lineage.tree(found))
    return EXIT_OK


def _source_lineage(path: str, pin: dict, rev: str, as_json: bool) -> int:
    from ..safetext import clean

    if as_json:
        _print_json({"path": path, "rev": rev, "source": pin})
        return EXIT_OK
    origin = f"  imported from {pin['url']}" if "url" in pin else ""
    files = f", {pin['nfiles']:,} files" if "nfiles" in pin else ""
    print(
        clean(
            f"{path}  tracked source  {str(pin['hash'])[:8]}  ({pin.get('size', 0):,} bytes"
            f"{files}){origin}"
        )
    )
    return EXIT_OK


def _wide_console():
    """Wraps long lines on a terminal; never cuts them when piped."""
    from rich.console import Console

    from .console import make_console

    console = make_console()
    return (
        Console(highlight=False) if console.is_terminal else Console(highlight=False, width=100_000)
    )


# -- diff --------------------------------------------------------------------------


def cmd_diff(args) -> int:
    from .. import history

    project = _open(args)
    a, problem_a = history.read_lock(project, args.rev_a)
    b, problem_b = history.read_lock(project, args.rev_b)
    doc = {
        "schema": history.SCHEMA,
        "a": history.label(args.rev_a),
        "b": history.label(args.rev_b),
        **history.diff_locks(a, b),
    }
    if _report(doc, args, problem_a, problem_b):
        _print_lock_diff(doc)
    return EXIT_OK


def _report(doc: dict, args, *problems) -> bool:
    """Print `doc` as JSON with --json (and any problems as "warnings"), else the problems as
    warnings on stderr; True when the caller still has to print the text."""
    problems = [p for p in problems if p]
    if args.json:
        _print_json({**doc, "warnings": problems} if problems else doc)
        return False
    for problem in problems:
        _warn(problem)
    return True


def _print_lock_diff(doc: dict) -> None:
    for name in doc["added"]:
        print(f"added {clean(name)}")
    for name in doc["removed"]:
        print(f"removed {clean(name)}")
    for name, fields in doc["changed"].items():
        print(f"changed {clean(name)}")
        for line in _field_lines(fields):
            print(f"    {clean(line)}")
    counts = (
        f"{len(doc['added'])} added, {len(doc['removed'])} removed, {len(doc['changed'])} changed"
    )
    print(
        clean(
            f"{counts} ({doc['a']} -> {doc['b']})"
            if any((doc["added"], doc["removed"], doc["changed"]))
            else f"no stage changed ({doc['a']} -> {doc['b']})"
        )
    )


def _field_lines(fields: dict) -> list[str]:
    lines = []
    for field in ("cmd", "wdir"):
        if field in fields:
            lines.append(
                f"{field}: {_show(fields[field].get('old'))} -> {_show(fields[field].get('new'))}"
            )
    for field in ("code", "deps", "params", "env", "outs"):
        for name, change in fields.get(field, {}).items():
            old, new = change.get("old", NONE), change.get("new", NONE)
            if field in ("code", "deps", "outs"):
                old, new = old[:8] if old != NONE else old, new[:8] if new != NONE else new
            lines.append(f"{field}: {name} {_show(old)} -> {_show(new)}")
    if not lines and "key" in fields:
        lines.append(f"key: {fields['key'].get('old')} -> {fields['key'].get('new')}")
    return lines


def _show(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " && ".join(map(str, value))
    return json.dumps(value, default=str)


# -- metrics and params --------------------------------------------------------------


def cmd_metrics(args) -> int:
    if args.metrics_command == "show":
        return _metrics_show(args)
    if args.metrics_command == "diff":
        return _metrics_diff(args)
    raise UsageError("usage: reprobuild metrics show [--rev REV] | metrics diff [REV_A] [REV_B]")


def _metrics_show(args) -> int:
    from .. import history

    project = _open(args)
    read = history.metrics_at(project, args.rev)
    doc = {
        "schema": history.SCHEMA,
        "rev": history.label(args.rev),
        "metrics": read.metrics,
        "errors": read.error_list(),
    }
    if not _report(doc, args, read.warning):
        return EXIT_OK
    _metric_errors(read)
    rows = [
        (path, key, _show(value))
        for path, values in read.metrics.items()
        for key, value in values.items()
    ]
    if rows:
        _print_rows(("path", "metric", "value"), rows)
    elif not read.errors:
        print(f"no metrics files ({history.label(args.rev)})")
    return EXIT_OK


def _metrics_diff(args) -> int:
    from .. import history

    project = _open(args)
    a, b = history.metrics_at(project, args.rev_a), history.metrics_at(project, args.rev_b)
    table = {}
    for path in sorted(set(a.metrics) | set(b.metrics)):
        rows = history.diff_values(a.metrics.get(path, {}), b.metrics.get(path, {}), args.all)
        if rows:
            table[path] = rows
    la, lb = history.label(args.rev_a), history.label(args.rev_b)
    doc = {
        "schema": history.SCHEMA,
        "a": la,
        "b": lb,
        "metrics": table,
        "errors": a.error_list() + b.error_list(),
    }
    if not _report(doc, args, a.warning, b.warning):
        return EXIT_OK
    _metric_errors(a)
    _metric_errors(b)
    rows = [
        (path, key, *_change_cells(change))
        for path, changes in table.items()
        for key, change in changes.items()
    ]
    if rows:
        _print_rows(("path", "metric", la, lb, "change"), rows)
    elif not a.metrics and not b.metrics:
        print(f"no metrics found in {la} or {lb}")
    else:
        print(f"no metrics changed ({la} -> {lb})")
    return EXIT_OK


def _metric_errors(read) -> None:
    for path, error in sorted(read.errors.items()):
        _warn(f"{path} ({'workspace' if read.rev is None else read.rev}): {error}")


def cmd_params(args) -> int:
    from .. import history

    if args.params_command != "diff":
        raise UsageError("usage: reprobuild params diff [REV_A] [REV_B]")
    project = _open(args)
    (a, problem_a), (b, problem_b) = (
        history.params_at(project, args.rev_a),
        history.params_at(project, args.rev_b),
    )
    changes = history.diff_values(a, b, args.all)
    la, lb = history.label(args.rev_a), history.label(args.rev_b)
    if not _report(
        {"schema": history.SCHEMA, "a": la, "b": lb, "params": changes}, args, problem_a, problem_b
    ):
        return EXIT_OK
    if changes:
        _print_rows(
            ("param", la, lb, "change"), [(key, *_change_cells(c)) for key, c in changes.items()]
        )
    else:
        print(f"no params changed ({la} -> {lb})")
    return EXIT_OK


def _change_cells(change: dict) -> tuple[str, str, str]:
    old = _show(change["old"]) if "old" in change else NONE
    new = _show(change["new"]) if "new" in change else NONE
    delta = change.get("change")
    if delta is None:
        shown = ""
    elif isinstance(delta, int):
        shown = f"{delta:+d}"
    else:
        shown = f"{delta:+.6g}"
    return old, new, shown


def _print_rows(headers: tuple, rows: list[tuple]) -> None:
    """A table: rich on a terminal; plain columns (two spaces apart) when piped."""
    from .console import make_console

    rows = [tuple(clean(cell) for cell in row) for row in rows]

    console = make_console()
    if console.is_terminal:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, header_style="bold")
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(Text(str(cell)) for cell in row))
        console.print(table)
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


COMMANDS: dict = {
    "dag": cmd_dag,
    "lineage": cmd_lineage,
    "diff": cmd_diff,
    "metrics": cmd_metrics,
    "params": cmd_params,
}
