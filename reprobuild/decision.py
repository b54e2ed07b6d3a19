"""Is a stage up to date? The one answer `status`, `build --dry-run` and `dag` all read.

A Decision is a fate (skip, restore, run) with every reason for it, never a
bare bool. Reasons are the lines users see:
    new stage | always_run | forced | cmd changed | code changed: PATH |
    dep changed: PATH | dep added: PATH | dep removed: PATH (likewise code) |
    param changed: KEY OLD -> NEW | env changed: NAME OLD -> NEW |
    out missing: PATH | out modified: PATH | upstream: STAGE
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property

from . import environment, hashing
from .errors import PipelineError
from .hashing import Meta, NotRegularFile
from .pipeline import Stage

KEY_SCHEMA = 1
SKIP, RESTORE, RUN = "skip", "restore", "run"


@dataclass
class State:
    """What a stage's inputs are now, as the lockfile would record them."""

    cmd: str | list
    wdir: str
    code: dict[str, Meta]
    deps: dict[str, Meta]
    params: dict
    env: dict
    outs_declared: list[str]
    unknown: list[str] = field(default_factory=list)  # inputs an upstream stage will (re)make
    env_via: dict = field(default_factory=dict)  # package -> listed packages that require it

    @cached_property  # asked for several times per stage; a State is not changed once made
    def key(self) -> str | None:
        """XXH3-128 of the canonical JSON of everything that decides the outputs."""
        if self.unknown:
            return None
        doc = {
            "schema": KEY_SCHEMA,
            "cmd": self.cmd,
            "wdir": self.wdir,
            "code": {p: m.hash for p, m in self.code.items()},
            "deps": {p: m.hash for p, m in self.deps.items()},
            "params": self.params,
            "env": self.env,
            "outs": self.outs_declared,
        }
        return hashing.hash_bytes(
            json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
        )

    def lock_entry(self, outs: dict[str, Meta]) -> dict:
        entry = {"key": self.key, "cmd": self.cmd}
        if self.wdir != ".":
            entry["wdir"] = self.wdir
        entry["code"] = {p: m.to_lock() for p, m in self.code.items()}
        entry["deps"] = {p: m.to_lock() for p, m in self.deps.items()}
        entry["params"] = dict(self.params)
        entry["env"] = self.env
        entry["outs"] = {p: m.to_lock() for p, m in outs.items()}
        return entry


@dataclass
class Decision:
    stage: str
    fate: str
    reasons: list[str]
    state: State
    record: dict[str, Meta] | None = None  # the run record's outs, when restoring

    @property
    def stale(self) -> bool:
        return self.fate != SKIP


def lock_path(path: str, meta: Meta | None) -> str:
    """How a path is named in the lockfile: folders end in '/'."""
    return path + "/" if meta is not None and meta.is_dir else path


class Prober:
    """Computes stages' current State from the workspace (through the stat cache)."""

    def __init__(self, base: str, hasher: hashing.Hasher, installed=None):
        self.base = base
        self.hasher = hasher
        self.installed = installed  # packages.Installed: package closures, cached on disk
        self._env_cache: dict = {}

    def abspath(self, rel: str) -> str:
        return os.path.normpath(os.path.join(self.base, rel))

    def meta(self, rel: str) -> Meta | None:
        return self.hasher.path(self.abspath(rel))

    def state(self, stage: Stage, pending=None, known=None) -> State:
        """`pending(path)` names the upstream stage that will remake `path`, if any;
        `known` maps paths an upstream stage will restore to their cached Meta."""
        unknown = []
        groups: dict[str, dict[str, Meta]] = {"code": {}, "deps": {}}
        for group, items in (("code", stage.code), ("deps", stage.deps)):
            for dep in items:
                if known and dep.path in known:
                    groups[group][lock_path(dep.path, known[dep.path])] = known[dep.path]
                    continue
                if pending and pending(dep.path):
                    unknown.append(dep.path)
                    continue
                meta = self._meta_of(stage, "code" if group == "code" else "dep", dep)
                if meta is None:
                    unknown.append(dep.path)
                    continue
                groups[group][lock_path(dep.path, meta)] = meta
        env_key = stage.env
        if env_key not in self._env_cache:
            self._env_cache[env_key] = environment.fingerprint(
                stage.env, self._env_file_hash, self.installed, self.base
            )
        env, via = self._env_cache[env_key]
        return State(
            cmd=stage.cmd_text,
            wdir=stage.wdir,
            code=dict(sorted(groups["code"].items())),
            deps=dict(sorted(groups["deps"].items())),
            params=stage.params,
            env=env,
            outs_declared=sorted(o.path for o in stage.outs),
            unknown=unknown,
            env_via=via,
        )

    def _meta_of(self, stage: Stage, what: str, item) -> Meta | None:
        """meta(), refusing a FIFO, socket or device: reading one could block the build forever."""
        try:
            return self.meta(item.path)
        except NotRegularFile as exc:
            raise PipelineError(
                f"{what} '{item.path}' is {exc.kind}; only files and folders can be a {what}",
                stage=stage.name,
            ) from None

    def _env_file_hash(self, rel: str) -> str | None:
        meta = self.meta(rel)
        return meta.hash if meta else None

    def out_problems(self, stage: Stage, locked_outs: dict) -> list[str]:
        """`out missing` / `out modified` reasons against the locked hashes."""
        reasons = []
        for out in stage.outs:
            locked = locked_outs.get(out.path) or locked_outs.get(out.path + "/")
            meta = self._meta_of(stage, "out", out)
            if meta is None:
                reasons.append(f"out missing: {out.path}")
            elif locked is None or locked.get("hash") != meta.hash:
                reasons.append(f"out modified: {out.path}")
        return reasons


