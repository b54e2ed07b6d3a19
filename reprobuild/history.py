"""Comparing revisions: lockfiles, metrics and params of git revisions and the working tree.

A revision is a git revision (`HEAD`, `main~2`, a hash) or None for the
working tree, labelled "workspace". A revision's lockfile is
`git show REV:<lockfile path from the git top level>`; a revision without one
has no stages. Git is only reached through `gitrev` (the `git` command).

Metrics files. In the working tree: the outs the pipeline lists under
`metrics:`, read from disk. In a revision: the outs of that revision's
lockfile that the current pipeline lists under `metrics:`, or whose path ends
in .json/.yaml/.yml and matches a `metrics:` entry of that revision's
pipeline file (read raw: `${...}` matches anything, so a `foreach` entry
`reports/${item}.json` matches every expansion). Such a file is read from git
at that revision, else (outputs are rarely in git) from the cache by the hash
that revision's lockfile records for it. A metrics file is JSON or YAML;
nested keys are flattened with dots (`confusion.0.1` for lists).

Params. A revision's params are the values its lockfile records (what its
stages were built with); the working tree's are the values the pipeline's
params files hold now for the keys its stages use (what the next build uses).
If stages of one lockfile recorded different values for a key (one was not
rebuilt), the first stage by name gives the value.

JSON documents (`--json`), stable; a value absent on one side is left out
(so `{"new": 4}` is a key that was added):

    diff:          {"schema": 1, "a": REV, "b": REV, "added": [STAGE], "removed": [STAGE],
                    "changed": {STAGE: {FIELD: CHANGE}}}
        FIELD is key, cmd, wdir ({"old", "new"}); code, deps, outs ({PATH: {"old": HASH, "new": HASH}});
        params, env ({NAME: {"old", "new"}}); only the fields that differ appear.
    metrics show:  {"schema": 1, "rev": REV, "metrics": {PATH: {KEY: VALUE}},
                    "errors": [{"rev": REV, "path": PATH, "error": TEXT}]}
    metrics diff:  {"schema": 1, "a": REV, "b": REV, "metrics": {PATH: {KEY: {"old", "new", "change"}}},
                    "errors": [...]}           # "change" = new - old, for numbers only
    params diff:   {"schema": 1, "a": REV, "b": REV, "params": {KEY: {"old", "new"[, "change"]}}}

Each also holds "warnings": [TEXT] when a lockfile could not be read (none at
that revision, or not valid): that side then has no stages.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from . import gitrev, lockfile
from .hashing import HEX32

SCHEMA = 1
WORKSPACE = "workspace"
METRIC_SUFFIXES = (".json", ".yaml", ".yml")
ABSENT = object()


def label(rev: str | None) -> str:
    return WORKSPACE if rev is None else rev


# -- git paths and lockfiles ---------------------------------------------------------


def git_top(project) -> Path:
    """The git top level holding the pipeline; a clear GitError outside a repository."""
    return _top(project.ws.dir)


@lru_cache(maxsize=8)
def _top(folder: Path) -> Path:  # one `git rev-parse` per command, not one per file read
    return gitrev.require_repo(folder)


def in_repo(top: Path, path: Path) -> str:
    """`path` relative to the git top level, as `git show REV:PATH` wants it."""
    return Path(os.path.relpath(os.path.realpath(path), os.path.realpath(top))).as_posix()


def show(project, rev: str, path: Path) -> str | None:
    """A file of the pipeline's repository at a revision; None when the revision lacks it."""
    top = git_top(project)
    return gitrev.show(top, rev, in_repo(top, path))


def read_lock(project, rev: str | None) -> tuple[dict, str | None]:
    """(stages, problem) of the lockfile at `rev`; None is the working tree's."""
    stages, _, problem = read_lock_all(project, rev)
    return stages, problem


def read_lock_all(project, rev: str | None) -> tuple[dict, dict, str | None]:
    """(stages, sources, problem) of the lockfile at `rev`; None is the working tree's."""
    if rev is None:
        stages, problem = project.read_lock()
        return stages, project.read_sources(), problem
    text = show(project, rev, project.ws.lock_file)
    if text is None:
        return {}, {}, f"{rev} has no {project.ws.lock_file.name}"
    return lockfile.parse_all(text, f"{project.ws.lock_file.name} at {rev}")


