"""`reprobuild exp ...`: run, queue, show, compare, apply and share experiments.

`register(add)` adds the `exp` parser; COMMANDS maps "exp" to its function.
Imported at start-up: everything beyond argparse is imported in the commands.
The experiments themselves (refs, record, worktrees) are reprobuild/experiments.py.

`exp show --json` document (stable):

    {"schema": 1, "base": COMMIT, "rows": [ROW]}
    ROW = {"name": "workspace" | "HEAD" | NAME, "rev": COMMIT | null,
           "status": "workspace" | "base" | "queued" | "done" | "failed",
           "base": COMMIT, "overrides": {KEY: VALUE}, "params": {KEY: VALUE},
           "metrics": {PATH: {KEY: VALUE}}, "created", "duration", "error"}

`--csv`: one line per row: name, status, created (ISO, UTC), duration, then a
column per param that differs between rows and per metric (`PATH:KEY`).
"""

from __future__ import annotations

import json
import sys
import threading

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from ..reporter import Reporter


def register(add) -> None:
    from .main import _global_options

    common = _global_options(suppress=True)
    e = add("exp", "experiments: builds with param overrides, isolated from the workspace")
    sub = e.add_subparsers(dest="exp_command", metavar="ACTION")

    def action(name, help_text):
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    r = action("run", "build with param overrides in an isolated copy of the workspace")
    r.add_argument("targets", nargs="*", metavar="TARGET")
    r.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param (FILE:KEY for another params file); V1,V2,... forms a grid",
    )
    r.add_argument("-n", "--name", help="experiment name (NAME-1, NAME-2, ... for a grid)")
    r.add_argument("--queue", action="store_true", help="only queue; run later with --run-all")
    r.add_argument("--run-all", action="store_true", help="run every queued experiment")
    r.add_argument("-j", "--jobs", type=int, default=1, help="experiments at once (default 1)")
    r.add_argument("--executor", choices=("local", "dask"), help="where stages run")
    r.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address")

    s = action("show", "the experiments table: params that differ and every metric")
    s.add_argument("--all", action="store_true", help="experiments of every base, not only HEAD")
    s.add_argument("--sort-by", metavar="METRIC", help="KEY or PATH:KEY of a metric (or a param)")
    s.add_argument("--desc", action="store_true", help="largest first")
    s.add_argument(
        "--columns",
        action="append",
        metavar="GLOB",
        help="only params and metrics whose column matches a glob (comma list, repeatable)",
    )
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")

    d = action("diff", "params and metrics that differ between two experiments or revisions")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B", nargs="?", help="default: the workspace")
    d.add_argument("--all", action="store_true", help="unchanged values too")
    d.add_argument("--json", action="store_true", help="print JSON")

    a = action("apply", "params, lockfile and outputs of an experiment into the workspace")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--force", action="store_true", help="overwrite uncommitted params edits")

    b = action("branch", "a git branch holding an experiment")
    b.add_argument("name", metavar="NAME")
    b.add_argument("branch", metavar="BRANCH")

    rm = action("remove", "delete experiments (their refs; outputs stay in the cache until gc)")
    rm.add_argument("names", nargs="*", metavar="NAME")
    rm.add_argument("--queued", action="store_true", help="every queued experiment")
    rm.add_argument("--all", action="store_true", help="every experiment")

    for verb in ("push", "pull"):
        p = action(
            verb,
            f"{verb} experiments: refs through git, outputs through the cache remote",
        )
        p.add_argument("git_remote", metavar="GIT_REMOTE")
        p.add_argument("names", nargs="*", metavar="NAME", help="default: all")
        p.add_argument("--remote", metavar="URL", help="cache remote URL")


