"""The lockfile (`reprobuild.lock`): the exact lineage of every stage's outputs.

Format (YAML, schema 1):

    schema: 1
    sources:                     # tracked sources (sources.py), sorted by path
      PATH: {hash, size[, nfiles][, url, etag, version_id, checksum, mtime]}
    stages:                      # sorted by stage name
      NAME:
        key: <32 hex>            # XXH3-128 of the stage's canonical inputs (decision.State.key)
        cmd: STR | [STR, ...]    # expanded
        wdir: PATH               # only when not the pipeline folder
        code: {PATH: {hash, size}}
        deps: {PATH: {hash, size[, nfiles]}}        # folders end in '/' and have nfiles
        params: {dotted.key: value}
        env: {python, platform, packages, vars, files}
        outs: {PATH: {hash, size[, nfiles]}}

Paths are relative to the pipeline folder. There are no timestamps, absolute
paths, user or host names, and every mapping is written in a fixed order, so
the same inputs always give a byte-identical file and a clean git diff.
It is written atomically (temp file + rename). A lockfile that cannot be
read, or of another schema, is not an error: it means "rebuild everything",
and the reader says so.

A lockfile comes from git, so from anyone who can open a pull request: it
is read as hostile input. Aliases are expanded under a budget (MAX_NODES
plus the text's length), so an alias bomb is refused at once; a value YAML
cannot construct (an integer of 5,001 digits) makes the whole file unusable
(a warning, every stage new); a stage whose key is not 32 hex digits, and a
code, dep or out entry, or a tracked source, whose path is absolute, holds `..`, or whose hash is
not 32 hex digits or size not a whole number, is dropped with a warning, so
no command ever reads or prints a path outside the workspace because a
lockfile named it.

Parsed copy (`.reprobuild/NAME.lock.json`): `{"lock_hash": XXH3 of the lockfile's
bytes, "stages": {...}, "sources": {...}}`. Parsing YAML costs ~100 ms for 1,000 stages, JSON
a tenth of that, so a no-op build reads the copy whenever its hash matches
the lockfile's bytes; any edit of the lockfile (git checkout, merge, by hand)
changes the hash and the YAML is parsed again. It is only a cache.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from . import yamlemit
from .errors import warn
from .fsutil import atomic_write
from .hashing import HEX32, Meta, hash_bytes
from .yamlemit import Flow as _Flow

SCHEMA = 1
MAX_NODES = 1_000_000  # as yamlio's budget for pipeline files, plus the text's length
# Seconds per stage entry that a lockfile write is taken to cost before one is measured:
# on 2 cores, 70 µs to dump and write it, 140 µs on this disk with the group commit's
# sync before it; the lower, so a first write comes sooner rather than later.
WRITE_COST = 70e-6
ENTRY_ORDER = ("key", "cmd", "wdir", "code", "deps", "params", "env", "outs")


@functools.cache
def _yaml():
    """(yaml, loader, dumper), imported when first needed: a no-op reads the parsed copy."""
    import yaml

    try:
        from yaml import CSafeDumper as _Dumper
        from yaml import CSafeLoader as _Loader
    except ImportError:  # pragma: no cover
        from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
        from yaml import SafeLoader as _Loader

    class _LockDumper(_Dumper):
        def ignore_aliases(self, data):
            # A value two stages share is written twice, never as &id001 / *id001: bytes
            # that hung on which values happen to be one object would not be deterministic.
            return True

    _LockDumper.add_representer(
        _Flow,
        lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True),
    )
    return yaml, _Loader, _LockDumper


def read(path: Path, parsed_copy: Path | None = None) -> tuple[dict, str | None]:
    """(stages, problem). A missing file is empty with no problem; a bad one is empty with one."""
    stages, _, problem = read_all(path, parsed_copy)
    return stages, problem


def read_all(path: Path, parsed_copy: Path | None = None) -> tuple[dict, dict, str | None]:
    """(stages, sources, problem), through the parsed copy when it matches the file's bytes."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        return {}, {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, {}, f"cannot read {path.name} ({exc}); treating every stage as new"
    if parsed_copy is None:
        return parse_all(text, path.name)
    digest = hash_bytes(raw)
    try:
        copy = json.loads(parsed_copy.read_bytes())
        if copy.get("lock_hash") == digest:
            return copy["stages"], copy.get("sources", {}), None
    except (OSError, ValueError, AttributeError, KeyError, RecursionError):
        pass
    dropped: list[str] = []
    stages, sources, problem = parse_all(text, path.name, dropped)
    if not problem and not dropped:  # a file with dropped entries warns at every read
        _save_copy(parsed_copy, digest, stages, sources)
    return stages, sources, problem