# -- lockfile diff -------------------------------------------------------------------


def diff_locks(a: dict, b: dict) -> dict:
    """{"added", "removed", "changed"} between two lockfiles' stages."""
    changed = {}
    for name in sorted(set(a) & set(b)):
        fields = diff_entry(a[name], b[name])
        if fields:
            changed[name] = fields
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": changed,
    }


def diff_entry(old: dict, new: dict) -> dict:
    fields = {}
    for field in ("key", "cmd", "wdir"):
        a, b = (
            old.get(field, "." if field == "wdir" else None),
            new.get(field, "." if field == "wdir" else None),
        )
        if a != b:
            fields[field] = {"old": a, "new": b}
    for field in ("code", "deps", "outs"):
        a = {p: m.get("hash") for p, m in (old.get(field) or {}).items() if isinstance(m, dict)}
        b = {p: m.get("hash") for p, m in (new.get(field) or {}).items() if isinstance(m, dict)}
        changes = compare(a, b)
        if changes:
            fields[field] = changes
    for field, flat in (("params", dict), ("env", flat_env)):
        changes = compare(flat(old.get(field) or {}), flat(new.get(field) or {}))
        if changes:
            fields[field] = changes
    return fields


def compare(a: dict, b: dict) -> dict:
    """{KEY: {"old", "new"}} for every key whose value differs; an absent side is left out."""
    out = {}
    for key in sorted(set(a) | set(b), key=str):
        old, new = a.get(key, ABSENT), b.get(key, ABSENT)
        if old != new:
            out[key] = side_by_side(old, new)
    return out


def side_by_side(old, new) -> dict:
    change = {}
    if old is not ABSENT:
        change["old"] = old
    if new is not ABSENT:
        change["new"] = new
    return change


def flat_env(env: dict) -> dict:
    """Env as status names it: `python`, `platform`, then each package, variable and file by name."""
    out = {}
    for key, value in env.items():
        if isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    return out


# -- params --------------------------------------------------------------------------


def params_at(project, rev: str | None) -> tuple[dict, str | None]:
    """({dotted key: value} the stages use, a problem reading the lockfile); see the module docstring."""
    values: dict = {}
    if rev is None:
        for stage in project.pipeline.stages.values():
            for key, value in stage.params.items():
                values.setdefault(key, value)
        return dict(sorted(values.items())), None
    stages, problem = read_lock(project, rev)
    for name in sorted(stages):
        for key, value in (stages[name].get("params") or {}).items():
            values.setdefault(key, value)
    return dict(sorted(values.items())), problem


def diff_values(a: dict, b: dict, show_all: bool = False) -> dict:
    """{KEY: {"old", "new"[, "change"]}}: changed keys, or every key with `show_all`."""
    out = {}
    for key in sorted(set(a) | set(b), key=str):
        old, new = a.get(key, ABSENT), b.get(key, ABSENT)
        if old == new and not show_all:
            continue
        row = side_by_side(old, new)
        delta = change(old, new)
        if delta is not None:
            row["change"] = delta
        out[key] = row
    return out


