"""The nondeterminism alarm: a stage ran, an earlier result for the same key exists, the bytes differ.

Same key means same cmd, code, deps, params and environment fingerprint; so
different bytes mean something outside the key decided them: the machine
(CPU kernels, BLAS, threads: see the profiles), the time, unseeded
randomness, an unlisted variable. The earlier result is, in this order, the
local run record for the key, a remote's (with `build --pull`), or the
lockfile's entry when it has the same key (a fresh clone builds what
another machine committed). Nothing is rerun or overwritten because of it;
the build reports it at the end, and `--strict` fails the stage instead of
recording its result. `always_run` stages and `persist` outs are left out:
they declare that their result depends on more than their key.

Kept (`.reprobuild/alarms.json`, beside the lockfile) so `status` and
`verify` can list the stages known to be unreproducible:

    {"schema": 1, "stages": {STAGE: {"key": KEY,
        "earlier": "run record" | "remote run record" | "lockfile",
        "outs": {PATH: [OLD_HASH, NEW_HASH]},
        "differences": [LINE, ...]}}}          # machine.differences()

An alarm is shown while the stage's locked key is the one it was raised
for; a build that records another key for the stage drops it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import atomic_write

SCHEMA = 1
FILE = "alarms.json"


@dataclass
class Alarm:
    stage: str
    key: str
    earlier: str
    outs: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (old, new)
    differences: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{p} {old[:8]}… -> {new[:8]}…" for p, (old, new) in sorted(self.outs.items())]
        return f"{self.stage}: same key ({self.earlier}), different bytes: " + ", ".join(parts)

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "earlier": self.earlier,
            "outs": {p: list(v) for p, v in sorted(self.outs.items())},
            "differences": self.differences,
        }

    @classmethod
    def from_json(cls, stage: str, doc: dict) -> Alarm:
        return cls(
            stage,
            doc["key"],
            doc["earlier"],
            {p: (v[0], v[1]) for p, v in doc["outs"].items()},
            list(doc.get("differences") or []),
        )


def check(stage, key: str, outs: dict, entry: dict | None, cache, remote, profile) -> Alarm | None:
    """Compare a run's outs ({lock path: Meta}) with every earlier result for `key`."""
    if stage.always_run or not key:
        return None
    skip = {o.path for o in stage.outs if o.persist}
    new = {p.rstrip("/"): m.hash for p, m in outs.items() if p.rstrip("/") not in skip}
    for source, earlier, old_profile in _earlier(key, entry, cache, remote):
        differ = {p: (earlier[p], h) for p, h in new.items() if p in earlier and earlier[p] != h}
        if differ:
            from . import machine  # (only when bytes differ: a build needs it no other time)

            return Alarm(stage.name, key, source, differ, machine.differences(old_profile, profile))
    return None


def _earlier(key, entry, cache, remote):
    """(source, {path: hash}, profile or None) of each earlier result for the key."""
    record = cache.read_run(key)
    if record is not None:
        yield (
            "run record",
            {p.rstrip("/"): m.hash for p, m in record.items()},
            cache.read_run_profile(key),
        )
    elif remote is not None:
        found = _remote_record(remote, key)
        if found is not None:
            yield "remote run record", *found
    if entry is not None and entry.get("key") == key:
        locked = {
            p.rstrip("/"): d.get("hash")
            for p, d in (entry.get("outs") or {}).items()
            if isinstance(d, dict)
        }
        yield "lockfile", locked, None


def _remote_record(remote, key):
    from .remote import parse_run

    try:
        data = remote.fs.cat_file(remote.run_path(key))
    except Exception:  # a remote that cannot answer has no earlier result to offer
        return None
    parsed = parse_run(data, key)
    if parsed is None:
        return None
    try:
        profile = json.loads(data).get("profile")
    except ValueError:
        profile = None
    return {p.rstrip("/"): m.hash for p, m in parsed[1].items()}, profile


# -- kept alarms ------------------------------------------------------------------


def read(state_dir: Path) -> dict[str, Alarm]:
    try:
        doc = json.loads((Path(state_dir) / FILE).read_bytes())
        if doc.get("schema") != SCHEMA:
            return {}
        return {name: Alarm.from_json(name, d) for name, d in doc["stages"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}


def keep(state_dir: Path, alarm: Alarm) -> None:
    alarms = read(state_dir)
    alarms[alarm.stage] = alarm
    _write(state_dir, alarms)


def prune(state_dir: Path, entries: dict) -> None:
    """Drop alarms whose stage's locked key is another one now."""
    alarms = read(state_dir)
    kept = {n: a for n, a in alarms.items() if (entries.get(n) or {}).get("key") == a.key}
    if kept != alarms:
        _write(state_dir, kept)


def current(state_dir: Path, entries: dict) -> list[Alarm]:
    """Alarms raised for the key each stage has in the lockfile now: known unreproducible."""
    return [
        a
        for name, a in sorted(read(state_dir).items())
        if (entries.get(name) or {}).get("key") == a.key
    ]


def _write(state_dir: Path, alarms: dict[str, Alarm]) -> None:
    doc = {"schema": SCHEMA, "stages": {n: a.to_json() for n, a in sorted(alarms.items())}}
    atomic_write(Path(state_dir) / FILE, json.dumps(doc, indent=1, sort_keys=True).encode())