def cmd_exp(args) -> int:
    handlers = {
        "run": _run,
        "show": _show,
        "diff": _diff,
        "apply": _apply,
        "branch": _branch,
        "remove": _remove,
        "push": _push,
        "pull": _pull,
    }
    if args.exp_command not in handlers:
        raise UsageError("usage: reprobuild exp run|show|diff|apply|branch|remove|push|pull ...")
    return handlers[args.exp_command](args)


def _context(args):
    from ..experiments import Context
    from ..project import Project

    return Context.of(Project.open(args.file, args.cache_dir))


_print_lock = threading.Lock()  # experiments report from several threads


def _say(args, text: str) -> None:
    if not args.quiet:
        with _print_lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


# -- run ------------------------------------------------------------------------------


def _run(args) -> int:
    from .. import experiments as ex
    from .main import _executor_settings

    if args.jobs < 1:
        raise UsageError("-j takes a number >= 1")
    if args.run_all and (args.set_param or args.name or args.queue or args.targets):
        raise UsageError("--run-all runs the queue; it takes no -S, -n, --queue or TARGET")
    ctx = _context(args)
    executor, scheduler, retries = _executor_settings(args, ctx.project.pipeline.executor)
    if args.run_all:
        todo = [e for e in ex.list_experiments(ctx.top) if e.status == ex.QUEUED and e.of(ctx)]
        if not todo:
            _say(args, "no queued experiments")
            return EXIT_OK
    else:
        names = ex.queue(ctx, ex.parse_sets(args.set_param), args.name, args.targets)
        if args.queue:
            for name in names:
                _say(args, f"queued {name}")
            return EXIT_OK
        todo = ex.list_experiments(ctx.top, names)
    runner = ex.Runner(
        ctx,
        ex.RunOptions(args.jobs, executor, scheduler, retries),
        reporter_for=lambda name: _PrefixReporter(name, args.quiet, args.verbose),
        on_event=lambda name, status, detail: _say(
            args, f"[{name}] {status}" + (f" ({detail})" if detail else "")
        ),
    )
    outcomes = runner.run(todo)
    by_status: dict[str, list[str]] = {}
    for o in outcomes:
        by_status.setdefault(o.status, []).append(o.name)
    for o in outcomes:
        if o.status in ("failed", "error") and o.error:
            print(
                f"error: experiment '{o.name}' failed: {o.error.splitlines()[0]}", file=sys.stderr
            )
    left = [e.name for e in todo if e.name not in {o.name for o in outcomes}]
    queued = by_status.get("interrupted", []) + left
    parts = [f"{len(by_status.get(s, []))} {s}" for s in ("done", "failed") if by_status.get(s)]
    if queued:
        parts.append(f"{len(queued)} still queued (reprobuild exp run --run-all)")
    if by_status.get("skipped"):
        parts.append(f"{len(by_status['skipped'])} skipped (running elsewhere or removed)")
    _say(args, ", ".join(parts) or "nothing ran")
    if runner.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if by_status.get("failed") or by_status.get("error") else EXIT_OK


class _PrefixReporter(Reporter):
    """Engine events of one experiment's build as plain lines prefixed by its name."""

    def __init__(self, name: str, quiet: bool, verbose: bool):
        self.name, self.quiet, self.verbose = name, quiet, verbose

    def _line(self, text: str, err: bool = False) -> None:
        if self.quiet and not err:
            return
        stream = sys.stderr if err else sys.stdout
        with _print_lock:
            stream.write(f"[{self.name}] {text}\n")
            stream.flush()

    def warning(self, message):
        self._line(f"warning: {message}", err=True)

    def stage_started(self, d):
        self._line(f"running {d.stage}")

    def stage_restored(self, d):
        self._line(f"restored {d.stage}")

    def stage_finished(self, d, seconds):
        self._line(f"done {d.stage} {seconds:.1f}s")

    def stage_failed(self, stage, message, log_tail=""):
        self._line(f"failed {stage}: {message}", err=True)
        if log_tail and self.verbose:
            for line in log_tail.splitlines():
                self._line(f"  {line}", err=True)

    def stage_output(self, stage, line):
        if self.verbose:
            self._line(f"{stage}: {line}")