def change(old, new):
    """new - old for two numbers (not bools), else None; float noise trimmed to 12 digits."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not (number(old) and number(new)):
        return None
    delta = new - old
    return delta if isinstance(delta, int) else float(f"{delta:.12g}")


# -- metrics -------------------------------------------------------------------------


class MetricsRead:
    """The metrics of one revision: {path: {key: value}} and {path: error}."""

    def __init__(self, rev: str | None):
        self.rev = rev
        self.metrics: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.warning: str | None = None  # the revision's lockfile could not be read

    def error_list(self) -> list[dict]:
        return [
            {"rev": label(self.rev), "path": p, "error": e} for p, e in sorted(self.errors.items())
        ]


def metrics_at(project, rev: str | None) -> MetricsRead:
    result = MetricsRead(rev)
    if rev is None:
        for stage in project.pipeline.stages.values():
            for out in stage.outs:
                if out.metric:
                    _read_into(result, out.path, lambda p=out.path: _workspace_bytes(project, p))
        result.metrics = dict(sorted(result.metrics.items()))
        return result
    stages, result.warning = read_lock(project, rev)
    is_metric = _metric_rule(project, rev)
    for name in sorted(stages):
        for path, meta in sorted((stages[name].get("outs") or {}).items()):
            if path.endswith("/") or not is_metric(path):
                continue
            _read_into(result, path, lambda p=path, m=meta: _revision_bytes(project, rev, p, m))
    result.metrics = dict(sorted(result.metrics.items()))
    return result


def _read_into(result: MetricsRead, path: str, read) -> None:
    try:
        data = read()
    except LookupError as exc:
        result.errors[path] = str(exc.args[0])
        return
    try:
        result.metrics[path] = flatten(parse_metrics(data, path))
    except ValueError as exc:
        result.errors[path] = f"cannot parse: {exc}"


def _workspace_bytes(project, path: str) -> bytes:
    try:
        return (project.ws.dir / path).read_bytes()
    except FileNotFoundError:
        raise LookupError("missing from the workspace (not built yet?)") from None
    except OSError as exc:
        raise LookupError(f"cannot read: {exc.strerror}") from None


def _revision_bytes(project, rev: str, path: str, meta) -> bytes:
    text = show(project, rev, project.ws.dir / path)
    if text is not None:
        return text.encode()
    digest = meta.get("hash") if isinstance(meta, dict) else None
    if isinstance(digest, str) and HEX32.match(digest):  # never a path a lockfile made up
        try:
            return project.cache.object_path(digest).read_bytes()
        except OSError:
            pass
    raise LookupError(f"not in git at {rev}, nor in the cache (hash {str(digest)[:8]})")


def _metric_rule(project, rev: str):
    """Is a lock out of revision `rev` a metrics file? (see the module docstring)"""
    outs = [out for stage in project.pipeline.stages.values() for out in stage.outs]
    current = {out.path for out in outs if out.metric}
    plain = {out.path for out in outs if not out.metric}  # `reports/*.json` must not take these
    patterns = revision_metric_patterns(show(project, rev, project.ws.pipeline_file))

    def is_metric(path: str) -> bool:
        if path in current:
            return True
        return (
            path not in plain
            and path.endswith(METRIC_SUFFIXES)
            and any(fnmatch.fnmatchcase(path, p) for p in patterns)
        )

    return is_metric


def revision_metric_patterns(pipeline_text: str | None) -> list[str]:
    """Glob patterns of the `metrics:` entries of a pipeline file's raw text (`${...}` -> `*`)."""
    if not pipeline_text:
        return []
    from . import yamlio
    from .errors import PipelineError

    try:
        data = yamlio.load(pipeline_text, "reprobuild.yaml")
    except PipelineError:
        return []
    stages = data.get("stages") if isinstance(data, dict) else None
    patterns = []
    for body in (stages or {}).values() if isinstance(stages, dict) else ():
        if not isinstance(body, dict):
            continue
        for part in (body, body.get("do")):
            if not isinstance(part, dict) or not isinstance(part.get("metrics"), list):
                continue
            wdir = part.get("wdir") if isinstance(part.get("wdir"), str) else "."
            for entry in part["metrics"]:
                path = next(iter(entry), None) if isinstance(entry, dict) else entry
                if isinstance(path, str):
                    joined = os.path.normpath(os.path.join(wdir, path)).replace(os.sep, "/")
                    patterns.append(re.sub(r"\$\{[^}]*\}", "*", joined))
    return patterns


def parse_metrics(data: bytes, path: str):
    """A metrics file's content: JSON or YAML by its suffix (JSON first, then YAML, otherwise)."""
    text = data.decode("utf-8", errors="replace")
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML ({str(exc).splitlines()[0]})") from None


def flatten(value, prefix: str = "") -> dict:
    """{dotted key: scalar}; lists are indexed (`confusion.0.1`); a bare scalar is `value`."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix or "value": value}
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out
