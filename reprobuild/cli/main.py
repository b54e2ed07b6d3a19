"""Entry point: parse the command line, open the project, call the engine, exit.

Every flag lives here; the engine gets explicit option objects. Heavy
libraries (dask, fsspec, polars, scikit-learn) are never imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import __version__, errors
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ReprobuildError, UsageError


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """Global options, accepted before and after the command name.

    The copy on the subcommands has SUPPRESS defaults, so that
    `reprobuild -f X build` is not reset by the subcommand's own default.
    """
    kw = {"default": argparse.SUPPRESS} if suppress else {}
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    common.add_argument(
        "-f",
        "--file",
        metavar="PATH",
        help="pipeline file, or a folder holding reprobuild.yaml",
        **kw,
    )
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (overrides cache: and REPROBUILD_CACHE_DIR)",
        **kw,
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="more detail; tracebacks on errors", **kw
    )
    common.add_argument("-q", "--quiet", action="store_true", help="only errors", **kw)
    return common


class _Formatter(argparse.HelpFormatter):
    """argparse's, with the width found as shutil.get_terminal_size finds it, without
    importing shutil (and zlib, bz2 and lzma with it: 2 ms of every command)."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("width", _columns() - 2)
        super().__init__(prog, **kwargs)


def _columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Unused:
    """Stands in for the parser of a command that is not being run: accepts and ignores
    every call (add_argument, add_subparsers, ...)."""

    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line. With `only`, that command's subparser is the only one built (built
    the same way, so its help and errors read the same): every command's costs ~6 ms, a
    twentieth of a no-op build."""
    common = _global_options(suppress=True)
    p = argparse.ArgumentParser(
        prog="reprobuild",
        parents=[_global_options(suppress=False)],
        description="Reproducible builds for ML pipelines.",
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"reprobuild {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_text):
        if only is not None and name != only:
            return _Unused()
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            formatter_class=_Formatter,
        )

    add("init", "write a starter reprobuild.yaml, params.yaml and cache .gitignore")

    b = add("build", "bring targets (stage names or output paths; default all) up to date")
    b.add_argument("targets", nargs="*", metavar="TARGET")
    b.add_argument("-j", "--jobs", type=int, default=1, help="stages run at once (0: one per CPU)")
    b.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="print each stage's fate and why; change nothing",
    )
    b.add_argument(
        "--force", action="store_true", help="run the selected stages even when up to date"
    )
    b.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="after a failure, build what does not depend on it",
    )
    b.add_argument(
        "--no-run-cache", action="store_true", help="never restore outputs from run records"
    )
    b.add_argument(
        "--no-wait", action="store_true", help="fail at once when another build holds the workspace"
    )
    b.add_argument(
        "--executor",
        choices=("local", "dask"),
        help="where stages run (default: local, or `executor: {name: dask}` in the pipeline file)",
    )
    b.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="Dask scheduler address (tcp://HOST:PORT); "
        "default REPROBUILD_DASK_SCHEDULER, else a local cluster",
    )
    b.add_argument(
        "--pull",
        action="store_true",
        help="restore stages a remote has built instead of running them",
    )
    b.add_argument(
        "--remote", metavar="URL", help="remote cache URL (overrides REPROBUILD_REMOTE and remote:)"
    )
    b.add_argument(
        "--strict",
        action="store_true",
        help="a stage that gives different bytes for a key built before fails (CI)",
    )

    s = add("status", "every out-of-date stage and every reason")
    s.add_argument("targets", nargs="*", metavar="TARGET")
    s.add_argument("--check", action="store_true", help="exit 1 when anything is stale")
    s.add_argument("--json", action="store_true", help="print JSON")

    c = add("checkout", "make the workspace's outputs match the lockfile, from the cache")
    c.add_argument("targets", nargs="*", metavar="STAGE")
    c.add_argument(
        "--rev",
        metavar="REV",
        help="the lockfile of this git revision instead of the working tree's",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="also overwrite outputs changed by hand that the cache lacks",
    )

    m = add("commit", "record the workspace as it is into the lockfile, without running")
    m.add_argument("targets", nargs="*", metavar="STAGE")

    g = add("gc", "remove cache objects that no kept lockfile refers to")
    scope = g.add_mutually_exclusive_group()
    scope.add_argument(
        "--workspace",
        action="store_true",
        help="keep what the workspace's lockfiles name (default)",
    )
    scope.add_argument(
        "--all-commits", action="store_true", help="also keep what any git commit's lockfiles name"
    )
    g.add_argument("-n", "--dry-run", action="store_true", help="only list what would be removed")

    # their subcommands: dag, lineage, diff, metrics, params; push, pull; add, import,
    # update; exp ...; plots; report; key
    from . import data, exp, history, key, plots, remote, report

    history.register(add)
    remote.register(add)
    data.register(add)
    exp.register(add)
    plots.register(add)
    report.register(add)
    key.register(add)

    v = add(
        "verify", "re-run stages aside from the workspace and compare their outputs bit for bit"
    )
    v.add_argument("targets", nargs="*", metavar="STAGE")
    v.add_argument(
        "--all", action="store_true", help="every stage (the default when none is named)"
    )

    cache = add("cache", "cache upkeep")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    cache_sub.add_parser(
        "verify", parents=[common], help="re-hash every object; quarantine corrupt ones"
    )
    return p


_GLOBAL_FLAGS = {"-v", "--verbose", "-q", "--quiet"}
_GLOBAL_VALUED = {"-f", "--file", "--cache-dir"}


def _command_named(argv: list[str]) -> str | None:
    """The command in `argv` when only global options come before it; None when anything
    else does (`--help`, `--version`, an unknown option: the whole parser answers)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_FLAGS:
            i += 1
        elif arg in _GLOBAL_VALUED:
            i += 2
        elif arg.startswith(("--file=", "--cache-dir=")) or (arg[:2] == "-f" and len(arg) > 2):
            i += 1
        else:
            return arg if arg in COMMANDS else None
    return None


