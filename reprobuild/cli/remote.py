"""Commands that move cache objects to and from a remote: push, pull.

`register(add)` adds their subparsers; `add(name, help)` returns an argparse
parser that already has the global options. COMMANDS maps a command name to
its function `f(args) -> exit code`. This module is imported at start-up:
fsspec and reprobuild.remote are imported inside the commands only.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

from ..errors import EXIT_FAILED, EXIT_OK, UsageError

JOBS = 16


def register(add) -> None:
    p = add("push", "upload the cache objects and run records the lockfile names to the remote")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="stages, outputs (upstream included) or tracked sources; default all",
    )
    p.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="every object and run record in the local cache, not only what the lockfile names",
    )
    p.add_argument(
        "--sign-key",
        metavar="PATH",
        help="sign the run records pushed with this secret key (default REPROBUILD_SIGNING_KEY)",
    )
    _transfer_options(p)
    q = add("pull", "download what the lockfile names from the remote and check the workspace out")
    q.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="stages, outputs or tracked sources (only their own data); default all",
    )
    q.add_argument(
        "--with-deps",
        action="store_true",
        help="also the outputs of the targets' upstream stages and the sources they read",
    )
    q.add_argument(
        "--rev",
        metavar="REV",
        help="what the lockfile named at this git revision (then checked out, as checkout --rev)",
    )
    _transfer_options(q)


def _transfer_options(p) -> None:
    p.add_argument(
        "--remote", metavar="URL", help="remote cache URL (overrides REPROBUILD_REMOTE and remote:)"
    )
    p.add_argument(
        "-j", "--jobs", type=int, default=JOBS, help=f"transfers at once (default {JOBS})"
    )


def cmd_push(args) -> int:
    from ..remote import open_remote, push

    if args.everything and args.targets:
        raise UsageError("push takes TARGETs or --all, not both")
    project, names, source_paths = _open(args, with_deps=True)
    sign_key = args.sign_key or os.environ.get("REPROBUILD_SIGNING_KEY")
    signer = None
    if sign_key:
        from ..signature import load_signing_key

        signer = load_signing_key(sign_key)
    remote = open_remote(project, args.remote, jobs=args.jobs, create=True)
    _warn_on_console(remote)
    if signer is not None:
        remote.signer = signer
        if remote.trust and signer.public not in remote.trust.keys:
            remote.on_warning(
                f"signing with {signer.public}, which is not in trusted_keys: "
                "readers of this pipeline will not trust these records"
            )
    with _progress("push", args.quiet) as progress:
        result = push(project, remote, names, args.everything, progress, source_paths)
    _say(
        args,
        f"pushed {result.objects} objects ({_size(result.bytes)}) and {result.runs} "
        f"{'signed ' if signer else ''}run records "
        f"to {remote.url}; {result.present + result.runs_present} were already there",
    )
    for item in result.corrupt:
        print(f"corrupt in the local cache (quarantined), not pushed: {item}", file=sys.stderr)
    for item in result.missing:
        print(f"missing from the local cache, not pushed: {_clean(item)}", file=sys.stderr)
    return EXIT_FAILED if result.missing or result.corrupt else EXIT_OK


def cmd_pull(args) -> int:
    from ..engine import checkout
    from ..remote import open_remote, pull, resolve_url

    project, names, source_paths = _open(args, with_deps=args.with_deps)
    remote = None  # none configured: imports still come from their origins
    if resolve_url(project, args.remote) is not None:
        remote = open_remote(project, args.remote, jobs=args.jobs)
        _warn_on_console(remote)
    locked = project.lock_at_rev(args.rev) if args.rev else None
    with _progress("pull", args.quiet) as progress:
        result, entries = pull(project, remote, names, progress, source_paths, locked)
    if remote is not None:
        _say(
            args,
            f"pulled {result.objects} objects ({_size(result.bytes)}) and {result.runs} run "
            f"records from {remote.url}; {result.present} were already in the cache",
        )
    where = "the remote" if remote is not None else "the cache (no remote is configured)"
    for item in result.missing:
        print(f"missing from {where}: {_clean(item)}", file=sys.stderr)
    for item in result.untrusted:
        print(f"not trusted, not used: {_clean(item)}", file=sys.stderr)
    pins = project.read_sources() if locked is None else locked[1]
    co = checkout(project, entries, names, pins=pins, source_paths=source_paths)
    if not args.quiet:
        for path in co.restored:
            print(f"restored {_clean(path)}")
        print(f"{len(co.restored)} restored, {len(co.unchanged)} already in place")
    for item in co.missing:
        if item not in result.missing:
            print(f"missing from the cache: {_clean(item)}", file=sys.stderr)
    if remote is None and result.missing:
        open_remote(project, None)  # raises: how to configure the remote the rest is on
    return EXIT_FAILED if result.missing or co.missing else EXIT_OK


def _open(args, with_deps: bool):
    """(project, stage names, source paths) the targets name; None, None for everything.

    Without `with_deps` only the named stages' own outputs and the named sources;
    with it, their upstream stages too and every source those stages read.
    """
    from .. import sources
    from ..project import Project

    if args.jobs < 1:
        raise UsageError("-j takes a number >= 1")
    project = Project.open(args.file, args.cache_dir)
    if not args.targets:
        return project, None, None
    source_paths, stage_targets = project.split_sources(args.targets)
    if not with_deps:
        return project, project.resolve(stage_targets), source_paths
    names = project.select(stage_targets) if stage_targets else []
    source_paths += [s.path for s in sources.needed_by(project, names)]
    return project, names, list(dict.fromkeys(source_paths))


def _clean(text: str) -> str:
    from ..safetext import clean

    return clean(text)


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


def _size(n: int) -> str:
    from rich.filesize import decimal

    return decimal(n)


def _warn_on_console(remote) -> None:
    from ..safetext import markup_escape as escape
    from .console import make_console

    err = make_console(stderr=True)
    remote.on_warning = lambda message: err.print(f"[yellow]warning:[/] {escape(message)}")


@contextmanager
def _progress(verb: str, quiet: bool):
    """A rich bar (files, bytes, rate) on a terminal; nothing when piped or quiet."""
    from ..remote import Progress
    from .console import make_console

    console = make_console(stderr=True)
    if quiet or not console.is_terminal:
        yield Progress()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as Bar,
    )

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}/{task.fields[nfiles]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        yield _BarProgress(bar, bar.add_task(verb, total=None, files=0, nfiles=0))


class _BarProgress:
    """remote.Progress drawn on a rich bar; called from the transfer threads."""

    def __init__(self, bar, task):
        self.bar, self.task = bar, task
        self.lock = threading.Lock()
        self.files = self.nfiles = self.total = 0

    def add_total(self, files: int, nbytes: int) -> None:
        with self.lock:
            self.nfiles += files
            self.total += nbytes
            self.bar.update(self.task, total=self.total or None, nfiles=self.nfiles)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.task, nbytes)

    def file_done(self) -> None:
        with self.lock:
            self.files += 1
            self.bar.update(self.task, files=self.files)


COMMANDS: dict = {"push": cmd_push, "pull": cmd_pull}
