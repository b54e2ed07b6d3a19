"""The package closure: a listed package and everything it requires, as installed.

`env.packages: [scikit-learn]` means scikit-learn and its installed
requirements, recursively, read from `importlib.metadata` (extras and
environment markers honoured: `dask[distributed]` brings distributed, a
requirement marked `sys_platform == "win32"` is left out on Linux).
`packages: all` means every installed distribution. Names are normalised
(PEP 503: lower case, `-`), so the lockfile lists `{joblib: 1.5.2, numpy:
2.4.6, scikit-learn: 1.9.1, scipy: 1.17.1, threadpoolctl: 3.6.0}`, sorted.

Reading the metadata of every installed distribution takes ~50 ms; a no-op
build must not pay it. The index of installed distributions (name, version,
requirements) and the closures computed from it are kept in
`cache/packages.json`:

    {"schema": 1, "interpreters": {SYS_EXECUTABLE: {
        "stamp": [[PATH, MTIME_NS], ...],        # every sys.path folder but the current one
        "dists": {NAME: [VERSION, [REQUIREMENT, ...]]},
        "closures": {"a,b": {NAME: VERSION}, ...},
        "via": {"a,b": {NAME: [LISTED, ...]}}}}}

Installing, upgrading or removing a distribution adds or removes a
`*.dist-info` folder, which changes its sys.path folder's mtime, so the stamp
no longer matches and the index is read again. The file is only a cache:
unreadable or stale means "read the metadata again"; it is written
atomically (temp + rename) when it changed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from .errors import UsageError
from .fsutil import atomic_write

SCHEMA = 1
ALL = ":all:"  # `packages: all`
NOT_INSTALLED = "not installed"
_NORMALISE = re.compile(r"[-_.]+")


def normalise(name: str) -> str:
    return _NORMALISE.sub("-", name).lower()


def _search_path() -> list[str]:
    """sys.path without the current folder: installed packages, not a workspace that happens
    to hold an `*.egg-info` (and whose mtime changes whenever a stage writes there)."""
    cwd = os.getcwd()
    return [e for e in sys.path if e and os.path.abspath(e) != cwd]


def _stamp() -> list:
    stamp = []
    for entry in _search_path():
        try:
            stamp.append([entry, os.stat(entry).st_mtime_ns])
        except OSError:
            continue
    return stamp


class Installed:
    """The distributions installed for this interpreter, cached in `path` (or nowhere)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._doc: dict | None = None
        self._dirty = False
        self._requirements: dict = {}

    # -- the index ------------------------------------------------------------

    def _mine(self) -> dict:
        if self._doc is None:
            doc = None
            if self.path is not None:
                try:
                    doc = json.loads(self.path.read_bytes())
                    if doc.get("schema") != SCHEMA:
                        doc = None
                except (OSError, ValueError, AttributeError):
                    doc = None
            self._doc = doc or {"schema": SCHEMA, "interpreters": {}}
        interps = self._doc["interpreters"]
        mine = interps.get(sys.executable)
        stamp = _stamp()
        if not isinstance(mine, dict) or mine.get("stamp") != stamp:
            mine = {"stamp": stamp, "dists": _read_dists(), "closures": {}, "via": {}}
            interps[sys.executable] = mine
            self._dirty = True
        return mine

    def versions(self, names: tuple[str, ...]) -> tuple[dict, dict]:
        """({name: version} of the closure of `names`, sorted; {name: [listed names it comes via]})."""
        mine = self._mine()
        label = ",".join(names)
        if label not in mine["closures"]:
            closure, via = self._closure(mine["dists"], names)
            mine["closures"][label] = closure
            mine["via"][label] = via
            self._dirty = True
        return mine["closures"][label], mine["via"][label]

    def save(self) -> None:
        if not self._dirty or self.path is None or not self.path.parent.is_dir():
            return
        try:
            data = json.dumps(self._doc, sort_keys=True, separators=(",", ":")).encode()
            atomic_write(self.path, data, tmp_dir=self.path.parent / "tmp", what="packages")
            self._dirty = False
        except OSError:
            pass  # only a cache

    # -- the closure ------------------------------------------------------------

    def _closure(self, dists: dict, names: tuple[str, ...]) -> tuple[dict, dict]:
        if ALL in names:
            return {n: dists[n][0] for n in sorted(dists)}, {}
        versions: dict[str, str] = {}
        via: dict[str, set] = {}
        for listed in names:
            root, extras = _split_extras(listed)
            seen: set[tuple[str, str]] = set()
            todo = [(root, extras)]
            while todo:
                name, wanted = todo.pop()
                key = (name, ",".join(sorted(wanted)))
                if key in seen:
                    continue
                seen.add(key)
                dist = dists.get(name)
                versions[name] = dist[0] if dist else NOT_INSTALLED
                if name != root:
                    via.setdefault(name, set()).add(normalise(root))
                if dist is None:
                    continue
                for req in dist[1]:
                    found = self._requirement(req, wanted)
                    if found is not None:
                        todo.append(found)
        listed_names = {_split_extras(n)[0] for n in names}
        return (
            {n: versions[n] for n in sorted(versions)},
            {n: sorted(v) for n, v in sorted(via.items()) if n not in listed_names},
        )

    def _requirement(self, text: str, extras: frozenset) -> tuple[str, frozenset] | None:
        """(name, its extras) when the requirement applies with these extras active, else None."""
        try:
            from packaging.requirements import InvalidRequirement, Requirement
        except ImportError:
            raise UsageError(
                "env.packages needs packaging to read requirement markers: "
                "pip install 'reprobuild[envs]'"
            ) from None
        try:
            req = self._requirements.get(text) or Requirement(text)
        except InvalidRequirement:
            return None
        self._requirements[text] = req
        if req.marker is not None:
            if not any(req.marker.evaluate({"extra": e}) for e in ("", *sorted(extras))):
                return None
        return normalise(req.name), frozenset(req.extras)


def _split_extras(listed: str) -> tuple[str, frozenset]:
    """`dask[distributed]` -> ("dask", {"distributed"})."""
    name, _, rest = listed.partition("[")
    extras = frozenset(e.strip() for e in rest.rstrip("]").split(",") if e.strip())
    return normalise(name.strip()), extras


def _read_dists() -> dict:
    from importlib import metadata

    dists: dict = {}
    # sys.path order: the first one found is the one imported
    for dist in metadata.distributions(path=_search_path()):
        try:
            name = normalise(dist.metadata["Name"])
        except (KeyError, TypeError):
            continue
        if name not in dists:
            dists[name] = [dist.version, list(dist.requires or [])]
    return dists
