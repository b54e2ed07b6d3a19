"""Bringing stages up to date: plan (pure decisions), build, commit, checkout.

The engine never prints; it reports events to a Reporter. Options arrive as
one frozen BuildOptions. A failed stage is a value (recorded in the summary),
so `--keep-going` is just "keep scheduling what does not depend on it".
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field

from . import alarm as alarm_mod
from . import decision as dmod
from . import gitignore, sources
from .cache import CorruptObject, MissingObject, UnsafeOut
from .decision import RESTORE, RUN, SKIP, Decision
from .errors import UsageError
from .fsutil import Trash
from .hashing import HEX32, Meta, NotRegularFile
from .project import Project
from .reporter import Reporter
from .wslock import workspace_lock

TYPE_CHECKING = False  # typing's, which type checkers honour, without importing typing (2 ms)
if TYPE_CHECKING:
    from .executors import Job


@dataclass(frozen=True)
class BuildOptions:
    targets: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    keep_going: bool = False
    run_cache: bool = True
    jobs: int = 1
    wait: bool = True
    executor: str = "local"
    scheduler: str | None = None
    retries: int = 0  # Dask: attempts more after a worker dies mid-stage
    pull: bool = False  # consult the remote's run records before running a stage
    remote: str | None = None  # --remote URL (else REPROBUILD_REMOTE, else `remote:`)
    # claim(key) -> release(): waits while another build runs that key (experiments.KeyLocks);
    # the stage is decided again once claimed, so a result made meanwhile is restored. A
    # build holds one claim per running stage: with jobs=1 (as experiments run), one at a
    # time, so two keys sharing a KeyLocks stripe never make a build wait for itself
    claim: object = None
    strict: bool = False  # same key, different bytes fails the stage (alarm.py)


@dataclass
class Summary:
    ran: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    interrupted: bool = False
    alarms: list = field(default_factory=list)  # alarm.Alarm: same key, different bytes
    untrusted: list[str] = field(default_factory=list)  # "stage (why)": remote records refused

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.interrupted


# -- planning ---------------------------------------------------------------


def plan(
    project: Project,
    names: list[str],
    entries: dict,
    forced=(),
    run_cache: bool = True,
    sources_known: dict[str, Meta] | None = None,
) -> list[Decision]:
    """Every stage's fate if built now, in build order, without touching anything.

    A stage downstream of one that will run cannot know its inputs yet: those
    inputs are 'unknown' and it gets `upstream: NAME` as a reason. Outputs an
    upstream stage will restore are known from its run record, and missing
    tracked sources (`sources_known`) from their pins.
    """
    remade: dict[str, str] = {}  # out path -> stage that will remake it
    known: dict[str, Meta] = dict(sources_known or {})  # path -> content it will have
    decisions = []
    for name in names:
        stage = project.pipeline.stages[name]

        def pending(path, _self=name):
            for out in project.outs.related(path):
                owner = remade.get(out)
                if owner and owner != _self:
                    return owner
            return None

        d = dmod.decide(
            stage,
            entries.get(name),
            project.prober,
            project.cache,
            force=name in forced,
            run_cache=run_cache,
            pending=pending,
            known=known,
        )
        if d.fate != SKIP:
            for out in stage.outs:
                remade[out.path] = name
        if d.fate == RESTORE:
            known.update((p.rstrip("/"), m) for p, m in d.record.items())
        decisions.append(d)
    return decisions


# -- building ---------------------------------------------------------------


def build(project: Project, opts: BuildOptions, reporter: Reporter, executor=None) -> Summary:
    """Build the selected stages; `executor` replaces the one `opts` names (tests pass fakes)."""
    names = project.select(opts.targets)
    if opts.dry_run:
        entries, problem = project.read_lock()
        if problem:
            reporter.warning(problem)
        forced = set(project.resolve(opts.targets) if opts.targets else names) if opts.force else ()
        source_states = sources.check(project, project.read_sources())
        for st in source_states:
            if st.reason:
                reporter.source_planned(st.path, st.reason)
        for d in plan(
            project, names, entries, forced, opts.run_cache, sources.known_contents(source_states)
        ):
            reporter.stage_planned(d)
        return Summary()
    project.cache.ensure()
    with (
        workspace_lock(project.ws.state_dir, opts.wait, reporter.waiting_for_lock),
        project.cache.using(),
    ):
        project.sweep_lock_temps()
        entries, problem = project.read_lock()
        if problem:
            reporter.warning(problem)
        writer = project.lock_writer(entries)
        try:
            builder = Builder(project, opts, reporter, entries, writer)
            builder.sync_sources(names)
            summary = builder.run(names, executor)
            gitignore.sync(project)
            return summary
        finally:
            project.cache.commit()  # also when the lockfile has nothing new to say
            writer.close()
            project.save_stats()


class Builder:
    def __init__(self, project: Project, opts: BuildOptions, reporter: Reporter, entries, writer):
        self.p = project
        self.opts = opts
        self.reporter = reporter
        self.entries = entries
        self.writer = writer
        self.summary = Summary()
        # --force applies to the named stages only; upstream ones are brought up to date
        self.forced = (
            set(project.resolve(opts.targets) if opts.targets else project.pipeline.stages)
            if opts.force
            else set()
        )
        self.missing_sources: dict[str, str] = {}  # path -> reason, sources not to be had
        self.source_metas: dict = {}  # path -> content of each source, hashed once
        self.claims: dict = {}  # stage -> release() of its key claim, held until recorded
        # Run records of finished stages, written while the next stage runs (_idle): a new
        # file each (with, in a new cache, a new folder), off the path from one stage to
        # the next. (key, stage, outs, profile) each.
        self.runs_later: list[tuple] = []
        self.idle_error: BaseException | None = None
        self.executor = None  # made when a stage first runs: a no-op build needs none
        self.trash = Trash(project.ws.state_dir / "trash")  # outs about to be replaced
        self.jobs = 1
        self.remote = None
        if opts.pull:
            from .remote import open_remote  # fsspec only when a remote is used

            self.remote = open_remote(project, opts.remote)
            self.remote.on_warning = reporter.warning  # refused remote objects reach the console

    def sync_sources(self, names: list[str]) -> None:
        """Before any stage is decided: record changed sources (content into the cache,
        then the pin into the lockfile) and bring missing ones back from the cache (and
        the remote with --pull)."""
        w = self.writer
        for path in sources.undeclared(self.p, w.sources):
            w.update_source(path, None)
        wanted = sources.needed_by(self.p, names) if self.opts.targets else None
        for st in sources.check(self.p, w.sources, wanted):
            if st.current is not None:  # stages reading it need not hash it again
                self.source_metas[st.path] = st.current
            if st.status in (sources.CHANGED, sources.UNRECORDED) and st.current is not None:
                w.update_source(st.path, sources.record(self.p, st, w.sources.get(st.path)))
                self.reporter.source_recorded(st.path, st.recorded_because)
            elif st.status == sources.MISSING:
                if sources.restore(self.p, st) or self._pull_source(st):
                    self.source_metas[st.path] = st.locked
                    self.reporter.source_restored(st.path)
                else:
                    self._source_missing(st)
            elif st.status == sources.UNRECORDED:
                self._source_missing(st)
        w.flush()

    def _source_missing(self, st) -> None:
        """Said even when no selected stage reads it: a declared source is not to be had."""
        self.missing_sources[st.path] = st.reason
        self.reporter.warning(st.reason)

    def _pull_source(self, st) -> bool:
        if self.remote is None:
            return False
        self.remote.fetch([st.locked])
        return sources.restore(self.p, st)

    def run(self, names: list[str], executor=None) -> Summary:
        selected = set(names)
        waiting = {n: {u for u in self.p.predecessors(n) if u in selected} for n in names}
        ready = [n for n in names if not waiting[n]]
        order = {n: i for i, n in enumerate(names)}
        bad: dict[str, str] = {}  # stage -> the failed stage it stands behind
        running: dict = {}  # future -> (decision, job)
        jobs = self.opts.jobs if self.opts.jobs > 0 else (os.cpu_count() or 1)
        self.jobs = jobs
        self.executor = executor
        self.reporter.build_started(names)
        self.p.cache.defer_writes()  # stage outs' objects: see _idle
        stop = False
        restore_signals = _install_interrupt(self)
        try:
            while ready or running:
                while ready and not stop:
                    name = self._next_fitting(ready, running, jobs, bad)
                    if name is None:
                        break
                    ready.remove(name)
                    if name in bad:
                        self.summary.blocked.append(name)
                        self.reporter.stage_blocked(name, bad[name])
                        ok = False
                    else:
                        # -j 1 runs one stage at a time whatever is ready: each alone
                        alone = jobs == 1 or (not ready and not running)
                        ok = self._start(name, running, alone=alone)
                        if ok is None:
                            continue  # submitted: _finish releases it
                    failed = not ok
                    ready = self._release(name, failed, waiting, ready, order, bad)
                    if failed and not self.opts.keep_going:
                        stop = True
                if not running:
                    if stop:
                        break
                    continue
                from .executors import Done  # (loaded when the stage was started)

                done = [f for f in running if isinstance(f, Done)]  # run_here's: finished
                if not done:
                    from concurrent.futures import FIRST_COMPLETED, wait  # (the pool loaded it)

                    self._idle(lockfile=False)  # (run_here's stages had theirs as they started)
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: order[running[f][0].stage]):
                    d, job = running.pop(fut)
                    failed = not self._finish(d, job, fut)
                    ready = self._release(d.stage, failed, waiting, ready, order, bad)
                    if failed and not self.opts.keep_going:
                        stop = True
                if self.idle_error is not None:
                    raise self.idle_error
                if not all(isinstance(f, Done) for f in done) or not getattr(
                    self.executor, "idle", None
                ):
                    self.writer.flush(force=False)  # (else as the next stage starts: _idle)
                if self.summary.interrupted:
                    stop = True
            if stop and not self.opts.keep_going:
                for name in names:
                    if name not in self._accounted():
                        self.summary.blocked.append(name)
        finally:
            restore_signals()
            if self.executor is not None:
                self.executor.shutdown()
            try:
                self._write_runs_later()
            finally:
                self.trash.empty()
                for release in self.claims.values():
                    release()
        if self.remote is not None:
            self.summary.untrusted = [
                f"{why}: run record {key}" for key, why in sorted(self.remote.untrusted.items())
            ]
        alarm_mod.prune(self.p.ws.state_dir, self.entries)
        self.reporter.build_finished(self.summary)
        return self.summary

    def _submit(self, job: Job, alone: bool):
        if self.executor is None:
            self.executor = self._make_executor(self.jobs)
        if alone and hasattr(self.executor, "run_here"):
            # nothing else can run beside it (a chain, -j 1): two thread hand-offs less per
            # stage, and the bookkeeping of the last one done while it runs (_idle)
            return self.executor.run_here(job)
        return self.executor.submit(job)

    def _make_executor(self, jobs: int):
        if self.opts.executor == "dask":
            from .executors.dask import DaskExecutor

            return DaskExecutor(self.opts.scheduler, workers=jobs, retries=self.opts.retries)
        from .executors.local import LocalExecutor

        on_line = self.reporter.stage_output if self.reporter.shows_output else None
        return LocalExecutor(jobs, on_line=on_line, idle=self._idle, cache=self.p.cache)

    def _idle(self, lockfile: bool = True) -> None:
        """What need not hold up the next stage, done on this thread while stages run: the
        objects and run records of finished stages, deleting replaced outs, and a lockfile write that
        is due, where no stage can store an object between the write's sync and the write
        (`lockfile`: the one running stage is run_here's, which stores on this thread).
        A failure is raised by the run loop once the running stage is accounted for."""
        if self.idle_error is not None:
            return
        try:
            self.p.cache.write_deferred()  # (also the objects of stages with no run record)
            self._write_runs_later()
            if lockfile:
                self.writer.flush(force=False)
            self.trash.empty()
        except Exception as exc:
            self.idle_error = exc

    def _write_runs_later(self) -> None:
        while self.runs_later:
            key, stage, outs, profile = self.runs_later[0]
            # synced with the lockfile (group commit): a lost record is a run, not a wrong result
            self.p.cache.write_run(key, stage, outs, profile=profile, sync=False)
            self.runs_later.pop(0)

    def _accounted(self) -> set:
        s = self.summary
        return {*s.ran, *s.restored, *s.skipped, *s.failed, *s.blocked}

    def _next_fitting(self, ready, running, jobs, bad):
        """The first ready stage whose `resources.cpus` fit in what -j leaves free.

        A stage asking for more than -j runs alone; stages that will not run
        (behind a failure) need no CPU.
        """
        busy = sum(self.p.pipeline.stages[d.stage].cpus for d, _ in running.values())
        for name in ready:
            need = 0 if name in bad else min(self.p.pipeline.stages[name].cpus, jobs)
            if not running or busy + need <= jobs:
                return name
        return None

    def _release(self, name, failed, waiting, ready, order, bad):
        """Mark `name` done; downstream stages whose upstream all ended become ready."""
        for succ in self.p.successors(name):
            if succ not in waiting:
                continue
            if failed:
                bad.setdefault(succ, bad.get(name, name))
            waiting[succ].discard(name)
            if not waiting[succ] and succ not in ready:
                ready.append(succ)
        ready.sort(key=order.__getitem__)
        return ready

    def _start(self, name, running, alone: bool = False):
        """Skip, restore or submit one stage: True done, False failed, None submitted.
        `alone`: no other stage is ready or running, or -j 1."""
        stage = self.p.pipeline.stages[name]
        force = name in self.forced

        def decide(**overrides) -> Decision:
            options = dict(force=force, run_cache=self.opts.run_cache, known=self.source_metas)
            options.update(overrides)
            return dmod.decide(
                stage, self.entries.get(name), self.p.prober, self.p.cache, **options
            )

        d = decide()
        if d.fate == SKIP:
            self.summary.skipped.append(name)
            self.reporter.stage_skipped(d)
            return True
        if (
            d.fate == RUN
            and self.remote is not None
            and self.opts.run_cache
            and not force
            and not stage.always_run
            and d.state.key
            and self.remote.fetch_run(d.state.key)
        ):
            d = decide(force=False, run_cache=True)
        if d.fate == RUN and self.opts.claim is not None and d.state.key and not d.state.unknown:
            release = self.opts.claim(d.state.key)
            d = decide()
            if d.fate == RUN:
                self.claims[name] = release
            else:
                release()
        if d.state.unknown:  # an upstream stage did not make it, or a source is not to be had
            path = d.state.unknown[0]
            src = self.p.pipeline.source_of(path)
            if src is not None and src.path in self.missing_sources:
                return self._fail(name, self.missing_sources[src.path])
            return self._fail(name, f"dep missing: {path}")
        if stage.frozen and d.fate == RESTORE:
            return self._restore_frozen(d)
        if d.fate == RESTORE:
            try:
                self._save_unknown_outs(stage, d)
                self._restore(d)
                self.summary.restored.append(name)
                self.reporter.stage_restored(d)
                return True
            except (CorruptObject, MissingObject) as exc:
                self.reporter.warning(
                    f"stage '{name}': cache object {exc} is missing or corrupt; running instead"
                )
                d = Decision(d.stage, RUN, d.reasons, d.state)
        self._save_unknown_outs(stage, d)
        self._prepare_outs(stage)
        from .executors import Job, OutSpec  # (a no-op build runs nothing: it needs neither)

        job = Job(
            stage=name,
            cmds=stage.cmd,
            cwd=self.p.prober.abspath(stage.wdir),
            log_path=str(self.p.ws.state_dir / "logs" / f"{name}.log"),
            cpus=stage.cpus,
            outs=tuple(OutSpec(self.p.prober.abspath(o.path), o.cache) for o in stage.outs),
            cache_root=str(self.p.cache.root),
            link=self.p.cache.link,
            env=self._env_request(stage),
            workspace=str(self.p.ws.root),
            variables=tuple((v, os.environ.get(v)) for v in stage.env.vars),
            durable=self.opts.executor == "dask",
            state_dir=str(self.p.ws.state_dir),
        )
        self.reporter.stage_started(d)
        running[self._submit(job, alone)] = (d, job)
        return None

    def _env_request(self, stage):
        if not stage.env.requirements:
            return None
        from .envs import request

        return request(stage.env.requirements, str(self.p.ws.dir), str(self.p.cache.root))

    def _fail(self, name, message, log_tail="") -> bool:
        self.summary.failed[name] = message
        self.reporter.stage_failed(name, message, log_tail)
        return False

    def _restore_frozen(self, d: Decision) -> bool:
        """A frozen stage is never run: a missing out comes back from the cache, a changed
        one stops the build (downstream stages would read other bytes than the lockfile's)."""
        changed = [r.split(": ", 1)[1] for r in d.reasons if r.startswith("out modified: ")]
        if changed:
            return self._fail(
                d.stage,
                f"frozen stage's out modified: {changed[0]} (`reprobuild commit {d.stage}` "
                "accepts it; `reprobuild checkout` brings the locked one back)",
            )
        try:
            self._restore(d)
        except (CorruptObject, MissingObject) as exc:
            return self._fail(d.stage, f"frozen stage's out is missing from the cache ({exc})")
        self.summary.restored.append(d.stage)
        self.reporter.stage_restored(d)
        return True

    def _save_unknown_outs(self, stage, d: Decision) -> None:
        """Never destroy bytes that exist nowhere else: an existing out about to be removed
        or overwritten whose content is in no cache (changed by hand, or left by a failed
        run) is stored in the cache first, and the user is told where."""
        locked = (self.entries.get(stage.name) or {}).get("outs") or {}
        for out in stage.outs:
            if out.persist:
                continue
            current = self.p.prober.meta(out.path)
            if current is None or self.p.cache.has(current):
                continue
            made = locked.get(dmod.lock_path(out.path, current))
            as_locked = bool(made) and made.get("hash") == current.hash
            if not out.cache and as_locked:
                continue  # the stage's own uncached out, as the lockfile records it
            try:
                saved = self.p.cache.insert(
                    self.p.prober.abspath(out.path), self.p.hasher, str(self.p.ws.root)
                )
            except (UnsafeOut, NotRegularFile):
                continue  # a link out of the workspace or a FIFO: no bytes of ours to keep
            if as_locked:
                continue  # what the lockfile records (a fresh clone's committed out): kept quietly
            where = self.p.cache.object_path(saved.hash, saved.is_dir)
            self.reporter.warning(
                f"stage '{stage.name}': out '{out.path}' differs from the lockfile and was in "
                f"no cache; its content is saved as {where} before the stage "
                + ("is restored" if d.fate == RESTORE else "runs")
            )

    def _prepare_outs(self, stage) -> None:
        for out in stage.outs:
            path = self.p.prober.abspath(out.path)
            if out.persist:
                continue
            self.trash.put(path)  # deleted while the stage runs (LocalExecutor's `idle`)
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):  # one stat, where makedirs costs three
                os.makedirs(folder, exist_ok=True)

    def _restore(self, d: Decision) -> None:
        for path, meta in d.record.items():
            self.p.cache.restore(meta, self.p.prober.abspath(path.rstrip("/")), self.p.hasher)
        self._record(d, dict(d.record), write_run=False)

    def _finish(self, d: Decision, job: Job, fut) -> bool:
        """After a run (outs already stored by the executor): check inputs, record the result."""
        try:
            return self._finish_run(d, job, fut)
        finally:
            release = self.claims.pop(d.stage, None)
            if release is not None:
                # a claim (builds sharing a cache, as experiments) is released once the
                # record is written, which then is at once: a build holds one claim at a
                # time, and the others waiting for the key find the record
                try:
                    self._write_runs_later()
                finally:
                    release()

    def _finish_run(self, d: Decision, job: Job, fut) -> bool:
        name = d.stage
        stage = self.p.pipeline.stages[name]
        try:
            result = fut.result()
        except Exception as exc:  # the executor failed, not the command (e.g. a Dask worker died)
            self._fail(name, f"could not run: {type(exc).__name__}: {exc}", _tail(job.log_path))
            return False
        if result.error:
            self._fail(name, result.error, _tail(job.log_path))
            return False
        if result.returncode != 0:
            if self.summary.interrupted:
                self._fail(name, "interrupted")
            else:
                self._fail(
                    name,
                    f"command exited with {result.returncode}: {result.failed_cmd}",
                    _tail(job.log_path),
                )
            return False
        if result.missing_out:
            rel = os.path.relpath(result.missing_out, self.p.ws.dir).replace(os.sep, "/")
            self._fail(name, f"out missing after run: {rel}")
            return False
        if result.refused:
            self._fail(name, f"out refused: {result.refused}")
            return False
        for path, *entry in result.stats:
            self.p.hasher.stats.merge(path, entry)
        after = self.p.prober.state(stage)
        if after.key != d.state.key:
            changed = dmod.input_reasons(stage, d.state.lock_entry({}), after, [])
            self._fail(
                name,
                "inputs changed while it ran ("
                + ", ".join(changed or ["?"])
                + "); its result is not recorded",
            )
            return False
        if not job.durable:
            self.p.cache.unsynced()
        outs: dict[str, Meta] = {}
        for out in stage.outs:
            meta = result.outs[self.p.prober.abspath(out.path)]
            outs[dmod.lock_path(out.path, meta)] = meta
        alarm = alarm_mod.check(
            stage,
            d.state.key,
            outs,
            self.entries.get(name),
            self.p.cache,
            self.remote,
            result.profile,
        )
        if alarm is not None:
            alarm_mod.keep(self.p.ws.state_dir, alarm)
            self.summary.alarms.append(alarm)
            self.reporter.stage_nondeterministic(alarm)
            if self.opts.strict:
                self._fail(name, "nondeterministic (--strict): " + alarm.summary())
                return False
        self._record(
            d, outs, write_run=all(o.cache for o in stage.outs), profile=result.profile, later=True
        )
        self.summary.ran.append(name)
        self.reporter.stage_finished(d, result.seconds)
        return True

    def _record(
        self,
        d: Decision,
        outs: dict[str, Meta],
        write_run: bool,
        profile: dict | None = None,
        later: bool = False,
    ) -> None:
        """The stage's lockfile entry and run record; the record is written by _idle while
        the next stage runs (or at the end of the build), and with `later` so is a
        lockfile write that is due."""
        entry = d.state.lock_entry(dict(sorted(outs.items())))
        if write_run:
            self.runs_later.append((d.state.key, d.stage, outs, profile))
        self.entries[d.stage] = entry
        self.writer.update(d.stage, entry, flush=not later)


def _tail(log_path: str, lines: int = 20) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _install_interrupt(builder):
    """First Ctrl-C/SIGTERM: start nothing new, terminate running stages. Second: kill them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        kill = builder.summary.interrupted
        builder.summary.interrupted = True
        if builder.executor is not None:
            builder.executor.terminate(kill=kill)

    for s in previous:
        signal.signal(s, handler)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


# -- commit and checkout ----------------------------------------------------


def commit(
    project: Project, names: list[str], reporter: Reporter, source_paths: list[str] | None = None
) -> list[str]:
    """Record the workspace as it is for these stages and tracked sources (None: every
    source); returns what was recorded.

    Every stage is checked before anything is written: all or nothing. A run
    record is what a run of that key produced: an existing one is never
    rewritten (the lockfile records the workspace; the record keeps history).
    """
    project.cache.ensure()
    with workspace_lock(project.ws.state_dir), project.cache.using():
        states = {}
        for name in names:
            stage = project.pipeline.stages[name]
            state = project.prober.state(stage)
            if state.unknown:
                raise_missing(name, state.unknown[0], "dep")
            for out in stage.outs:
                if not os.path.lexists(project.prober.abspath(out.path)):
                    raise_missing(name, out.path, "out")
            states[name] = state
        entries, _ = project.read_lock()
        writer = project.lock_writer(entries)
        wanted = None
        if source_paths is not None:
            wanted = [s for s in project.pipeline.sources if s.path in source_paths]
        recorded = []
        for st in sources.check(project, writer.sources, wanted):
            if st.current is None:
                if st.status != sources.OK and source_paths is not None:
                    raise UsageError(f"source '{st.path}' does not exist; nothing to commit")
                continue
            if st.status != sources.OK:
                writer.update_source(
                    st.path, sources.record(project, st, writer.sources.get(st.path))
                )
                recorded.append(st.path)
        for name, state in states.items():
            stage = project.pipeline.stages[name]
            outs = {}
            for out in stage.outs:
                path = project.prober.abspath(out.path)
                try:
                    meta = (
                        project.cache.insert(path, project.hasher, str(project.ws.root))
                        if out.cache
                        else project.hasher.path(path)
                    )
                except (UnsafeOut, NotRegularFile) as exc:
                    raise UsageError(f"stage '{name}': out '{out.path}' refused: {exc}") from None
                outs[dmod.lock_path(out.path, meta)] = meta
            if all(o.cache for o in stage.outs) and project.cache.read_run(state.key) is None:
                project.cache.write_run(state.key, name, outs)
            writer.update(name, state.lock_entry(dict(sorted(outs.items()))))
        writer.close()
        project.save_stats()
        gitignore.sync(project)
    return recorded + list(states)


def raise_missing(stage, path, what):
    raise UsageError(f"stage '{stage}': {what} '{path}' does not exist; nothing to commit")


@dataclass
class CheckoutResult:
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "stage: path" the cache lacks
    kept: list[str] = field(default_factory=list)  # modified by hand, not in the cache
    ignored: list[str] = field(default_factory=list)  # "stage: path" the pipeline does not declare


def checkout(
    project: Project,
    entries: dict,
    names: list[str] | None = None,
    force: bool = False,
    pins: dict | None = None,
    source_paths: list[str] | None = None,
) -> CheckoutResult:
    """Make workspace outs match `entries` (a lockfile's stages) and tracked sources match
    `pins` (its `sources:` section) from the cache; runs nothing.

    Only paths the current pipeline declares as that stage's outs, or as
    sources, are written (a lockfile from a branch or a pull request cannot
    name other paths), and a file changed by hand whose content the cache
    lacks is kept unless `force`. `names` None means every stage and, unless
    `source_paths` narrows them, every source; named stages bring no sources.
    """
    result = CheckoutResult()
    declared_sources = {s.path for s in project.pipeline.sources}
    if source_paths is None:
        source_paths = sorted(pins or {}) if names is None else []
    with workspace_lock(project.ws.state_dir), project.cache.using():
        for path in source_paths:
            meta = Meta.from_lock((pins or {}).get(path))
            if meta is None or path not in declared_sources:
                result.ignored.append(f"(source): {path}")
                continue
            _checkout_one(project, sources.OWNER, path, meta, force, result)
        for name in sorted(entries) if names is None else names:
            entry = entries.get(name) or {}
            stage = project.pipeline.stages.get(name)
            declared = {o.path for o in stage.outs} if stage else set()
            key = entry.get("key")
            # the run record keeps each file out's mode (the lockfile does not)
            record = project.cache.read_run(key) if HEX32.match(str(key)) else None
            for path, d in sorted((entry.get("outs") or {}).items()):
                meta = Meta.from_lock(d)
                rel = path.rstrip("/")
                if meta is None or rel not in declared:
                    result.ignored.append(f"{name}: {rel}")
                    continue
                if record and path in record and record[path] == meta:
                    meta = record[path]
                _checkout_one(project, name, rel, meta, force, result)
        project.save_stats()
    return result


def _checkout_one(project, owner: str, rel: str, meta: Meta, force: bool, result) -> None:
    current = project.prober.meta(rel)
    if current is not None and current.hash == meta.hash:
        result.unchanged.append(rel)
        return
    if current is not None and not force and not project.cache.has(current):
        result.kept.append(rel)
        return
    try:
        project.cache.restore(meta, project.prober.abspath(rel), project.hasher)
        result.restored.append(rel)
    except (MissingObject, CorruptObject):
        result.missing.append(f"{owner}: {rel}")
