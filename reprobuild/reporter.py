"""What the engine tells the outside world. The engine never prints.

The CLI's reporter draws with rich; tests use RecordingReporter; a silent
run uses Reporter itself (every method does nothing).
"""

from __future__ import annotations


class Reporter:
    # False: stage_output would show nothing (a quiet run), so a stage's output goes
    # straight to its log file, with no pipe for the builder to read
    shows_output = True

    def warning(self, message: str) -> None: ...
    def waiting_for_lock(self, holder: str) -> None: ...
    def source_planned(self, path: str, reason: str) -> None: ...  # dry run / status
    def source_recorded(self, path: str, reason: str) -> None: ...  # stored and pinned
    def source_restored(self, path: str) -> None: ...
    def build_started(self, stages: list[str]) -> None: ...
    def stage_planned(self, decision) -> None: ...  # dry run: the fate it would have
    def stage_skipped(self, decision) -> None: ...
    def stage_restored(self, decision) -> None: ...
    def stage_started(self, decision) -> None: ...
    def stage_output(self, stage: str, line: str) -> None: ...
    def stage_finished(self, decision, seconds: float) -> None: ...
    def stage_failed(self, stage: str, message: str, log_tail: str = "") -> None: ...
    def stage_blocked(self, stage: str, failed_upstream: str) -> None: ...
    def stage_nondeterministic(self, alarm) -> None: ...  # alarm.Alarm: same key, other bytes
    def build_finished(self, summary) -> None: ...


class RecordingReporter(Reporter):
    """Keeps every event as (event, stage, detail) for tests."""

    def __init__(self):
        self.events: list[tuple] = []

    def _add(self, *event):
        self.events.append(event)

    def warning(self, message):
        self._add("warning", None, message)

    def stage_planned(self, d):
        self._add("planned", d.stage, d.fate, tuple(d.reasons))

    def source_recorded(self, path, reason):
        self._add("source recorded", path, reason)

    def source_restored(self, path):
        self._add("source restored", path)

    def stage_skipped(self, d):
        self._add("skipped", d.stage)

    def stage_restored(self, d):
        self._add("restored", d.stage)

    def stage_started(self, d):
        self._add("started", d.stage, tuple(d.reasons))

    def stage_finished(self, d, seconds):
        self._add("finished", d.stage)

    def stage_failed(self, stage, message, log_tail=""):
        self._add("failed", stage, message)

    def stage_blocked(self, stage, failed_upstream):
        self._add("blocked", stage, failed_upstream)

    def stage_nondeterministic(self, alarm):
        self._add("nondeterministic", alarm.stage, alarm)

    def names(self, event: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == event]