def input_reasons(stage: Stage, entry: dict | None, state: State, upstream: list[str]) -> list[str]:
    """Why the inputs differ from the lock entry (empty when they do not)."""
    if entry is None:
        return ["new stage"]
    reasons = []
    if entry.get("cmd") != state.cmd or entry.get("wdir", ".") != state.wdir:
        reasons.append("cmd changed")
    declared = {d.path for d in (*stage.code, *stage.deps)}
    for group, label in (("code", "code"), ("deps", "dep")):
        old = entry.get(group) or {}
        new = getattr(state, group)
        for path in sorted(set(old) | set(new)):
            if path.rstrip("/") in state.unknown:
                continue
            a, b = old.get(path), new.get(path)
            if b is None and path.rstrip("/") not in declared:
                reasons.append(f"{label} removed: {path}")
            elif a is None and path.rstrip("/") not in {p.rstrip("/") for p in old}:
                reasons.append(f"{label} added: {path}")
            elif a is None or b is None or a.get("hash") != b.hash:
                reasons.append(f"{label} changed: {path}")
    old_params = entry.get("params") or {}
    for k in sorted(set(old_params) | set(state.params)):
        a, b = old_params.get(k, "(none)"), state.params.get(k, "(none)")
        if _canonical(a) != _canonical(b):  # as the key sees them: NaN == NaN, {1: x} == {"1": x}
            reasons.append(f"param changed: {k} {_show(a)} -> {_show(b)}")
    reasons += [
        f"env changed: {c}"
        for c in environment.changes(entry.get("env") or {}, state.env, state.env_via)
    ]
    reasons += [f"upstream: {name}" for name in upstream]
    if not reasons and entry.get("key") != state.key and not state.unknown:
        reasons.append("key changed (outs or reprobuild version)")
    return reasons


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def decide(
    stage: Stage,
    entry: dict | None,
    prober: Prober,
    cache,
    *,
    force=False,
    run_cache=True,
    pending=None,
    known=None,
) -> Decision:
    """The fate of one stage now; `pending` and `known` as in Prober.state."""
    state = prober.state(stage, pending, known)
    upstream = sorted({pending(p) for p in state.unknown if pending and pending(p)})
    out_reasons = prober.out_problems(stage, entry.get("outs") or {}) if entry is not None else []
    if stage.frozen and entry is not None:
        # Never rebuilt: its outs are the locked ones, brought back from the cache
        # when missing. A changed one is reported, never silently used downstream.
        if not out_reasons:
            return Decision(stage.name, SKIP, [], state)
        return Decision(stage.name, RESTORE, ["frozen", *out_reasons], state, _locked_outs(entry))
    reasons = input_reasons(stage, entry, state, upstream)
    if stage.always_run:
        reasons.insert(0, "always_run")
    if force:
        reasons.insert(0, "forced")
    if entry is not None and not reasons and not out_reasons:
        return Decision(stage.name, SKIP, [], state)
    reasons += out_reasons  # every reason that holds, inputs and outputs alike
    missing_inputs = [p for p in state.unknown if not (pending and pending(p))]
    reasons += [f"dep missing: {p}" for p in missing_inputs]
    if run_cache and not force and not stage.always_run and state.key is not None:
        record = cached_record(stage, state.key, cache)
        if record is not None:
            return Decision(stage.name, RESTORE, reasons, state, record)
    return Decision(stage.name, RUN, reasons, state)


def _locked_outs(entry: dict) -> dict[str, Meta]:
    outs = {}
    for path, d in (entry.get("outs") or {}).items():
        meta = Meta.from_lock(d) if isinstance(d, dict) else None
        if meta is not None:
            outs[path] = meta
    return outs


def cached_record(stage: Stage, key: str, cache) -> dict[str, Meta] | None:
    """The run record's outs when it matches the stage's outs and every object is cached."""
    record = cache.read_run(key)
    if record is None:
        return None
    if {p.rstrip("/") for p in record} != {o.path for o in stage.outs}:
        return None  # a record that names other paths is not trusted
    cached = {o.path for o in stage.outs if o.cache}
    if not all(cache.has(m) for p, m in record.items() if p.rstrip("/") in cached):
        return None
    if any(p.rstrip("/") not in cached for p in record):
        return None  # uncached outs cannot be restored
    return record
