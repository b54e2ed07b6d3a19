"""Experiments: builds with param overrides, isolated from the workspace, recorded in git.

An experiment is a build of the pipeline in a throwaway git worktree, with
`-S KEY=VALUE` overrides written into its params files, sharing the
workspace's cache. The user's files, lockfile and outputs never change.

Refs. Every experiment is one ref, `refs/reprobuild/exps/<NAME>`, pointing
at a commit whose parent is the experiment's base (HEAD when it was
created). The ref keeps the base reachable, so a rebase or a deleted branch
loses no experiment. NAME is `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 100
characters, and not a git revision's name.

  queued  the commit's tree is the working tree's tracked files as they
          were at `exp run` (uncommitted changes included, staged or not)
          with the overrides written into the params files. Queued runs
          keep this snapshot, so later edits in the workspace do not leak in.
  done / failed
          the same tree plus, force-added, the lockfile and the metrics
          files the build wrote. The ref moves from the queued commit to
          this one with a compare-and-swap (`git update-ref NEW OLD`).

Record. The commit message is `reprobuild experiment NAME`, a blank line,
then one line of JSON (sorted keys), so `exp show` reads every experiment
with a single `git for-each-ref` and no YAML:

    {"schema": 1, "name": NAME, "status": "queued"|"done"|"failed",
     "base": COMMIT, "pipeline": PATH of the pipeline file from the git top,
     "targets": [TARGET], "overrides": {KEY: VALUE},
     "params": {KEY: VALUE},            # leaves of the params files (FILE:KEY beyond the first)
     "metrics": {PATH: {KEY: VALUE}},   # flattened, as `metrics show` (done/failed)
     "created": UNIX, "started": UNIX, "ended": UNIX, "duration": SECONDS,
     "ran": [STAGE], "restored": [STAGE], "failed": {STAGE: MESSAGE},
     "error": TEXT}                     # the failed stages' log tail

The record is a summary for speed; the lockfile and metrics files in the
tree are the truth that `metrics diff`, `params diff`, `lineage --rev`,
`checkout --rev` and `diff` read (gitrev.resolve turns NAME into the ref).

Running. Each experiment gets a worktree of its commit under
`<state folder>/exps/wt-<NAME>-<random>`, its untracked inputs copied in
(`_materialize_workspace_data`), and is built there with `-j 1` against the
shared cache, its stat cache thrown away with the worktree. `run_all` runs N
experiments at once, one thread per experiment driving one engine build
(the local executor, or one shared Dask cluster). While it runs, an
experiment holds an flock on `<state folder>/exps/<NAME>.lock`, so two
`exp run --run-all` never run the same one. Stages shared by experiments
(same key) run once: before running a stage the engine takes the key's
flock (`cache/locks/<first two hex of the key>`, 256 stripes) and decides
again once it has it, so the second experiment restores what the first
made. Each build holds at most one such lock (it runs one stage at a time),
so there is no deadlock. Ctrl-C (or SIGTERM) terminates the running
stages; their experiments stay queued, finished ones stay recorded. A
worktree whose experiment lock nobody holds was left by a killed run: the
next run removes it.

No daemon, broker or worker beyond the build's own: the queue is the refs.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import GitError, ReprobuildError, UsageError
from .fsutil import atomic_write, remove_path

REF_PREFIX = "refs/reprobuild/exps/"
SCHEMA = 1
SUBJECT = "reprobuild experiment "
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
QUEUED, DONE, FAILED = "queued", "done", "failed"
_git_lock = threading.Lock()  # worktree and ref writes of concurrent experiments, one at a time


# -- git ------------------------------------------------------------------------------


def git(cwd, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=input,
            capture_output=True,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        raise GitError("git is not installed; experiments need git") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])}: {msg[-1] if msg else 'failed'}")
    return proc.stdout.decode("utf-8", errors="replace")


def _ident_env(top: Path) -> dict:
    """Commit identity for the experiment commits when git has none configured."""
    proc = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=top, capture_output=True)
    if proc.returncode == 0:
        return {}
    return {
        "GIT_AUTHOR_NAME": "reprobuild",
        "GIT_AUTHOR_EMAIL": "reprobuild@localhost",
        "GIT_COMMITTER_NAME": "reprobuild",
        "GIT_COMMITTER_EMAIL": "reprobuild@localhost",
    }


@dataclass
class Context:
    """Where an experiment's pieces are, from an open project."""

    project: object
    top: Path  # git top level of the workspace
    pipeline_rel: str  # the pipeline file from the top
    state: Path  # <state folder>/exps

    @classmethod
    def of(cls, project) -> Context:
        from . import gitrev

        top = gitrev.require_repo(project.ws.dir)
        rel = os.path.relpath(os.path.realpath(project.ws.pipeline_file), os.path.realpath(top))
        return cls(project, top, Path(rel).as_posix(), project.ws.state_dir / "exps")

    def in_top(self, pipeline_relative: str) -> str:
        """A path relative to the pipeline folder, as git names it from the top."""
        folder = os.path.dirname(self.pipeline_rel)
        return os.path.normpath(os.path.join(folder, pipeline_relative)).replace(os.sep, "/")

    def head(self) -> str:
        try:
            return git(self.top, "rev-parse", "--verify", "HEAD^{commit}").strip()
        except GitError:
            raise UsageError(
                "experiments need a commit to start from: commit something first"
            ) from None


