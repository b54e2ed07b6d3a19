"""`reprobuild report [-o FILE.html] [--lineage PATH]`: the pipeline documented on one page."""

from __future__ import annotations

from pathlib import Path

from ..errors import EXIT_OK, UsageError
from .plots import shown


def register(add) -> None:
    r = add(
        "report",
        "one offline page documenting the pipeline: DAG, stages, params, metrics, plots, "
        "lineage, what is stale",
    )
    r.add_argument(
        "-o", "--output", metavar="FILE", default="report.html", help="default report.html"
    )
    r.add_argument(
        "--lineage", metavar="PATH", help="also the lineage of this artifact (e.g. the model)"
    )


def cmd_report(args) -> int:
    from .. import report
    from ..fsutil import atomic_write
    from ..project import Project

    target = Path(args.output)
    if target.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {target.name}: the report is an .html file")
    project = Project.open(args.file, args.cache_dir)
    text = report.build(project, args.lineage)
    atomic_write(target, text.encode("utf-8"))
    if not args.quiet:
        print(f"wrote {shown(target)}")
    return EXIT_OK


COMMANDS: dict = {"report": cmd_report}
