"""The console reporter: rich on a terminal, plain lines when piped."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from ..decision import RESTORE, RUN
from ..reporter import Reporter

FATE_STYLE = {RUN: "yellow", RESTORE: "cyan", "skip": "green"}
FATE_WORD = {RUN: "run", RESTORE: "restore", "skip": "up to date"}


def make_console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class ConsoleReporter(Reporter):
    def __init__(self, console: Console, verbose: bool = False, quiet: bool = False,
                 prefix_output: bool = False):
        self.c = console
        self.err = make_console(stderr=True)
        self.verbose = verbose
        self.quiet = quiet
        self.prefix_output = prefix_output

    def say(self, text: str) -> None:
        if not self.quiet:
            self.c.print(text)

    def warning(self, message):
        self.err.print(f"[yellow]warning:[/] {escape(message)}")

    def waiting_for_lock(self, holder):
        self.err.print(f"waiting for another reprobuild (pid {holder}) to finish with this workspace...")

    def stage_planned(self, d):
        style = FATE_STYLE.get(d.fate, "")
        self.c.print(f"[{style}]{FATE_WORD[d.fate]:>10}[/] [bold]{escape(d.stage)}[/]")
        for r in d.reasons:
            self.c.print(f"{'':>12}{escape(r)}")

    def stage_skipped(self, d):
        if self.verbose:
            self.say(f"[green]{'up to date':>10}[/] {escape(d.stage)}")

    def stage_restored(self, d):
        self.say(f"[cyan]{'restored':>10}[/] [bold]{escape(d.stage)}[/] [dim]({escape(', '.join(d.reasons))})[/]")

    def stage_started(self, d):
        self.say(f"[yellow]{'running':>10}[/] [bold]{escape(d.stage)}[/] [dim]({escape(', '.join(d.reasons))})[/]")

    def stage_output(self, stage, line):
        if self.quiet:
            return
        if self.prefix_output:
            self.c.print(f"[dim]\\[{escape(stage)}][/] {escape(line)}")
        else:
            self.c.out(line, highlight=False)

    def stage_finished(self, d, seconds):
        self.say(f"[green]{'done':>10}[/] [bold]{escape(d.stage)}[/] [dim]{seconds:.1f}s[/]")

    def stage_failed(self, stage, message, log_tail=""):
        self.err.print(f"[red]{'failed':>10}[/] [bold]{escape(stage)}[/]: {escape(message)}")
        if log_tail and self.prefix_output:
            self.err.print(f"[dim]--- last lines of {escape(stage)}'s log ---[/]\n{escape(log_tail)}")

    def stage_blocked(self, stage, failed_upstream):
        self.say(f"[red]{'not run':>10}[/] {escape(stage)} [dim](upstream '{escape(failed_upstream)}' failed)[/]")

    def build_finished(self, s):
        parts = []
        for label, items in (("ran", s.ran), ("restored", s.restored), ("up to date", s.skipped),
                             ("failed", s.failed), ("not run", s.blocked)):
            if items:
                parts.append(f"{len(items)} {label}")
        if s.interrupted:
            parts.append("interrupted")
        self.say(", ".join(parts) if parts else "nothing to build")


def is_terminal() -> bool:
    return sys.stdout.isatty()