# -- overrides ------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    key: str  # as shown: `a.b` or `FILE:a.b`
    file: str  # params file, relative to the pipeline folder
    path: tuple[str, ...]
    value: object


def parse_sets(specs: list[str]) -> list[tuple[str, list]]:
    """`-S KEY=V1,V2` -> [(KEY, [V1, V2])]; values are YAML scalars (`50` is a number)."""
    out = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-S {spec}: write KEY=VALUE (or KEY=V1,V2,... for a grid)")
        if raw.strip().startswith(("[", "{")):
            parts = [raw]  # a list or mapping value, not a grid
        else:
            parts = raw.split(",")
        values = []
        for part in parts:
            try:
                values.append(yaml.safe_load(part) if part.strip() else "")
            except yaml.YAMLError:
                raise UsageError(f"-S {spec}: '{part}' is not a valid value") from None
        out.append((key.strip(), values))
    return out


def grid(sets: list[tuple[str, list]]) -> list[dict]:
    """The cartesian product of the `-S` value lists: one {KEY: VALUE} per experiment."""
    if not sets:
        return [{}]
    keys = [k for k, _ in sets]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in sets))
    ]


def resolve_overrides(project, values: dict) -> list[Override]:
    """Check each KEY exists in its params file (exit 2 naming the file otherwise)."""
    from . import params as params_mod

    files = list(project.pipeline.params_files)
    first = files[0] if files else params_mod.DEFAULT_PARAMS
    out = []
    for key, value in values.items():
        fname, sep, dotted = key.rpartition(":")
        fname = fname if sep else first
        if fname not in files:
            raise UsageError(
                f"-S {key}: '{fname}' is not a params file of {project.pipeline.file}"
                + (f" (params files: {', '.join(files)})" if files else " (it has none)")
            )
        data = _load_params(project.ws.dir / fname)
        path = tuple(dotted.split("."))
        node = data
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise UsageError(f"{fname}: no param '{dotted}' (from -S {key}={_show(value)})")
            node = node[part]
        shown = dotted if fname == first else f"{fname}:{dotted}"
        out.append(Override(shown, fname, path, value))
    return out


