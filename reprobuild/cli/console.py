"""The console reporter: rich on a terminal, plain lines when piped."""

from __future__ import annotations

import os
import re
import sys

from ..decision import RESTORE, RUN
from ..reporter import Reporter
from ..safetext import markup_escape as escape

TYPE_CHECKING = False  # typing's, which type checkers honour, without importing typing (2 ms)
if TYPE_CHECKING:
    from rich.console import Console

FATE_STYLE = {RUN: "yellow", RESTORE: "cyan", "skip": "green"}
FATE_WORD = {RUN: "run", RESTORE: "restore", "skip": "up to date"}


def make_console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class LazyConsole:
    """A console made when first used: a build or status that prints nothing through it
    (a quiet no-op) never imports rich, and one that prints to a pipe or file gets the
    plain text rich would write there, without importing rich (a fifth of a no-op
    `status` of a large folder was rich's import)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name):  # only for what the proxy itself does not have
        if self._console is None:
            stream = sys.stderr if self._stderr else sys.stdout
            if plain_stream(stream):
                self._console = PlainConsole(stream)
            else:
                self._console = make_console(self._stderr)
        return getattr(self._console, name)


def plain_stream(stream) -> bool:
    """Not a terminal, and not told to act as one (the variables rich obeys)."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR"):
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return False


class PlainConsole:
    """What a rich Console (highlight off, soft wrap) prints without a terminal: the
    markup's text, its tags dropped and its escapes undone, tabs expanded. Unlike rich,
    `:name:` stays as it is written rather than becoming an emoji."""

    is_terminal = False

    def __init__(self, stream):
        self.file = stream

    def print(self, *objects, sep: str = " ", end: str = "\n", **_options) -> None:
        text = sep.join(plain(str(o)) for o in objects)
        self.file.write(text.expandtabs(8) + end)

    def out(self, *objects, sep: str = " ", end: str = "\n", **_options) -> None:
        self.file.write(sep.join(str(o) for o in objects).expandtabs(8) + end)


_TAGS = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")  # rich.markup's syntax for a tag


def plain(markup: str) -> str:
    """The text of rich markup: tags dropped; `\\[` is a bracket, `\\\\` a backslash."""
    out, pos = [], 0
    for match in _TAGS.finditer(markup):
        whole, escapes, _ = match.groups()
        out.append(markup[pos : match.start()])
        pos = match.end()
        backslashes, escaped = divmod(len(escapes), 2)
        out.append("\\" * backslashes)
        if escaped:  # an escaped bracket: literal text
            out.append(whole[len(escapes) :])
    out.append(markup[pos:])
    return "".join(out)


class ConsoleReporter(Reporter):
    def __init__(
        self,
        console: Console,
        verbose: bool = False,
        quiet: bool = False,
        prefix_output: bool = False,
    ):
        self.c = console
        self.err = LazyConsole(stderr=True)
        self.verbose = verbose
        self.quiet = quiet
        self.prefix_output = prefix_output
        self.tails: dict[str, str] = {}
        self.alarms: list = []

    def say(self, text: str) -> None:
        if not self.quiet:
            self.c.print(text)

    def warning(self, message):
        self.err.print(f"[yellow]warning:[/] {escape(message)}")

    def waiting_for_lock(self, holder):
        self.err.print(
            f"waiting for another reprobuild (pid {holder}) to finish with this workspace..."
        )

    def source_planned(self, path, reason):
        self.c.print(f"[yellow]{'source':>10}[/] [bold]{escape(path)}[/]")
        self.c.print(f"{'':>12}{escape(reason)}")

    def source_recorded(self, path, reason):
        self.say(f"[cyan]{'recorded':>10}[/] [bold]{escape(path)}[/] [dim]({escape(reason)})[/]")

    def source_restored(self, path):
        self.say(f"[cyan]{'restored':>10}[/] [bold]{escape(path)}[/] [dim](tracked source)[/]")

    def stage_planned(self, d):
        style = FATE_STYLE.get(d.fate, "")
        self.c.print(f"[{style}]{FATE_WORD[d.fate]:>10}[/] [bold]{escape(d.stage)}[/]")
        for r in d.reasons:
            self.c.print(f"{'':>12}{escape(r)}")

    def stage_skipped(self, d):
        if self.verbose:
            self.say(f"[green]{'up to date':>10}[/] {escape(d.stage)}")

    def stage_restored(self, d):
        if self.quiet:  # the line is not even built: escaping costs per stage
            return
        self.say(
            f"[cyan]{'restored':>10}[/] [bold]{escape(d.stage)}[/] [dim]({escape(', '.join(d.reasons))})[/]"
        )

    def stage_started(self, d):
        if self.quiet:  # the line is not even built: escaping costs per stage
            return
        self.say(
            f"[yellow]{'running':>10}[/] [bold]{escape(d.stage)}[/] [dim]({escape(', '.join(d.reasons))})[/]"
        )

    @property
    def shows_output(self) -> bool:
        return not self.quiet

    def stage_output(self, stage, line):
        if self.quiet:
            return
        if self.prefix_output:
            self.c.print(f"[dim]\\[{escape(stage)}][/] {escape(line)}")
        else:
            self.c.out(line, highlight=False)

    def stage_finished(self, d, seconds):
        if self.quiet:  # the line is not even built: escaping costs per stage
            return
        self.say(f"[green]{'done':>10}[/] [bold]{escape(d.stage)}[/] [dim]{seconds:.1f}s[/]")

    def stage_failed(self, stage, message, log_tail=""):
        self.err.print(f"[red]{'failed':>10}[/] [bold]{escape(stage)}[/]: {escape(message)}")
        if log_tail and self.prefix_output:  # shown again at the end, after the other stages' lines
            self.tails[stage] = log_tail

    def stage_blocked(self, stage, failed_upstream):
        self.say(
            f"[red]{'not run':>10}[/] {escape(stage)} [dim](upstream '{escape(failed_upstream)}' failed)[/]"
        )

    def stage_nondeterministic(self, alarm):
        self.alarms.append(alarm)  # shown at the end, where it cannot scroll away

    def build_finished(self, s):
        show_alarms(self.err, self.alarms)
        for stage, tail in self.tails.items():
            self.err.print(
                f"[dim]--- last lines of {escape(stage)}'s log "
                f"(.reprobuild/logs/{escape(stage)}.log) ---[/]\n{escape(tail)}"
            )
        parts = []
        for label, items in (
            ("ran", s.ran),
            ("restored", s.restored),
            ("up to date", s.skipped),
            ("failed", s.failed),
            ("not run", s.blocked),
        ):
            if items:
                parts.append(f"{len(items)} {label}")
        if s.interrupted:
            parts.append("interrupted")
        for item in getattr(s, "untrusted", ()):
            self.err.print(f"[yellow]not trusted, not used:[/] {escape(item)}")
        if getattr(s, "untrusted", ()):
            parts.append(f"{len(s.untrusted)} remote run records not trusted")
        self.say(", ".join(parts) if parts else "nothing to build")


