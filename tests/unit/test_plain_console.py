"""Piped output without rich: the same text rich writes when there is no terminal."""

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.markup import escape as rich_escape

from reprobuild.alarm import Alarm
from reprobuild.cli.console import ConsoleReporter, PlainConsole, show_alarms
from reprobuild.decision import RESTORE, RUN
from reprobuild.safetext import markup_escape

NAMES = [
    "train",
    "[bold]not bold[/]",
    "tag [red]in[/red] a name",
    "ends in a backslash\\",
    "two \\\\ backslashes",
    "escaped \\[x] already",
    "[/]",
    "[#fff] colour",
    "[@click] handler",
    "tab\there and ünïcode ✓",
    "brackets [1, 2] [a b]",
    "esc \x1b[2J and bidi \u202e",
]


@pytest.mark.parametrize("name", NAMES)
def test_markup_escape_is_rich_escape(name):
    from reprobuild.safetext import clean

    assert markup_escape(name) == rich_escape(clean(name))


def report(console, name):
    r = ConsoleReporter(console)
    r.source_planned(name, f"source changed: {name}")
    for fate in (RUN, RESTORE):
        r.stage_planned(SimpleNamespace(fate=fate, stage=name, reasons=[f"dep changed: {name}"]))
    alarm = Alarm(name, "k" * 40, name, {name: ("a" * 32, "b" * 32)}, [name])
    show_alarms(console, [alarm], heading=f"about {name}")
    console.print(f"{len(NAMES)} stages up to date")


@pytest.mark.parametrize("name", NAMES)
def test_plain_console_prints_what_rich_prints_to_a_pipe(name):
    ours, theirs = io.StringIO(), io.StringIO()
    report(PlainConsole(ours), name)
    report(Console(file=theirs, highlight=False, soft_wrap=True), name)
    assert ours.getvalue() == theirs.getvalue()


def test_status_with_something_to_say_does_not_import_rich_when_piped(tmp_path):
    (tmp_path / "reprobuild.yaml").write_text(
        "stages:\n  s:\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reprobuild", "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "new stage" in proc.stdout, proc.stdout + proc.stderr
    assert "| rich" not in proc.stderr
