"""The command line is parsed by the named command's parser alone; it must read the same."""

import argparse

import pytest

from reprobuild.cli.main import COMMANDS, _command_named, parser


def helps(p: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Every (sub)command's help text, by its path: `exp run`, `cache verify`, ..."""
    found = {prefix: p.format_help()}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(helps(child, f"{prefix} {name}".strip()))
    return found


def test_each_command_alone_reads_as_in_the_whole_parser():
    whole = helps(parser())
    for command in COMMANDS:
        alone = helps(parser(only=command))
        mine = {path: text for path, text in alone.items() if path.split(" ")[0] == command}
        assert mine, command
        for path, text in mine.items():
            assert text == whole[path], path


@pytest.mark.parametrize(
    "argv, command",
    [
        (["build", "-q"], "build"),
        (["-f", "x.yaml", "status"], "status"),
        (["--file=x.yaml", "-v", "--cache-dir", "c", "exp", "show"], "exp"),
        (["-fx.yaml", "-q", "push"], "push"),
        (["--help", "build"], None),  # the top-level help lists every command
        (["--version"], None),
        (["-x", "build"], None),  # an unknown option: the whole parser says so
        (["bogus"], None),
        (["-f"], None),
        ([], None),
    ],
)
def test_the_command_is_found_only_after_global_options(argv, command):
    assert _command_named(argv) == command