def show_alarms(console: Console, alarms: list, heading: str | None = None) -> None:
    """Stages whose same key gave different bytes: each out, old -> new, and what differs."""
    if not alarms:
        return
    console.print(
        "[yellow]warning:[/] "
        + escape(
            heading
            or f"{len(alarms)} stage(s) gave different bytes for a key built before "
            "(not reproducible across runs or machines):"
        )
    )
    for a in alarms:
        console.print(
            f"  [bold]{escape(a.stage)}[/] [dim](key {a.key[:12]}…, earlier result: {escape(a.earlier)})[/]"
        )
        for path, (old, new) in sorted(a.outs.items()):
            console.print(f"    out {escape(path)}: {old} -> {new}")
        for line in a.differences:
            console.print(f"    machine: {escape(line)}")


def is_terminal() -> bool:
    return sys.stdout.isatty()


class HashProgress:
    """A transient rich progress bar while one large file is hashed (stderr, terminals only)."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, path: str, size: int):
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        progress = Progress(
            "[dim]hashing[/] {task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.console,
            transient=True,
        )
        return _Bar(progress, progress.add_task(escape(os.path.relpath(path)), total=size))


class _Bar:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def __enter__(self):
        self.progress.start()
        return self

    def advance(self, nbytes: int) -> None:
        self.progress.advance(self.task, nbytes)

    def __exit__(self, *exc):
        self.progress.stop()


class LiveReporter(ConsoleReporter):
    """On a terminal: a live panel of running stages (elapsed time), counts and a progress bar.

    Stage output and finished/failed lines scroll above the panel.
    """

    def __init__(self, console: Console, **kw):
        super().__init__(console, prefix_output=True, **kw)
        import time

        from rich.live import Live

        self._time = time.monotonic
        self.running: dict[str, float] = {}
        self.total = 0
        self.counts = {"ran": 0, "restored": 0, "up to date": 0, "failed": 0}
        self.live = Live(
            console=console, refresh_per_second=4, transient=True, get_renderable=self._render
        )

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        done = sum(self.counts.values())
        grid = Table.grid(padding=(0, 1))
        for name, start in sorted(self.running.items(), key=lambda kv: kv[1]):
            grid.add_row(
                "[yellow]running[/]", escape(name), f"[dim]{self._time() - start:5.1f}s[/]"
            )
        bar = ProgressBar(total=max(self.total, 1), completed=done, width=40)
        summary = "  ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        footer = Table.grid(padding=(0, 1))
        footer.add_row(bar, f"{done}/{self.total}", f"[dim]{summary}[/]")
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(footer)
        return outer

    def build_started(self, stages):
        self.total = len(stages)
        if not self.quiet:
            self.live.start()

    def stage_skipped(self, d):
        self.counts["up to date"] += 1
        super().stage_skipped(d)

    def stage_restored(self, d):
        self.counts["restored"] += 1
        super().stage_restored(d)

    def stage_started(self, d):
        self.running[d.stage] = self._time()
        super().stage_started(d)

    def stage_finished(self, d, seconds):
        self.running.pop(d.stage, None)
        self.counts["ran"] += 1
        super().stage_finished(d, seconds)

    def stage_failed(self, stage, message, log_tail=""):
        self.running.pop(stage, None)
        self.counts["failed"] += 1
        super().stage_failed(stage, message, log_tail)

    def build_finished(self, s):
        self.live.stop()
        super().build_finished(s)