def _save_copy(parsed_copy: Path, digest: str, stages: dict, sources: dict) -> None:
    if not parsed_copy.parent.is_dir():
        return
    doc = {"lock_hash": digest, "stages": stages, "sources": sources}
    try:
        # unsynced: after a power cut a torn copy fails its hash or JSON and is remade
        atomic_write(parsed_copy, json.dumps(doc).encode(), sync=False)
    except (OSError, TypeError, ValueError):
        pass  # only a cache


def parse(
    text: str, name: str = "reprobuild.lock", dropped: list[str] | None = None
) -> tuple[dict, str | None]:
    """(stages, problem); unsafe entries are left out, each named in a warning (and `dropped`)."""
    stages, _, problem = parse_all(text, name, dropped)
    return stages, problem


def parse_all(
    text: str, name: str = "reprobuild.lock", dropped: list[str] | None = None
) -> tuple[dict, dict, str | None]:
    """(stages, sources, problem); unsafe entries are left out, each named in a warning."""
    yaml = _yaml()[0]
    try:
        data = _load(text)
    except yaml.YAMLError:
        return {}, {}, f"{name} is not valid YAML; treating every stage as new"
    except _TooBig:
        return (
            {},
            {},
            (
                f"{name} expands to more than {MAX_NODES + len(text):,} values (an alias bomb?); "
                "treating every stage as new"
            ),
        )
    except (ValueError, OverflowError, RecursionError, TypeError) as exc:
        return (
            {},
            {},
            f"{name} holds a value that cannot be read ({str(exc)[:80]}); treating every stage as new",
        )
    if data is None:
        return {}, {}, None
    if (
        not isinstance(data, dict)
        or data.get("schema") != SCHEMA
        or not isinstance(data.get("stages", {}), dict)
        or not isinstance(data.get("sources", {}), dict)
    ):
        return {}, {}, f"{name} has an unknown format or schema; treating every stage as new"
    dropped = [] if dropped is None else dropped
    stages = {}
    for stage, entry in (data.get("stages") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            continue
        if not isinstance(stage, str) or not HEX32.match(entry["key"]):
            dropped.append(f"ignored {str(stage)[:80]} (its key is not 32 hex digits)")
            continue
        stages[stage] = _safe_entry(stage, entry, dropped)
    sources = _safe_entry("sources", {"outs": data.get("sources") or {}}, dropped)["outs"]
    for item in dropped:
        warn(f"warning: {name}: {item}")
    return stages, sources, None


class _TooBig(Exception):
    pass


def _load(text: str):
    """yaml.load with an alias budget: nodes are counted as expanded before anything is built."""
    yaml, _Loader, _ = _yaml()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        budget = MAX_NODES + len(text)
        stack = [node]
        while stack:
            budget -= 1
            if budget < 0:
                raise _TooBig
            n = stack.pop()
            if isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    stack.append(k)
                    stack.append(v)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _safe_entry(stage: str, entry: dict, dropped: list[str]) -> dict:
    """The entry without code/deps/outs items that name an unsafe path or a malformed hash."""
    from .cache import _check_relative

    entry = dict(entry)
    for group in ("code", "deps", "outs"):
        items = entry.get(group)
        if items is None:
            continue
        if not isinstance(items, dict):
            dropped.append(f"ignored {stage}: {group} (not a mapping)")
            entry[group] = {}
            continue
        kept = {}
        for path, d in items.items():
            try:
                _check_relative(path[:-1] if path.endswith("/") else path)
            except (ValueError, AttributeError):
                dropped.append(f"ignored {stage}: {str(path)[:120]} (a path leaving the workspace)")
                continue
            if Meta.from_lock(d) is None:
                dropped.append(f"ignored {stage}: {path} (a malformed hash or size)")
                continue
            kept[path] = d
        entry[group] = kept
    return entry


def dumps(stages: dict, sources: dict | None = None, fast: bool = True) -> str:
    """The lockfile's text; `fast=False` always goes through yaml (tests compare the two)."""
    body = {"schema": SCHEMA}
    if sources:
        body["sources"] = {p: _Flow(_meta_order(sources[p])) for p in sorted(sources)}
    body["stages"] = {name: _ordered(stages[name]) for name in sorted(stages)}
    text = yamlemit.dump(body) if fast else None  # yaml's bytes without yaml, mostly
    if text is not None:
        return text
    yaml, _, _LockDumper = _yaml()
    return yaml.dump(
        body,
        Dumper=_LockDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


def _ordered(entry: dict) -> dict:
    out = {}
    for field in ENTRY_ORDER:
        if field not in entry or entry[field] in (None, {}, []):
            continue
        value = entry[field]
        if field in ("code", "deps", "outs"):
            value = {p: _Flow(_meta_order(value[p])) for p in sorted(value)}
        elif field == "params":
            value = {k: value[k] for k in sorted(value)}
        elif field == "env":
            value = {
                k: (_Flow(sorted(v.items())) if isinstance(v, dict) else v)
                for k, v in value.items()
            }
        out[field] = value
    return out


def _meta_order(meta: dict) -> list:
    """hash, size, nfiles first, anything else after, sorted."""
    first = [(k, meta[k]) for k in ("hash", "size", "nfiles") if k in meta]
    return first + sorted((k, v) for k, v in meta.items() if k not in ("hash", "size", "nfiles"))


def write(
    path: Path, stages: dict, parsed_copy: Path | None = None, sources: dict | None = None
) -> None:
    data = dumps(stages, sources).encode("utf-8")
    atomic_write(path, data, what="lockfile")
    if parsed_copy is not None:
        _save_copy(parsed_copy, hash_bytes(data), stages, sources or {})


class LockWriter:
    """Keeps the lockfile current during a build without quadratic cost.

    After each stage the file is rewritten when the time since the last write
    (or since the build began) is at least 20x what the last write took (or,
    before the first, WRITE_COST per entry), so writing costs at most ~5% of
    the build however many stages there are; `close()` writes the final
    state. A stage that completed but was not yet written is still in the
    cache's run records, so a killed build loses no work: the next build
    restores it. `before_write` runs before each write: the cache's group commit
    (cache.Cache.commit), so the lockfile never names an object a crash could lose.
    """

    def __init__(
        self,
        path: Path,
        stages: dict,
        known: set[str] | None = None,
        parsed_copy: Path | None = None,
        sources: dict | None = None,
        before_write=None,
    ):
        self.path = path
        self.before_write = before_write
        self.parsed_copy = parsed_copy
        self.sources = dict(sources or {})
        self.stages = dict(stages)
        if known is not None:  # entries of stages no longer in the pipeline are dropped
            self.stages = {k: v for k, v in self.stages.items() if k in known}
        self.pending = self.stages != stages
        # Until a write is measured, its cost is estimated from the entries it will hold:
        # a chain's first stage then waits its turn instead of rewriting the whole file.
        self.last_write = time.monotonic()
        self.last_cost = WRITE_COST * len(self.stages)

    def update(self, name: str, entry: dict, flush: bool = True) -> None:
        """Record a stage's entry; written now if a write is due, unless not `flush` (the
        caller flushes soon, e.g. while the next stage runs)."""
        if self.stages.get(name) != entry:
            self.stages[name] = entry
            self.pending = True
        if flush:
            self.flush(force=False)

    def update_source(self, path: str, entry: dict | None) -> None:
        """Record a tracked source's entry (None: no longer tracked)."""
        if self.sources.get(path) != entry:
            if entry is None:
                self.sources.pop(path, None)
            else:
                self.sources[path] = entry
            self.pending = True

    def flush(self, force: bool = True) -> None:
        if not self.pending:
            return
        now = time.monotonic()
        if not force and now - self.last_write < 20 * self.last_cost:
            return
        if self.before_write is not None:
            self.before_write()
        write(self.path, self.stages, self.parsed_copy, self.sources)
        self.last_cost = time.monotonic() - now
        self.last_write = time.monotonic()
        self.pending = False

    close = flush
