"""Commands that read the graph and lockfile history: dag, lineage, diff, metrics, params.

`register(add)` adds their subparsers; `add(name, help)` returns an argparse
parser that already has the global options. COMMANDS maps a command name to
its function `f(args) -> exit code`.
"""

from __future__ import annotations


def register(add) -> None:
    pass


COMMANDS: dict = {}