def _load_params(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path.name}: cannot read: {exc}") from None
    return data if isinstance(data, dict) else {}


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def apply_overrides(text: str, overrides: list[Override]) -> str:
    """The params file's text with these leaves set. Comments and layout are kept when each
    key sits on its own `key: value` line; otherwise the file is written out again as YAML."""
    expected = yaml.safe_load(text) or {}
    for o in overrides:
        _set(expected, o.path, o.value)
    edited = _edit_lines(text, overrides)
    if edited is not None:
        try:
            if yaml.safe_load(edited) == expected:
                return edited
        except yaml.YAMLError:
            pass
    return yaml.safe_dump(expected, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _set(data: dict, path: tuple, value) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _edit_lines(text: str, overrides: list[Override]) -> str | None:
    """Replace each scalar in block style; None when a key is not found that way."""
    lines = text.splitlines(keepends=True)
    for o in overrides:
        start, indent = 0, -1
        for depth, part in enumerate(o.path):
            pattern = re.compile(rf"^(\s*){re.escape(part)}\s*:(\s*)(.*?)(\s+#.*)?(\r?\n)?$")
            for i in range(start, len(lines)):
                m = pattern.match(lines[i])
                if m and len(m.group(1)) > indent:
                    if depth == len(o.path) - 1:
                        dumped = yaml.safe_dump(o.value, default_flow_style=True, width=10**9)
                        dumped = dumped.strip().removesuffix("...").strip()
                        lines[i] = (
                            f"{m.group(1)}{part}:{m.group(2) or ' '}{dumped}"
                            f"{m.group(4) or ''}{m.group(5) or ''}"
                        )
                    start, indent = i + 1, len(m.group(1))
                    break
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    lead = len(lines[i]) - len(lines[i].lstrip())
                    if i >= start and lead <= indent:
                        return None  # left the section
            else:
                return None
    return "".join(lines)


def params_leaves(texts: dict[str, str], first: str) -> dict:
    """{KEY: VALUE} of every leaf of the params files (`FILE:KEY` beyond the first file)."""
    from .params import flatten

    out = {}
    for fname, text in texts.items():
        try:
            data = yaml.safe_load(text) if text else {}
        except yaml.YAMLError:
            continue
        prefix = "" if fname == first else f"{fname}:"
        for key, value in (data or {}).items() if isinstance(data, dict) else ():
            out.update(flatten(prefix + str(key), value))
    return dict(sorted(out.items()))


# -- names ----------------------------------------------------------------------------


def check_name(ctx: Context, name: str) -> None:
    if not _NAME.match(name) or name.endswith(".lock") or ".." in name:
        raise UsageError(
            f"experiment name '{name}': use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def existing_names(ctx: Context) -> set[str]:
    out = git(ctx.top, "for-each-ref", "--format=%(refname:lstrip=3)", REF_PREFIX)
    return set(out.split())


def names_for(ctx: Context, name: str | None, count: int, snapshot_id: str) -> list[str]:
    """`NAME` (or `NAME-1..k` for a grid), default `exp-<7 hex>`; never one that exists,
    nor a git revision's name (commands that take a revision would read that instead)."""
    taken = existing_names(ctx)
    if name:
        check_name(ctx, name)
        names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
        for n in names:
            proc = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", n], cwd=ctx.top, capture_output=True
            )
            if proc.returncode == 0:
                raise UsageError(f"experiment name '{n}' is a git revision; pick another name")
        clash = [n for n in names if n in taken]
        if clash:
            raise UsageError(
                f"experiment '{clash[0]}' exists", hint=f"reprobuild exp remove {clash[0]}"
            )
        return names
    prefix = f"exp-{snapshot_id[:7]}"  # the snapshot's tree: the same code and params, the same hex
    while True:
        names = [prefix] if count == 1 else [f"{prefix}-{i}" for i in range(1, count + 1)]
        if not taken.intersection(names):
            return names
        prefix = f"exp-{uuid.uuid4().hex[:7]}"


# -- queueing: snapshot commits --------------------------------------------------------


def message(record: dict) -> str:
    return f"{SUBJECT}{record['name']}\n\n{json.dumps(record, sort_keys=True, separators=(',', ':'))}\n"


def queue(
    ctx: Context, sets: list[tuple[str, list]], name: str | None, targets: list[str]
) -> list[str]:
    """Record one queued experiment per grid point; returns their names."""
    project = ctx.project
    points = grid(sets)
    resolved = [resolve_overrides(project, point) for point in points]  # all checked first
    base = ctx.head()
    ctx.state.mkdir(parents=True, exist_ok=True)
    files = list(project.pipeline.params_files)
    first = files[0] if files else "params.yaml"
    index = ctx.state / f"index-{uuid.uuid4().hex}"
    env = {"GIT_INDEX_FILE": str(index), **_ident_env(ctx.top)}
    try:
        real = Path(ctx.top, git(ctx.top, "rev-parse", "--git-path", "index").strip())
        if real.is_file():
            shutil.copyfile(real, index)
        else:
            git(ctx.top, "read-tree", base, env=env)
        git(ctx.top, "add", "-u", env=env)  # the working tree's tracked files, edits included
        texts = {f: (project.ws.dir / f).read_text(encoding="utf-8") for f in files}
        snapshot_id = git(ctx.top, "write-tree", env=env).strip()
        names = names_for(ctx, name, len(points), snapshot_id)
        now = round(time.time(), 3)
        for exp_name, point in zip(names, resolved, strict=True):
            edited = dict(texts)
            for fname in {o.file for o in point}:
                edited[fname] = apply_overrides(texts[fname], [o for o in point if o.file == fname])
                blob = git(
                    ctx.top, "hash-object", "-w", "--stdin", input=edited[fname].encode()
                ).strip()
                git(
                    ctx.top,
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"100644,{blob},{ctx.in_top(fname)}",
                    env=env,
                )
            tree = git(ctx.top, "write-tree", env=env).strip()
            for fname in {o.file for o in point}:  # back to the snapshot for the next point
                blob = git(ctx.top, "hash-object", "-w", "--stdin", input=texts[fname].encode())
                git(
                    ctx.top,
                    "update-index",
                    "--cacheinfo",
                    f"100644,{blob.strip()},{ctx.in_top(fname)}",
                    env=env,
                )
            record = {
                "schema": SCHEMA,
                "name": exp_name,
                "status": QUEUED,
                "base": base,
                "pipeline": ctx.pipeline_rel,
                "targets": list(targets),
                "overrides": {o.key: o.value for o in point},
                "params": params_leaves(edited, first),
                "created": now,
            }
            commit = git(
                ctx.top,
                "commit-tree",
                tree,
                "-p",
                base,
                "-F",
                "-",
                input=message(record).encode(),
                env=env,
            ).strip()
            git(ctx.top, "update-ref", REF_PREFIX + exp_name, commit, "0" * 40)
        return names
    finally:
        index.unlink(missing_ok=True)


# -- reading ----------------------------------------------------------------------------


@dataclass
class Experiment:
    name: str
    commit: str
    record: dict

    @property
    def status(self) -> str:
        return self.record.get("status", "?")

    @property
    def base(self) -> str:
        return self.record.get("base", "")

    def of(self, ctx: Context) -> bool:
        """Is it an experiment of this pipeline? (a repository may hold several)"""
        return self.record.get("pipeline", ctx.pipeline_rel) == ctx.pipeline_rel


def list_experiments(top: Path, names: list[str] | None = None) -> list[Experiment]:
    """Every experiment (or these), from one `git for-each-ref`."""
    patterns = [REF_PREFIX + n for n in names] if names else [REF_PREFIX]
    out = git(
        top,
        "for-each-ref",
        "--format=%(refname:lstrip=3)%00%(objectname)%00%(contents:body)%00%00",
        *patterns,
    )
    found = []
    for chunk in out.split("\0\0"):
        chunk = chunk.lstrip("\n")
        if not chunk:
            continue
        name, commit, body = (chunk.split("\0") + ["", ""])[:3]
        try:
            record = json.loads(body.strip().splitlines()[0]) if body.strip() else {}
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        record.setdefault("name", name)
        found.append(Experiment(name, commit, record))
    if names:
        missing = sorted(set(names) - {e.name for e in found})
        if missing:
            raise UsageError(
                f"no experiment named '{missing[0]}'", hint="reprobuild exp show --all"
            )
    return sorted(found, key=lambda e: (e.record.get("created") or 0, e.name))


# -- running ------------------------------------------------------------------------------


class KeyLocks:
    """One build at a time runs a stage key: flocks on `cache/locks/<2 hex>` (256 stripes)."""

    def __init__(self, cache_root: Path):
        self.folder = Path(cache_root) / "locks"

    def __call__(self, key: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / key[:2], os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return lambda: os.close(fd)


@dataclass
class Outcome:
    name: str
    status: str  # done, failed, interrupted, skipped (another run holds it)
    summary: object = None
    seconds: float = 0.0
    error: str = ""


@dataclass
class RunOptions:
    jobs: int = 1  # experiments at once
    executor: str = "local"
    scheduler: str | None = None
    retries: int = 0


@dataclass
class Runner:
    """Runs queued experiments; `reporter_for(name)` gives each build its engine Reporter,
    `on_event(name, status, detail)` hears when one starts and ends."""

    ctx: Context
    opts: RunOptions
    reporter_for: object = None
    on_event: object = None
    interrupted: bool = False
    _executors: dict = field(default_factory=dict)

    def run(self, experiments: list[Experiment]) -> list[Outcome]:
        from .reporter import Reporter

        self.reporter_for = self.reporter_for or (lambda name: Reporter())
        self.on_event = self.on_event or (lambda *a: None)
        self.ctx.project.cache.ensure()
        self.ctx.state.mkdir(parents=True, exist_ok=True)
        _sweep_stale_worktrees(self.ctx)
        shared = None
        if self.opts.executor == "dask":
            from .executors.dask import DaskExecutor

            shared = _Shared(
                DaskExecutor(self.opts.scheduler, self.opts.jobs, retries=self.opts.retries)
            )
        outcomes: list[Outcome] = []
        restore = _sigterm_as_interrupt()
        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.jobs), thread_name_prefix="exp")
        pending: dict = {}
        try:
            pending = {pool.submit(self._one, e, shared): e for e in experiments}
            while pending:
                done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    outcomes.append(fut.result())
        except KeyboardInterrupt:
            self.interrupt()
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    try:
                        outcomes.append(fut.result())
                    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
                        self.interrupt(kill=True)
        finally:
            pool.shutdown(wait=True)
            restore()
            if shared is not None:
                shared.inner.shutdown()
        return outcomes

    def interrupt(self, kill: bool = False) -> None:
        """Start no new experiment; terminate the running stages (their experiments stay queued)."""
        self.interrupted = True
        for executor in list(self._executors.values()):
            executor.terminate(kill=kill)

    def _one(self, exp: Experiment, shared) -> Outcome:
        if self.interrupted:
            return Outcome(exp.name, "interrupted")
        claim = self.ctx.state / f"{exp.name}.lock"
        fd = os.open(claim, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return Outcome(exp.name, "skipped", error="another reprobuild is running it")
            current = list_experiments(self.ctx.top, [exp.name])[0]
            if current.commit != exp.commit or current.status != QUEUED:
                return Outcome(exp.name, "skipped", error="no longer queued")
            return self._build(current, shared)
        finally:
            os.close(fd)
            claim.unlink(missing_ok=True)

    def _build(self, exp: Experiment, shared) -> Outcome:
        from .engine import BuildOptions, build
        from .executors.local import LocalExecutor

        wt = self.ctx.state / f"wt-{exp.name}-{uuid.uuid4().hex[:8]}"
        started = time.time()
        self.on_event(exp.name, "started", "")
        reporter = self.reporter_for(exp.name)
        wproject = summary = None
        try:
            with _git_lock:
                git(self.ctx.top, "worktree", "add", "--detach", "--quiet", str(wt), exp.commit)
            try:
                _materialize_workspace_data(
                    self.ctx.project, wt / os.path.dirname(self.ctx.pipeline_rel)
                )
                wproject = open_worktree_project(self.ctx, wt)
                executor = shared or LocalExecutor(1, on_line=reporter.stage_output)
                self._executors[exp.name] = executor
                if self.interrupted:
                    return Outcome(exp.name, "interrupted")
                opts = BuildOptions(
                    targets=tuple(exp.record.get("targets") or ()),
                    jobs=1,
                    executor=self.opts.executor,
                    claim=KeyLocks(self.ctx.project.cache.root),
                )
                summary = build(wproject, opts, reporter, executor=executor)
                error = _error_text(wproject, summary)
            except ReprobuildError as exc:  # e.g. the overrides make the pipeline invalid
                if isinstance(exc, GitError):
                    raise
                error = str(exc)
                for prefix in (str(wt) + os.sep, os.path.relpath(wt) + os.sep):
                    error = error.replace(prefix, "")  # name files as the user knows them
            self._executors.pop(exp.name, None)
            if self.interrupted and (summary is None or not summary.ok):
                return Outcome(exp.name, "interrupted", summary)
            status = DONE if summary is not None and summary.ok else FAILED
            self._record(exp, wt, wproject, summary, started, status, error)
            seconds = time.time() - started
            self.on_event(exp.name, status, f"{seconds:.1f}s")
            return Outcome(exp.name, status, summary, seconds, error)
        except GitError as exc:
            self.on_event(exp.name, "error", str(exc))
            return Outcome(exp.name, "error", error=str(exc))
        finally:
            self._executors.pop(exp.name, None)
            _remove_worktree(self.ctx.top, wt)

    def _record(self, exp, wt: Path, wproject, summary, started, status, error) -> None:
        """Move the experiment's ref to a commit of its tree, lockfile and metrics, and record."""
        from . import history

        ended = time.time()
        record = {
            **exp.record,
            "status": status,
            "started": round(started, 3),
            "ended": round(ended, 3),
            "duration": round(ended - started, 3),
        }
        add = []
        if wproject is not None:
            metrics = history.metrics_at(wproject, None).metrics
            files = list(wproject.pipeline.params_files)
            texts = {}
            for f in files:
                try:
                    texts[f] = (wproject.ws.dir / f).read_text(encoding="utf-8")
                except OSError:
                    pass
            record["params"] = params_leaves(texts, files[0] if files else "params.yaml")
            record["metrics"] = metrics
            wrel = Path(os.path.dirname(self.ctx.pipeline_rel))
            if wproject.ws.lock_file.is_file():
                add.append((wrel / wproject.ws.lock_file.name).as_posix())
            add += [(wrel / path).as_posix() for path in metrics]
        if summary is not None:
            record["ran"] = sorted(summary.ran)
            record["restored"] = sorted(summary.restored)
            if summary.failed:
                record["failed"] = dict(sorted(summary.failed.items()))
        if error:
            record["error"] = error
        if add:
            git(wt, "add", "-f", "--", *add)
        tree = git(wt, "write-tree").strip()
        commit = git(
            wt,
            "commit-tree",
            tree,
            "-p",
            exp.base,
            "-F",
            "-",
            input=message(record).encode(),
            env=_ident_env(self.ctx.top),
        ).strip()
        with _git_lock:
            git(self.ctx.top, "update-ref", REF_PREFIX + exp.name, commit, exp.commit)


def _sigterm_as_interrupt():
    """SIGTERM does what Ctrl-C does (finished experiments recorded, the rest queued)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


class _Shared:
    """One Dask executor for every experiment's build: a build's shutdown does not close it."""

    def __init__(self, inner):
        self.inner = inner

    def submit(self, job):
        return self.inner.submit(job)

    def terminate(self, kill: bool = False) -> None:
        self.inner.terminate(kill)

    def shutdown(self) -> None:
        pass


def _error_text(wproject, summary) -> str:
    from .engine import _tail

    parts = []
    for stage, msg in sorted(summary.failed.items()):
        tail = _tail(str(wproject.ws.state_dir / "logs" / f"{stage}.log"), lines=10)
        parts.append(f"{stage}: {msg}" + (f"\n{tail}" if tail else ""))
    return "\n".join(parts)[-2000:]


def open_worktree_project(ctx: Context, wt: Path):
    """The worktree's project on the workspace's cache, with a stat cache that dies with it."""
    from .cache import Cache
    from .decision import Prober
    from .graph import OutIndex
    from .hashing import Hasher, StatCache
    from .project import Project

    p = Project.open(str(wt / ctx.pipeline_rel), str(ctx.project.cache.root), cwd=wt)
    cache = Cache(ctx.project.cache.root, link=ctx.project.cache.link)
    hasher = Hasher(StatCache(None))
    return Project(
        p.ws,
        p.pipeline,
        p.graph,
        cache,
        hasher,
        Prober(str(p.ws.dir), hasher),
        OutIndex.build(p.pipeline.stages),
    )


def _materialize_workspace_data(project, folder: Path) -> list[str]:
    """Inputs git does not hold: copy them from the user's workspace into the worktree.

    `folder` is the pipeline's folder in the worktree. Tracked sources are not
    copied: the experiment's build restores them from the shared cache by the
    pins of its own lockfile (sources.py), so it reads exactly the pinned data.
    Every other dep or code path that no stage makes and that the worktree
    lacks (raw data kept out of git, untracked) is copied, read-only.
    """
    copied = []
    for stage in project.pipeline.stages.values():
        for dep in (*stage.code, *stage.deps):
            if project.outs.related(dep.path) or (folder / dep.path).exists():
                continue
            if project.pipeline.source_of(dep.path) is not None:
                continue
            src = project.ws.dir / dep.path
            if not src.exists():
                continue
            dst = folder / dep.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
                for folder, _, names in os.walk(dst):
                    for n in names:
                        _read_only(Path(folder, n))
            else:
                shutil.copy2(src, dst)
                _read_only(dst)
            copied.append(dep.path)
    return copied


def _read_only(path: Path) -> None:
    if not path.is_symlink():
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _sweep_stale_worktrees(ctx: Context) -> None:
    """Worktrees left by a killed `exp run` (kill -9, power loss): nobody holds their lock."""
    for wt in ctx.state.glob("wt-*"):
        name = wt.name[3:-9]  # wt-<NAME>-<8 hex>
        claim = ctx.state / f"{name}.lock"
        fd = os.open(claim, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # running in another process
            _remove_worktree(ctx.top, wt)
            claim.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _remove_worktree(top: Path, wt: Path) -> None:
    if wt.exists():
        remove_path(wt)
    with _git_lock:
        subprocess.run(["git", "worktree", "prune"], cwd=top, capture_output=True)


# -- life cycle --------------------------------------------------------------------------


def remove(ctx: Context, names: list[str]) -> list[str]:
    exps = list_experiments(ctx.top, names)
    with _git_lock:
        lines = "".join(f"delete {REF_PREFIX}{e.name} {e.commit}\n" for e in exps)
        git(ctx.top, "update-ref", "--stdin", input=lines.encode())
    return [e.name for e in exps]


def lock_text(ctx: Context, exp: Experiment) -> str | None:
    from . import gitrev

    rel = os.path.join(os.path.dirname(ctx.pipeline_rel), ctx.project.ws.lock_file.name)
    return gitrev.show(ctx.top, exp.commit, Path(rel).as_posix())


def apply(ctx: Context, exp: Experiment, force: bool = False):
    """Params files and lockfile of the experiment into the workspace, outputs from the cache.

    Nothing runs. A params file with uncommitted edits that the experiment
    would overwrite is refused unless `force`: those bytes exist nowhere else.
    """
    from . import gitrev, lockfile
    from .engine import checkout

    if exp.status == QUEUED:
        raise UsageError(f"experiment '{exp.name}' is queued, not run yet")
    project = ctx.project
    writes = {}
    for fname in project.pipeline.params_files:
        rel = ctx.in_top(fname)
        text = gitrev.show(ctx.top, exp.commit, rel)
        if text is None:
            continue
        path = project.ws.dir / fname
        current = path.read_bytes() if path.exists() else None
        if current is not None and current != text.encode() and not force:
            head = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ctx.top, capture_output=True)
            if head.returncode != 0 or head.stdout != current:
                raise UsageError(
                    f"{fname} has uncommitted changes that `exp apply` would overwrite",
                    hint="commit or stash them, or pass --force",
                )
        writes[path] = text.encode()
    lock = lock_text(ctx, exp)
    if lock is None:
        raise UsageError(f"experiment '{exp.name}' has no lockfile (did any stage run?)")
    entries, problem = lockfile.parse(lock, f"{project.ws.lock_file.name} of {exp.name}")
    if problem:
        raise UsageError(problem)
    for path, data in writes.items():
        atomic_write(path, data)
    atomic_write(project.ws.lock_file, lock.encode())
    from .project import Project

    fresh = Project.open(str(project.ws.pipeline_file), str(project.cache.root))
    return checkout(fresh, entries)


def branch(ctx: Context, exp: Experiment, name: str) -> str:
    """A git branch at a commit with the experiment's tree, on its base, with a readable message."""
    if exp.status == QUEUED:
        raise UsageError(f"experiment '{exp.name}' is queued, not run yet")
    tree = git(ctx.top, "rev-parse", f"{exp.commit}^{{tree}}").strip()
    overrides = ", ".join(f"{k}={_show(v)}" for k, v in exp.record.get("overrides", {}).items())
    text = f"Experiment {exp.name}" + (f": {overrides}" if overrides else "") + "\n"
    commit = git(
        ctx.top,
        "commit-tree",
        tree,
        "-p",
        exp.base,
        "-F",
        "-",
        input=text.encode(),
        env=_ident_env(ctx.top),
    ).strip()
    git(ctx.top, "branch", name, commit)
    return commit


def lockfile_texts(top: Path, rels: list[str]) -> list[tuple[str, str, str]]:
    """(experiment, path, text) of these lockfiles (paths from the git top) in every
    experiment: one `git for-each-ref` and one `git cat-file --batch`, however many there are."""
    names = git(top, "for-each-ref", "--format=%(refname:lstrip=3) %(objectname)", REF_PREFIX)
    wanted = [
        (n, c, rel) for line in names.splitlines() for n, c in [line.split(" ", 1)] for rel in rels
    ]
    if not wanted:
        return []
    batch = "".join(f"{c}:{rel}\n" for _, c, rel in wanted).encode()
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=top, input=batch, capture_output=True)
    if proc.returncode != 0:
        raise GitError("git cat-file --batch: " + proc.stderr.decode(errors="replace").strip())
    out, pos, found = proc.stdout, 0, []
    for name, _, rel in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            found.append((name, rel, out[pos : pos + size].decode("utf-8", errors="replace")))
            pos += size + 1
    return found