# -- show ------------------------------------------------------------------------------


def show_rows(ctx, everything: bool) -> tuple[str, list[dict]]:
    """(base, rows): the workspace, HEAD and the experiments (of HEAD, or all)."""
    from .. import experiments as ex
    from .. import gitrev, history

    project = ctx.project
    base = ctx.head()
    files = list(project.pipeline.params_files)
    first = files[0] if files else "params.yaml"
    texts = {}
    for f in files:
        try:
            texts[f] = (project.ws.dir / f).read_text(encoding="utf-8")
        except OSError:
            pass
    rows = [
        {
            "name": "workspace",
            "rev": None,
            "status": "workspace",
            "base": base,
            "params": ex.params_leaves(texts, first),
            "metrics": history.metrics_at(project, None).metrics,
        }
    ]
    current = {o.path for st in project.pipeline.stages.values() for o in st.outs if o.metric}
    head_texts = {f: gitrev.show(ctx.top, base, ctx.in_top(f)) or "" for f in files}
    rows.append(
        {
            "name": "HEAD",
            "rev": base,
            "status": "base",
            "base": base,
            "params": ex.params_leaves(head_texts, first),
            "metrics": {  # the files the pipeline calls metrics now, as for the other rows
                path: values
                for path, values in history.metrics_at(project, base).metrics.items()
                if path in current
            },
        }
    )
    for e in ex.list_experiments(ctx.top):
        if not e.of(ctx) or (not everything and e.base != base):
            continue
        r = e.record
        rows.append(
            {
                "name": e.name,
                "rev": e.commit,
                "status": e.status,
                "base": e.base,
                "overrides": r.get("overrides", {}),
                "params": r.get("params", {}),
                "metrics": r.get("metrics", {}),
                "created": r.get("created"),
                "duration": r.get("duration"),
                "error": r.get("error"),
            }
        )
    return base, rows


def _columns(rows: list[dict], globs: list[str] | None) -> tuple[list[str], list[str]]:
    """(params that differ between rows, every metric as PATH:KEY), filtered by --columns."""
    import fnmatch

    params: dict[str, set] = {}
    for row in rows:
        for k, v in row["params"].items():
            params.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    for row in rows:  # a key some rows lack differs too
        for k in params:
            if k not in row["params"]:
                params[k].add("<absent>")
    pcols = sorted(k for k, values in params.items() if len(values) > 1)
    mcols = sorted({f"{p}:{k}" for row in rows for p, vals in row["metrics"].items() for k in vals})
    globs = [g for arg in globs or () for g in arg.split(",") if g]
    if globs:
        keep = lambda c: any(fnmatch.fnmatchcase(c, g) for g in globs)  # noqa: E731
        pcols, mcols = [c for c in pcols if keep(c)], [c for c in mcols if keep(c)]
    return pcols, mcols


def _metric(row: dict, column: str):
    path, _, key = column.rpartition(":")
    return row["metrics"].get(path, {}).get(key)


def _sort_column(rows, wanted: str, mcols: list[str], pcols: list[str]) -> tuple[str, str]:
    """(kind, column) that --sort-by names: PATH:KEY, or a KEY (the first metrics file holding it)."""
    every_metric = sorted(
        {f"{p}:{k}" for row in rows for p, vals in row["metrics"].items() for k in vals}
    )
    if wanted in every_metric:
        return "metric", wanted
    matches = [c for c in every_metric if c.rpartition(":")[2] == wanted]
    if not matches:
        matches = [c for c in every_metric if c.endswith(":" + wanted) or c.endswith("/" + wanted)]
    if matches:
        if len(matches) > 1:
            print(
                f"warning: --sort-by {wanted}: in {len(matches)} metrics files; sorted by "
                f"{matches[0]} (name one as PATH:KEY)",
                file=sys.stderr,
            )
        return "metric", matches[0]
    every_param = {k for row in rows for k in row["params"]}
    if wanted in every_param:
        return "param", wanted
    raise UsageError(f"--sort-by {wanted}: no such metric or param in the experiments shown")


