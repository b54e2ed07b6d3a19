"""Shared fixtures: a tree of files in one call, a git workspace, and the CLI in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from reprobuild.cli.main import main

REPO = Path(__file__).resolve().parent.parent

# The S3 server on loopback and the folder/S3 `remote_url` fixtures, for every test.
pytest_plugins = ["tests.s3server"]


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    """Write {relative path: content} under root; str content is dedented."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout


@dataclass
class Result:
    code: int
    out: str
    err: str


class Workspace:
    """A temporary git repository with a pipeline, driven through the real CLI."""

    def __init__(self, root: Path, capsys):
        self.root = root
        self.capsys = capsys

    def write(self, files: dict) -> None:
        write_tree(self.root, files)

    def run(self, *args: str) -> Result:
        """The CLI in this process (fast); stages still run as real subprocesses."""
        self.capsys.readouterr()
        old = os.getcwd()
        os.chdir(self.root)
        try:
            code = main(list(args))
        finally:
            os.chdir(old)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def run_process(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """The CLI as a separate process, for locks, signals and start-up."""
        return subprocess.run(
            [sys.executable, "-m", "reprobuild", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            **kw,
        )

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def commit_all(self, message: str = "change") -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)


@pytest.fixture
def ws(tmp_path, capsys) -> Workspace:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    return Workspace(root, capsys)


def stages_run(result: Result) -> list[str]:
    """Stage names a build ran, from its plain output (`running NAME (...)`)."""
    names = []
    for line in result.out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "running":
            names.append(parts[1])
    return names


def stages_restored(result: Result) -> list[str]:
    return [line.split()[1] for line in result.out.splitlines() if line.split()[:1] == ["restored"]]