def _print_warning(message: str) -> None:
    """Warnings from below the CLI (a lockfile entry ignored, ...) as lines on stderr."""
    from ..safetext import clean

    print(clean(message), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    errors.warning_sink = _print_warning
    args = parser(_command_named(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if not args.command:
        parser().print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except ReprobuildError as exc:
        _error(str(exc), exc.hint, args.verbose)
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted", None, args.verbose)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where}", None, args.verbose)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line unless -v
        _error(
            f"unexpected {type(exc).__name__}: {exc}",
            "run with -v for the traceback, and report it",
            args.verbose,
        )
        return EXIT_USAGE


def _error(message: str, hint: str | None, verbose: bool) -> None:
    if verbose and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    from ..safetext import clean

    line = f"error: {message}"
    if hint:
        line += f" ({hint})"
    print(clean(line), file=sys.stderr)


def _open(args, before_parse=None):
    """The project; on a terminal, hashing a large file shows a progress bar."""
    from ..project import Project

    project = Project.open(args.file, args.cache_dir, before_parse=before_parse)
    if sys.stderr.isatty() and not args.quiet:
        from .console import HashProgress, make_console

        project.hasher.progress = HashProgress(make_console(stderr=True))
    return project


def _reporter(args, jobs: int = 1):
    """Rich live panel on a terminal; plain lines (prefixed by stage under -j) when piped."""
    from .console import ConsoleReporter, LazyConsole, LiveReporter, make_console, plain_stream

    if args.quiet or args.dry_run or plain_stream(sys.stdout):
        console = LazyConsole()  # rich only if something is printed, and to a terminal
    else:
        console = make_console()
        if console.is_terminal:
            return LiveReporter(console, verbose=args.verbose, quiet=args.quiet)
    return ConsoleReporter(console, verbose=args.verbose, quiet=args.quiet, prefix_output=jobs != 1)


def cmd_init(args) -> int:
    from .init import run_init

    folder = Path(args.file or ".").absolute()
    for path in run_init(folder):
        if not args.quiet:
            print(
                f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
            )
    return EXIT_OK


def _start_probe(ws) -> None:
    """A build whose pipeline must be parsed (a fresh workspace's first) probes the
    machine meanwhile, on another core (machine.start_probe)."""
    from ..machine import start_probe

    start_probe(str(ws.state_dir))


def cmd_build(args) -> int:
    from ..engine import BuildOptions, build

    if args.jobs < 0:
        raise UsageError("-j takes a number >= 0")
    project = _open(args, None if args.dry_run else _start_probe)
    executor, scheduler, retries = _executor_settings(args, project.pipeline.executor)
    opts = BuildOptions(
        targets=tuple(args.targets),
        dry_run=args.dry_run,
        force=args.force,
        keep_going=args.keep_going,
        run_cache=not args.no_run_cache,
        jobs=args.jobs,
        wait=not args.no_wait,
        pull=args.pull,
        remote=args.remote,
        executor=executor,
        scheduler=scheduler,
        retries=retries,
        strict=args.strict,
    )
    summary = build(project, opts, _reporter(args, args.jobs))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


def _executor_settings(args, configured: dict) -> tuple[str, str | None, int]:
    """(executor, scheduler, retries): command line, then environment, then `executor:`."""
    unknown = set(configured) - {"name", "scheduler", "retries"}
    if unknown:
        raise UsageError(
            f"unknown field(s) in `executor:`: {', '.join(sorted(unknown))} "
            "(allowed: name, scheduler, retries)"
        )
    scheduler = (
        args.scheduler or os.environ.get("REPROBUILD_DASK_SCHEDULER") or configured.get("scheduler")
    )
    executor = args.executor or configured.get("name") or "local"
    if executor not in ("local", "dask"):
        raise UsageError(f"unknown executor '{executor}' (local or dask)")
    if args.scheduler and executor != "dask":
        raise UsageError("--scheduler goes with --executor dask")
    retries = configured.get("retries", 0)
    if not isinstance(retries, int) or retries < 0:
        raise UsageError("`executor.retries` must be a whole number >= 0")
    return executor, scheduler, retries


def cmd_status(args) -> int:
    from .. import sources
    from ..engine import plan

    project = _open(args)
    entries, problem = project.read_lock()
    names = project.select(args.targets)
    wanted = sources.needed_by(project, names) if args.targets else None
    checked = sources.check(project, project.read_sources(), wanted)
    source_states = [s for s in checked if s.reason]
    decisions = plan(project, names, entries, sources_known=sources.known_contents(checked))
    project.save_stats()
    stale = [d for d in decisions if d.stale]
    unreproducible = _known_unreproducible(project, entries, decisions)
    if args.json:
        doc = {
            "sources": {s.path: s.reason for s in source_states},
            "stages": {d.stage: {"fate": d.fate, "reasons": d.reasons} for d in decisions},
            "stale": [d.stage for d in stale],
            "unreproducible": {a.stage: a.to_json() for a in unreproducible},
        }
        if problem:
            doc["warning"] = problem
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        from .console import ConsoleReporter, LazyConsole, show_alarms

        reporter = ConsoleReporter(LazyConsole())
        if problem:
            reporter.warning(problem)
        for st in source_states:
            reporter.source_planned(st.path, st.reason)
        for d in stale:
            reporter.stage_planned(d)
        if not stale and not source_states:
            n = len(decisions)
            print(f"{n} stage{'' if n == 1 else 's'} up to date")
        for path in _untracked_inputs(project, names)[:5]:
            print(
                f"hint: '{path}' is read but neither made by a stage nor tracked: "
                f"`reprobuild add {path}` versions it"
            )
        show_alarms(reporter.c, unreproducible, _UNREPRODUCIBLE)
    return EXIT_FAILED if args.check and (stale or source_states) else EXIT_OK


def _untracked_inputs(project, names) -> list[str]:
    """Deps no stage makes and no source tracks: hashed, but their bytes are kept nowhere."""
    found = []
    for name in names:
        for dep in project.pipeline.stages[name].deps:
            if (
                not dep.path.startswith("../")  # `add` tracks paths in the pipeline's folder
                and not project.outs.related(dep.path)
                and project.pipeline.source_of(dep.path) is None
            ):
                found.append(dep.path)
    return sorted(set(found))


_UNREPRODUCIBLE = (
    "known unreproducible: the locked key once gave other bytes (alarms of earlier builds):"
)


def _known_unreproducible(project, entries, decisions) -> list:
    from .. import alarm

    names = {d.stage for d in decisions}
    return [a for a in alarm.current(project.ws.state_dir, entries) if a.stage in names]


def cmd_checkout(args) -> int:
    from ..engine import checkout

    project = _open(args)
    if args.rev:
        entries, locked_sources = project.lock_at_rev(args.rev)
    else:
        entries, problem = project.read_lock()
        if problem:
            raise UsageError(problem)
        locked_sources = project.read_sources()
    names, source_paths = None, None
    if args.targets:  # only the named stages and sources, not their upstream
        source_paths, stage_targets = project.split_sources(args.targets)
        names = [n for n in project.resolve(stage_targets) if n in entries]
    result = checkout(
        project, entries, names, force=args.force, pins=locked_sources, source_paths=source_paths
    )
    return _report_checkout(result, args)


def _report_checkout(result, args) -> int:
    from ..safetext import clean

    if not args.quiet:
        for path in result.restored:
            print(f"restored {clean(path)}")
        print(
            f"{len(result.restored)} restored, {len(result.unchanged)} already in place, "
            f"{len(result.missing)} missing from the cache"
        )
    for item in result.missing:
        print(f"missing from the cache: {clean(item)}", file=sys.stderr)
    for path in result.kept:
        print(
            f"kept {clean(path)}: changed by hand and not in the cache (--force overwrites it)",
            file=sys.stderr,
        )
    for item in result.ignored:
        print(f"ignored {clean(item)}: not an out of that stage in the pipeline", file=sys.stderr)
    return EXIT_FAILED if result.missing or result.kept else EXIT_OK


def cmd_commit(args) -> int:
    from ..engine import commit
    from ..reporter import Reporter

    project = _open(args)
    if args.targets:  # only the named stages and sources, not their upstream
        source_paths, stage_targets = project.split_sources(args.targets)
        names = project.resolve(stage_targets)
    else:
        source_paths, names = None, project.select([])
    done = commit(project, names, Reporter(), source_paths)
    if not args.quiet:
        for name in done:
            print(f"committed {name}")
    return EXIT_OK


def _expand_names(project, targets):
    return project.resolve(targets)


def cmd_gc(args) -> int:
    from ..gc import collect

    project = _open(args)
    from .console import make_console

    err = make_console(stderr=True)
    with project.cache.using(
        exclusive=True,
        on_wait=lambda: err.print("waiting for running builds to finish with the cache..."),
    ):
        result = collect(
            project.cache,
            project.ws.root,
            all_commits=args.all_commits,
            dry_run=args.dry_run,
            extra=[project.ws.lock_file],
        )
    if not args.quiet:
        verb = "would remove" if args.dry_run else "removed"
        if args.dry_run or args.verbose:
            for name in result.objects:
                print(f"{verb} object {name}")
            for key in result.runs:
                print(f"{verb} run record {key}")
            for name in result.envs:
                print(f"{verb} environment {name}")
        print(
            f"{verb} {len(result.objects)} objects ({result.bytes:,} bytes) and {len(result.runs)} run records; "
            f"kept what {result.lockfiles} lockfile version(s) name"
            + (f"; {verb} {len(result.envs)} environment(s)" if result.envs else "")
        )
    return EXIT_OK


def cmd_verify(args) -> int:
    from ..verify import verify

    project = _open(args)
    entries, problem = project.read_lock()
    if problem:
        raise UsageError(problem)
    names = list(_expand_names(project, args.targets)) if args.targets else list(project.select([]))
    quiet = args.quiet

    from ..safetext import clean

    def show(v) -> None:
        if v.status == "reproducible":
            if not quiet:
                print(f"reproducible  {v.stage}", flush=True)
            return
        print(
            f"{v.status.upper():<13} {v.stage}" + (f": {clean(v.message)}" if v.message else ""),
            flush=True,
        )
        for d in v.diffs:
            print(f"  out {clean(d.path)} differs from the lockfile")
            for line in d.detail:
                print(f"    {clean(line)}")

    verdicts = verify(project, names, entries, on_done=show)
    bad = sum(v.status != "reproducible" for v in verdicts)
    if not quiet:
        print(f"{len(verdicts) - bad} of {len(verdicts)} stages reproducible")
        from .. import alarm
        from .console import make_console, show_alarms

        known = [a for a in alarm.current(project.ws.state_dir, entries) if a.stage in names]
        show_alarms(make_console(), known, _UNREPRODUCIBLE)
    return EXIT_FAILED if bad else EXIT_OK


def cmd_cache(args) -> int:
    if args.cache_command != "verify":
        raise UsageError("usage: reprobuild cache verify")
    project = _open(args)
    report = project.cache.verify()
    for name in report.corrupt:
        print(f"corrupt: {name} (moved to {project.cache.quarantine_dir})", file=sys.stderr)
    if not args.quiet:
        print(
            f"checked {report.checked} objects: {len(report.corrupt)} corrupt"
            + (f"; swept {report.swept_tmp} stale temp files" if report.swept_tmp else "")
        )
    return EXIT_FAILED if report.corrupt else EXIT_OK


COMMANDS = {
    "init": cmd_init,
    "build": cmd_build,
    "status": cmd_status,
    "checkout": cmd_checkout,
    "commit": cmd_commit,
    "gc": cmd_gc,
    "cache": cmd_cache,
    "verify": cmd_verify,
}


def _plugin_commands():
    from . import data, exp, history, key, plots, remote, report

    groups = (history, remote, data, exp, plots, report, key)
    return {name: f for group in groups for name, f in group.COMMANDS.items()}


COMMANDS.update(_plugin_commands())