def _show(args) -> int:
    ctx = _context(args)
    base, rows = show_rows(ctx, args.all)
    pcols, mcols = _columns(rows, args.columns)
    if args.sort_by:
        kind, col = _sort_column(rows, args.sort_by, mcols, pcols)
        if kind == "metric" and col not in mcols:
            mcols.append(col)
        if kind == "param" and col not in pcols:
            pcols.append(col)
        fixed, exps = rows[:2], rows[2:]

        def value(row):
            v = _metric(row, col) if kind == "metric" else row["params"].get(col)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        present = [r for r in exps if value(r) is not None]
        absent = [r for r in exps if value(r) is None]
        present.sort(key=value, reverse=args.desc)
        rows = fixed + present + absent
    if args.json:
        doc = {"schema": 1, "base": base, "rows": rows}
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    headers = ["name", "status", "created", "duration", *pcols, *mcols]
    table = [
        [
            row["name"],
            row["status"]
            + (f" on {row['base'][:7]}" if not args.csv and row["base"] != base else ""),
            _when(row.get("created")),
            f"{row['duration']:.1f}s" if row.get("duration") is not None else "",
            *(_cell(row["params"].get(c, "")) for c in pcols),
            *(_cell(_metric(row, c)) for c in mcols),
        ]
        for row in rows
    ]
    if args.csv:
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(headers)
        w.writerows(table)
        return EXIT_OK
    _print_table(headers, table, len(pcols))
    return EXIT_OK


