"""`reprobuild plots show [TARGET...]` and `plots diff [REV|EXPERIMENT...]`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EXIT_OK, UsageError


def register(add) -> None:
    from .main import _global_options

    common = _global_options(suppress=True)
    p = add("plots", "the stages' declared plots as an offline HTML page and SVGs")
    sub = p.add_subparsers(dest="plots_command", metavar="ACTION")
    show = sub.add_parser(
        "show", parents=[common], help="the plots of the workspace (or of --rev REV)"
    )
    show.add_argument(
        "targets", nargs="*", metavar="TARGET", help="plot paths or stage names (default: all)"
    )
    show.add_argument("--rev", metavar="REV", help="of this git revision or experiment")
    diff = sub.add_parser(
        "diff",
        parents=[common],
        help="revisions and experiments overlaid (default HEAD and the workspace)",
    )
    diff.add_argument(
        "revs",
        nargs="*",
        metavar="REV",
        help="git revisions or experiment names; one: it against the workspace",
    )
    diff.add_argument(
        "--targets", nargs="+", default=[], metavar="TARGET", help="only these plots or stages"
    )
    for parser in (show, diff):
        parser.add_argument(
            "-o",
            "--out",
            metavar="DIR",
            help="write index.html and the SVGs here (default: reprobuild_plots/ beside the pipeline)",
        )


def cmd_plots(args) -> int:
    from .. import plots
    from ..project import Project

    if args.plots_command not in ("show", "diff"):
        raise UsageError("usage: reprobuild plots show [TARGET...] | plots diff [REV...]")
    plots.need_libraries()
    project = Project.open(args.file, args.cache_dir)
    if args.plots_command == "show":
        revs = [args.rev]
        heading = f"Plots ({args.rev or 'workspace'})"
    else:
        revs = list(args.revs) if len(args.revs) > 1 else [*(args.revs or ["HEAD"]), None]
        heading = "Plots: " + " vs ".join(r or "workspace" for r in revs)
    chart_list = plots.charts(project, args.targets)
    if not chart_list:
        if not args.quiet:
            print("no plots declared (a stage lists them under `plots:`)")
        return EXIT_OK
    plots.load(project, chart_list, revs)
    folder = Path(args.out) if args.out else project.ws.dir / plots.OUT_FOLDER
    written = plots.write(project, chart_list, folder, heading)
    for chart in chart_list:
        for note in chart.notes:
            print(f"warning: {note}", file=sys.stderr)
    if not args.quiet:
        print(
            f"wrote {shown(written[0])} and {len(written) - 1} pictures ({len(chart_list)} plots)"
        )
    return EXIT_OK


def shown(path: Path) -> str:
    """Relative to the current folder when inside it, else absolute."""
    path = path.absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


COMMANDS: dict = {"plots": cmd_plots}
