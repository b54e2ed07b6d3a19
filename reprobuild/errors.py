"""Errors a user can see, and the exit codes they map to.

    ReprobuildError            exit 2  anything the user must fix before running
    ├── UsageError             exit 2  bad command-line use
    ├── PipelineError          exit 2  bad pipeline or params file (file, line, stage)
    ├── WorkspaceBusy          exit 2  another build holds the workspace lock
    ├── GitError               exit 2  a revision could not be read from git
    └── CacheError             exit 2  the cache cannot be read or written
A failed stage is not an exception: the engine records it in the build's
Summary, and the CLI exits 1.

Exit codes, in one place:
    0  success
    1  a stage failed, `verify` found a mismatch, `status --check` found stale stages
    2  bad usage, a bad pipeline file, or an environment problem
    130 interrupted (Ctrl-C / SIGTERM)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Where warn() sends its lines. The CLI prints them on stderr; a program that uses
# reprobuild as a library gets them from logging's `reprobuild` logger.
warning_sink = None


def warn(message: str) -> None:
    """A warning from below the CLI (a lockfile entry ignored, ...): one `warning: ...` line.
    logging is imported only when there is one: a no-op build does not pay for it."""
    if warning_sink is not None:
        warning_sink(message)
        return
    import logging

    logging.getLogger("reprobuild").warning(message)


class ReprobuildError(Exception):
    """An error shown to the user as one line: `error: <message>`."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ReprobuildError):
    pass


class PipelineError(ReprobuildError):
    """A problem in a pipeline or params file; names where it is."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        stage: str | None = None,
        hint: str | None = None,
    ):
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        if stage:
            where += f"stage '{stage}': "
        super().__init__(where + message, hint)
        self.file, self.line, self.stage = file, line, stage
        self.bare = message  # without the place, for a caller that names it otherwise


class WorkspaceBusy(ReprobuildError):
    pass


class GitError(ReprobuildError):
    pass


class CacheError(ReprobuildError):
    pass
