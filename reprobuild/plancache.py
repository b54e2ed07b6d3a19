"""The plan cache: the loaded pipeline and its graph, kept so a no-op need not rebuild them.

Parsing and templating the pipeline file, validating it, scanning code for
imports and building the graph cost more than deciding that nothing is to
do. The result is kept in `.reprobuild/<pipeline file name>.plan.json`, one
JSON object:

    {"format": 1, "version": "<reprobuild version>",
     "code": {"<module>.py": [size, mtime_ns], ...},  # reprobuild's own loaders
     "root": "<workspace root>", "dir": "<pipeline folder>",
     "keys": {"<abs path>": "<XXH3-128 hex>", ...},   # pipeline, params and scanned code files
     "stamps": {"<abs path>": [inode, ctime_ns], ...}, # of the same files
     "probes": {"isfile:<abs path>": true, "exists:<abs path>": false, ...},
     "checked": ["<abs path>", ...],     # paths that must not lead out through a symlink
     "outs": ["<abs path>", ...],        # outs that must not touch the cache
     "cache_at": ["<cache folder>", "<its real path>"],  # as the load saw them
     "needed": ["<path>", ...],          # deps no stage makes: must exist (graph.build)
     "pipeline": {...},                  # the Pipeline, see _encode
     "order": ["<stage>", ...],          # graph.order
     "edges": [["<from>", "<to>"], ...]} # graph.edges_of

It is used only when every key file still has the same content (hashed
through the stat cache, so an unchanged file is only stat-ed) and the same
inode and ctime, every probe gives the same answer, every checked path still
stays inside the workspace, every needed dep exists, no out touches the
cache, the cache is where it was (`cache:`, REPROBUILD_CACHE_DIR,
--cache-dir), and the format, version, reprobuild's own loader files and the
workspace folders are the same; anything else, including a missing,
unreadable or malformed file, is a miss and the pipeline is loaded from its
file as always (raising the same errors). The inodes and ctimes (which no one
can set) make a plan shipped with a workspace (a tarball, a forced `git add`)
useless: only a plan written here, after these files were, can match them.
A plan is saved only when decoding it gives back an equal Pipeline, and never
when a key file changed during the load, nor when `.reprobuild/` is missing
(`status` makes no folder) or a symlink. Written atomically; never shared,
never in git.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from . import pipeline as pipeline_mod
from .hashing import RACY_NS, Hasher
from .pipeline import Dep, EnvSpec, Out, Pipeline, Plot, Source, Stage
from .workspace import Workspace

FORMAT = 1
# the modules whose code decides what a pipeline file loads to
_LOADERS = (
    "pipeline.py",
    "codescan.py",
    "templating.py",
    "params.py",
    "yamlio.py",
    "graph.py",
    "workspace.py",
    "signature.py",
)


@dataclass
class Plan:
    pipeline: Pipeline
    order: list[str]
    edges: list[tuple[str, str]]


def path_of(ws: Workspace) -> Path:
    return ws.state_dir / (ws.pipeline_file.name + ".plan.json")


def _loader_stamps() -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    stamps = {}
    for name in _LOADERS:
        st = os.stat(os.path.join(here, name))
        stamps[name] = [st.st_size, st.st_mtime_ns]
    return stamps


def _state_dir_ok(ws: Workspace) -> bool:
    """A real folder: a symlinked `.reprobuild` is neither read nor written through."""
    return os.path.isdir(ws.state_dir) and not os.path.islink(ws.state_dir)


def read(ws: Workspace) -> dict | None:
    """The stored plan document if its format, version and folders fit, else None."""
    if not _state_dir_ok(ws):
        return None
    try:
        with open(path_of(ws), "rb") as f:
            doc = json.loads(f.read())
        if (
            doc["format"] != FORMAT
            or doc["version"] != __version__
            or doc["root"] != str(ws.root)
            or doc["dir"] != str(ws.dir)
            or doc["code"] != _loader_stamps()
        ):
            return None
        return doc
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def settings(doc: dict) -> tuple[str | None, str]:
    """(`cache:`, `link:`) of the stored pipeline: where the stat cache is, before checking."""
    p = doc["pipeline"]
    return p["cache"], p["link"]


def check(
    doc: dict, ws: Workspace, hasher: Hasher, check_missing: bool, cache_opt: str | None
) -> Plan | None:
    """The stored plan if it still holds for the files on disk, else None."""
    try:
        stamps = doc["stamps"]
        for path, digest in doc["keys"].items():
            st = os.stat(path)
            if [st.st_ino, st.st_ctime_ns] != stamps[path] or hasher.file(path, st).hash != digest:
                return None
        for probe, answer in doc["probes"].items():
            kind, path = probe.split(":", 1)
            found = os.path.isfile(path) if kind == "isfile" else os.path.exists(path)
            if found != answer:
                return None
        loader = pipeline_mod.Loader(ws, "", cache_opt)
        loader.use_cache(doc["pipeline"]["cache"])
        if [loader.cache_root, loader.real_cache] != doc["cache_at"]:
            return None
        links = _symlinks([*doc["checked"], *doc["outs"]])
        for full in doc["checked"]:
            if not loader.inside_real_root(os.path.dirname(full), full, full in links):
                return None
        for full in doc["outs"]:
            if loader.cache_clash(full, full in links) is not None:
                return None
        if check_missing:
            base = str(ws.dir)
            for path in doc["needed"]:
                if not os.path.exists(os.path.join(base, path)):
                    return None
        pipe = _decode(doc["pipeline"], ws.display(ws.pipeline_file))
        return Plan(pipe, list(doc["order"]), [tuple(e) for e in doc["edges"]])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


LIST_AT = 32  # paths in one folder from which listing it beats an lstat each


def _symlinks(paths: list[str]) -> set[str]:
    """Which of `paths` are symlinks. A folder holding many of them is listed once (each
    entry's type comes with the listing); the others are lstat-ed (a no-op of 1,000 stages
    spent a twentieth of its time on 3,000 lstats)."""
    by_folder: dict[str, list[str]] = {}
    for path in paths:
        by_folder.setdefault(os.path.dirname(path), []).append(path)
    links = set()
    for folder, inside in by_folder.items():
        if len(inside) >= LIST_AT:
            try:
                with os.scandir(folder) as entries:
                    links.update(e.path for e in entries if e.is_symlink())
                continue
            except OSError:
                pass  # gone or unreadable: each path answers for itself
        links.update(p for p in inside if os.path.islink(p))
    return links


def save(
    ws: Workspace,
    plan: Plan,
    seen: pipeline_mod.Observed,
    hasher: Hasher,
    started_ns: int,
    cache_opt: str | None,
) -> None:
    """Keep the plan, unless it would not decode to the same pipeline or a key file is
    newer than the load (it may have changed while being read). Failing to write is no error."""
    pipe = plan.pipeline
    files = [str(ws.pipeline_file), *(str(ws.dir / f) for f in pipe.params_files), *seen.code]
    keys, stamps = {}, {}
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            return
        if st.st_mtime_ns >= started_ns - RACY_NS:
            return
        keys[path] = hasher.file(path, st).hash
        stamps[path] = [st.st_ino, st.st_ctime_ns]
    try:
        encoded = _encode(pipe)
        text = json.dumps(
            {
                "format": FORMAT,
                "version": __version__,
                "code": _loader_stamps(),
                "root": str(ws.root),
                "dir": str(ws.dir),
                "keys": keys,
                "stamps": stamps,
                "probes": seen.probes,
                "checked": sorted(seen.checked),
                "outs": sorted(seen.outs),
                "cache_at": _cache_at(ws, pipe, cache_opt),
                "needed": _needed(pipe),
                "pipeline": encoded,
                "order": plan.order,
                "edges": plan.edges,
            },
            separators=(",", ":"),
            allow_nan=False,
        )
        if _decode(json.loads(text)["pipeline"], pipe.file) != pipe:
            return  # something JSON cannot carry (a date in params, say): no plan
    except (TypeError, ValueError):
        return
    from .fsutil import atomic_write

    if not _state_dir_ok(ws):
        return  # made by the first build (with its .gitignore); `status` creates nothing
    try:
        atomic_write(path_of(ws), text.encode(), what="plan")
    except OSError:
        pass


def _cache_at(ws: Workspace, pipe: Pipeline, cache_opt: str | None) -> list[str]:
    loader = pipeline_mod.Loader(ws, "", cache_opt)
    loader.use_cache(pipe.cache)
    return [loader.cache_root, loader.real_cache]


def started() -> int:
    return time.time_ns()


def _needed(pipe: Pipeline) -> list[str]:
    """Deps and code no stage makes and no source names: graph.build requires them to exist."""
    from .graph import OutIndex

    index = OutIndex.build(pipe.stages)
    needed = []
    for stage in pipe.stages.values():
        for dep in (*stage.code, *stage.deps):
            if not index.related(dep.path) and pipe.source_of(dep.path) is None:
                needed.append(dep.path)
    return needed


# -- the Pipeline as JSON: dataclasses as lists of their fields, in order ----


def _encode(pipe: Pipeline) -> dict:
    return {
        "cache": pipe.cache,
        "remote": pipe.remote,
        "link": pipe.link,
        "executor": pipe.executor,
        "params_files": list(pipe.params_files),
        "trusted_keys": list(pipe.trusted_keys),
        "sources": [[s.path, s.url, s.line] for s in pipe.sources],
        "stages": [_encode_stage(s) for s in pipe.stages.values()],
    }


def _encode_stage(s: Stage) -> list:
    e = s.env
    return [
        s.name,
        list(s.cmd),
        s.wdir,
        [[d.path, d.line, d.auto] for d in s.code],
        [[d.path, d.line, d.auto] for d in s.deps],
        [[o.path, o.cache, o.persist, o.metric, o.line] for o in s.outs],
        s.params,
        [e.python, e.platform, list(e.packages), list(e.vars), list(e.files), e.requirements],
        s.always_run,
        s.frozen,
        s.desc,
        s.cpus,
        s.line,
        [[p.path, p.x, p.y, p.title, p.template, p.line] for p in s.plots],
    ]


def _decode(d: dict, file: str) -> Pipeline:
    envs: dict[str, EnvSpec] = {}  # stages mostly share one env
    stages = {}
    for row in d["stages"]:
        name, cmd, wdir, code, deps, outs, params, env, always, frozen, desc, cpus, line, plots = (
            row
        )
        key = repr(env)  # (JSON values: their repr is as unique as their JSON, and 4x faster)
        if key not in envs:
            python, platform, packages, vars_, files, requirements = env
            envs[key] = EnvSpec(
                python, platform, tuple(packages), tuple(vars_), tuple(files), requirements
            )
        stages[name] = Stage(
            name,
            tuple(cmd),
            wdir,
            tuple(Dep(*x) for x in code),
            tuple(Dep(*x) for x in deps),
            tuple(Out(*x) for x in outs),
            params,
            envs[key],
            always,
            frozen,
            desc,
            cpus,
            line,
            tuple(Plot(*x) for x in plots),
        )
    return Pipeline(
        file,
        stages,
        cache=d["cache"],
        remote=d["remote"],
        link=d["link"],
        executor=d["executor"],
        params_files=tuple(d["params_files"]),
        trusted_keys=tuple(d["trusted_keys"]),
        sources=tuple(Source(*x) for x in d["sources"]),
    )