def lock_objects(ctx: Context, exps: list[Experiment]):
    """(metas, run keys) the experiments' lockfiles name: what push/pull move through the
    cache remote."""
    from . import lockfile
    from .hashing import Meta

    wanted = {e.name for e in exps}
    rel = Path(os.path.dirname(ctx.pipeline_rel), ctx.project.ws.lock_file.name).as_posix()
    metas, keys = {}, set()
    for name, _, text in lockfile_texts(ctx.top, [rel]):
        if name not in wanted:
            continue
        entries, problem = lockfile.parse(text)
        if problem:
            continue
        for entry in entries.values():
            if isinstance(entry.get("key"), str):
                keys.add(entry["key"])
            for d in (entry.get("outs") or {}).values():
                meta = Meta.from_lock(d) if isinstance(d, dict) else None
                if meta is not None:
                    metas[(meta.hash, meta.is_dir)] = meta
    return list(metas.values()), sorted(keys)


def push_refs(ctx: Context, remote: str, exps: list[Experiment]) -> None:
    specs = [f"+{REF_PREFIX}{e.name}:{REF_PREFIX}{e.name}" for e in exps]
    git(ctx.top, "push", "--quiet", remote, *specs)


def pull_refs(ctx: Context, remote: str, names: list[str] | None) -> list[str]:
    if not names:
        listed = git(ctx.top, "ls-remote", "--refs", remote, REF_PREFIX + "*")
        names = sorted(
            line.split(REF_PREFIX, 1)[1] for line in listed.splitlines() if REF_PREFIX in line
        )
    if names:
        specs = [f"+{REF_PREFIX}{n}:{REF_PREFIX}{n}" for n in names]
        git(ctx.top, "fetch", "--quiet", remote, *specs)
    return names
