"""Commands that version raw data: add, import, update (tracked sources).

`register(add)` adds their subparsers; COMMANDS maps a name to `f(args) -> exit
code`, as in the other command groups. fsspec is imported only by import and
update, through reprobuild.origin.
"""

from __future__ import annotations

from ..errors import EXIT_OK, UsageError


def register(add) -> None:
    a = add("add", "track files or folders no stage makes: declared, cached, pinned")
    a.add_argument("paths", nargs="+", metavar="PATH")
    i = add("import", "download a URL (any fsspec URL) into PATH and track it, pinning its version")
    i.add_argument("url", metavar="URL")
    i.add_argument("path", metavar="PATH")
    u = add("update", "ask imported sources' origins for a new version and bring it in")
    u.add_argument("paths", nargs="*", metavar="PATH", help="default: every imported source")


def cmd_add(args) -> int:
    from .. import sources
    from ..project import Project

    project = Project.open(args.file, args.cache_dir)
    rels = [_inside(project, p) for p in args.paths]
    for rel, meta in sources.add(project, rels):
        _say(args, f"added {rel} ({_describe(meta)})")
    return EXIT_OK


def cmd_import(args) -> int:
    from .. import sources
    from ..project import Project
    from ..remote import redact

    # the pipeline may already read PATH: it is what this import brings
    project = Project.open(args.file, args.cache_dir, check_missing=False)
    rel = _inside(project, args.path)
    meta = sources.import_url(project, args.url, rel)
    _say(args, f"imported {redact(args.url)} -> {rel} ({_describe(meta)})")
    return EXIT_OK


def cmd_update(args) -> int:
    from .. import sources
    from ..project import Project

    project = Project.open(args.file, args.cache_dir)
    paths = [_inside(project, p) for p in args.paths] or None
    for r in sources.update(project, paths):
        if r.status == "updated":
            _say(args, f"updated {r.path}: source changed: {r.old} -> {r.new}")
        else:
            _say(args, f"{r.status}: {r.path}")
    return EXIT_OK


def _inside(project, path: str) -> str:
    """PATH as the pipeline names it; sources live in the pipeline's folder or below."""
    rel = project.relative(path)
    if rel in (".", "") or rel == ".." or rel.startswith("../"):
        raise UsageError(f"'{path}' is not inside the pipeline's folder ({project.ws.dir})")
    return rel


def _describe(meta) -> str:
    from rich.filesize import decimal

    files = f"{meta.nfiles:,} files, " if meta.nfiles is not None else ""
    return f"{files}{decimal(meta.size)}"


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


COMMANDS = {"add": cmd_add, "import": cmd_import, "update": cmd_update}
