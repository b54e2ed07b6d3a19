"""Commands that move cache objects to and from a remote: push, pull.

`register(add)` adds their subparsers; `add(name, help)` returns an argparse
parser that already has the global options. COMMANDS maps a command name to
its function `f(args) -> exit code`.
"""

from __future__ import annotations


def register(add) -> None:
    pass


COMMANDS: dict = {}