def _when(ts) -> str:
    if not ts:
        return ""
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _print_table(headers: list[str], table: list[list[str]], nparams: int) -> None:
    if sys.stdout.isatty():  # rich (~100 ms to import) only when someone looks at it
        from .console import make_console

        console = make_console()
        from rich import box
        from rich.table import Table
        from rich.text import Text

        t = Table(box=box.SIMPLE_HEAD, header_style="bold")
        for i, h in enumerate(headers):
            style = "cyan" if 4 <= i < 4 + nparams else ("magenta" if i >= 4 + nparams else "")
            t.add_column(h, style=style, overflow="fold", no_wrap=i < 2)
        for row in table:
            t.add_row(*(Text(c) for c in row))
        console.print(t)
        return
    widths = [max(len(r[i]) for r in [headers, *table]) for i in range(len(headers))]
    for row in [headers, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- diff, apply, branch, remove ----------------------------------------------------------


def _diff(args) -> int:
    from .. import history
    from .history import _change_cells, _print_rows

    ctx = _context(args)
    project = ctx.project
    (pa, prob_a), (pb, prob_b) = (
        history.params_at(project, args.a),
        history.params_at(project, args.b),
    )
    params = history.diff_values(pa, pb, args.all)
    ma, mb = history.metrics_at(project, args.a), history.metrics_at(project, args.b)
    metrics = {}
    for path in sorted(set(ma.metrics) | set(mb.metrics)):
        changes = history.diff_values(ma.metrics.get(path, {}), mb.metrics.get(path, {}), args.all)
        if changes:
            metrics[path] = changes
    la, lb = history.label(args.a), history.label(args.b)
    problems = [p for p in (prob_a, prob_b, ma.warning, mb.warning) if p]
    if args.json:
        doc = {"schema": 1, "a": la, "b": lb, "params": params, "metrics": metrics}
        if problems:
            doc["warnings"] = sorted(set(problems))
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    for p in sorted(set(problems)):
        print(f"warning: {p}", file=sys.stderr)
    rows = [(f"param {k}", *_change_cells(c)) for k, c in params.items()]
    rows += [
        (f"{path}:{k}", *_change_cells(c)) for path, ch in metrics.items() for k, c in ch.items()
    ]
    if rows:
        _print_rows(("", la, lb, "change"), rows)
    else:
        print(f"no params or metrics differ ({la} -> {lb})")
    return EXIT_OK


def _apply(args) -> int:
    from .. import experiments as ex

    ctx = _context(args)
    exp = ex.list_experiments(ctx.top, [args.name])[0]
    result = ex.apply(ctx, exp, force=args.force)
    _say(
        args,
        f"applied {exp.name}: params files and lockfile written; {len(result.restored)} outputs "
        f"restored, {len(result.unchanged)} already in place",
    )
    for item in result.missing:
        print(f"missing from the cache: {item} (reprobuild exp pull, or build)", file=sys.stderr)
    for path in result.kept:
        print(f"kept {path}: changed by hand and not in the cache", file=sys.stderr)
    return EXIT_FAILED if result.missing or result.kept else EXIT_OK


def _branch(args) -> int:
    from .. import experiments as ex

    ctx = _context(args)
    exp = ex.list_experiments(ctx.top, [args.name])[0]
    commit = ex.branch(ctx, exp, args.branch)
    _say(args, f"branch {args.branch} at {commit[:12]} (experiment {exp.name})")
    return EXIT_OK


def _remove(args) -> int:
    from .. import experiments as ex

    ctx = _context(args)
    if bool(args.names) + args.queued + args.all != 1:
        raise UsageError("exp remove takes NAME..., --queued or --all")
    if args.names:
        names = args.names
    else:
        names = [e.name for e in ex.list_experiments(ctx.top) if args.all or e.status == ex.QUEUED]
    removed = ex.remove(ctx, names) if names else []
    _say(
        args,
        f"removed {len(removed)} experiment(s)" + (f": {', '.join(removed)}" if removed else ""),
    )
    return EXIT_OK


# -- push, pull -------------------------------------------------------------------------


def _push(args) -> int:
    from .. import experiments as ex
    from ..remote import open_remote

    ctx = _context(args)
    exps = ex.list_experiments(ctx.top, args.names or None)
    if not args.names:
        exps = [e for e in exps if e.status != ex.QUEUED and e.of(ctx)]
    if not exps:
        _say(args, "no experiments to push")
        return EXIT_OK
    metas, keys = ex.lock_objects(ctx, exps)
    remote = open_remote(ctx.project, args.remote, create=True)
    with ctx.project.cache.using():
        result = remote.push(metas, keys)
    ex.push_refs(ctx, args.git_remote, exps)
    _say(
        args,
        f"pushed {len(exps)} experiment(s) to {args.git_remote}; {result.objects} objects and "
        f"{result.runs} run records to {remote.url}",
    )
    for item in result.missing:
        print(f"missing from the local cache, not pushed: {item}", file=sys.stderr)
    return EXIT_FAILED if result.missing else EXIT_OK


def _pull(args) -> int:
    from .. import experiments as ex
    from ..remote import open_remote

    ctx = _context(args)
    names = ex.pull_refs(ctx, args.git_remote, args.names or None)
    if not names:
        _say(args, f"no experiments on {args.git_remote}")
        return EXIT_OK
    exps = ex.list_experiments(ctx.top, names)
    metas, keys = ex.lock_objects(ctx, exps)
    remote = open_remote(ctx.project, args.remote)
    ctx.project.cache.ensure()
    with ctx.project.cache.using():
        result = remote.fetch(metas)
        runs = remote.fetch_runs(keys)
    _say(
        args,
        f"pulled {len(exps)} experiment(s) from {args.git_remote}; {result.objects} objects and "
        f"{runs} run records from {remote.url}",
    )
    for item in result.missing:
        print(f"missing from the remote: {item}", file=sys.stderr)
    return EXIT_FAILED if result.missing else EXIT_OK


COMMANDS: dict = {"exp": cmd_exp}
