"""`reprobuild verify`: does running a stage again give the same bytes?

Each stage is re-run in a scratch folder holding exactly its declared inputs
as the lockfile pins them (code, deps, params files), laid out at the same
paths relative to the workspace root. Inputs come from the workspace when
their hash still matches the lock, else from the cache; when neither has
them the stage cannot be verified and says why. The workspace, the lockfile
and the cache are never written (except that a stage's uv-built environment,
envs.py, is created when missing). Every out is compared with its locked hash;
a mismatch names the out, the sizes, the first differing byte and, for text,
a short diff against the locked bytes (when the cache still has them).
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from . import decision as dmod
from .cache import CorruptObject, MissingObject
from .hashing import Hasher, Meta, StatCache
from .project import Project

DIFF_LINES = 12


@dataclass
class OutDiff:
    path: str
    locked: Meta | None
    got: Meta | None
    detail: list[str] = field(default_factory=list)


@dataclass
class StageVerdict:
    stage: str
    status: str  # reproducible | differs | failed | unverifiable
    message: str = ""
    diffs: list[OutDiff] = field(default_factory=list)


def verify(project: Project, names: list[str], entries: dict, on_done=None) -> list[StageVerdict]:
    verdicts = []
    for name in names:
        entry = entries.get(name)
        if entry is None:
            verdict = StageVerdict(name, "unverifiable", "not in the lockfile: build it first")
        else:
            scratch = tempfile.mkdtemp(prefix="reprobuild-verify-")
            try:
                verdict = _verify_stage(project, name, entry, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        verdicts.append(verdict)
        if on_done:
            on_done(verdict)
    return verdicts


def _verify_stage(project: Project, name: str, entry: dict, scratch: str) -> StageVerdict:
    stage = project.pipeline.stages[name]
    # code and deps are taken as locked (below); a changed command, param or
    # environment would make the re-run another run than the locked one
    stale = [
        r
        for r in dmod.input_reasons(stage, entry, project.prober.state(stage), [])
        if not r.startswith(("dep changed", "code changed"))
    ]
    if stale:
        return StageVerdict(
            name, "unverifiable", "stale (" + ", ".join(stale) + "); build first, then verify"
        )
    base = os.path.join(scratch, os.path.relpath(project.ws.dir, project.ws.root))
    os.makedirs(base, exist_ok=True)
    inputs = {**(entry.get("code") or {}), **(entry.get("deps") or {})}
    for path, d in inputs.items():
        problem = _materialise(project, path.rstrip("/"), Meta.from_lock(d), base, scratch)
        if problem:
            return StageVerdict(name, "unverifiable", problem)
    # params and environment files: a script may read them itself
    for rel in (*project.pipeline.params_files, *stage.env.files):
        src = project.prober.abspath(rel)
        dst = os.path.normpath(os.path.join(base, rel))
        if os.path.isfile(src) and _inside(dst, scratch):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
    for out in stage.outs:
        os.makedirs(os.path.dirname(os.path.join(base, out.path)), exist_ok=True)
    cwd = os.path.normpath(os.path.join(base, stage.wdir))
    os.makedirs(cwd, exist_ok=True)
    environ = None
    if stage.env.requirements:  # the same uv-built environment as the build (made if missing)
        from . import envs

        req = envs.request(stage.env.requirements, str(project.ws.dir), str(project.cache.root))
        try:
            environ = envs.activate(envs.ensure(req))
        except envs.EnvError as exc:
            return StageVerdict(name, "failed", str(exc))
    for cmd in stage.cmd:
        proc = subprocess.run(
            ["sh", "-c", cmd],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return StageVerdict(
                name,
                "failed",
                f"command exited with {proc.returncode}: {cmd}"
                + ("\n" + "\n".join(tail) if tail else ""),
            )
    hasher = Hasher(StatCache(None))
    diffs = []
    for path, d in sorted((entry.get("outs") or {}).items()):
        locked = Meta.from_lock(d)
        got = hasher.path(os.path.join(base, path.rstrip("/")))
        if got is None or locked is None or got.hash != locked.hash:
            diffs.append(_describe(project, path.rstrip("/"), locked, got, base, hasher))
    if diffs:
        return StageVerdict(name, "differs", diffs=diffs)
    return StageVerdict(name, "reproducible")


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(
        folder
    )


def _materialise(
    project: Project, rel: str, meta: Meta | None, base: str, scratch: str
) -> str | None:
    """Put the locked version of an input into the scratch folder; a reason when impossible."""
    dst = os.path.normpath(os.path.join(base, rel))
    if meta is None or not _inside(dst, scratch):
        return f"the lock entry of '{rel}' is malformed or leaves the workspace"
    src = project.prober.abspath(rel)
    current = project.prober.meta(rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if current is not None and current.hash == meta.hash:
        if os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=False)
        else:
            shutil.copy2(src, dst)
        return None
    try:
        project.cache.restore(meta, dst)
        return None
    except (MissingObject, CorruptObject):
        return (
            f"input '{rel}' changed since the lock and the cache lacks the locked version; "
            "build first, then verify"
        )


def _describe(project, path, locked, got, base, hasher) -> OutDiff:
    diff = OutDiff(path, locked, got)
    if got is None:
        diff.detail.append("not produced by the re-run")
        return diff
    if locked is None:
        return diff
    if locked.is_dir or got.is_dir:
        diff.detail += _folder_detail(project, locked, os.path.join(base, path), hasher)
        return diff
    diff.detail += _file_detail(
        project.cache.object_path(locked.hash), os.path.join(base, path), locked.size, got.size
    )
    return diff


def _folder_detail(project, locked: Meta, folder: str, hasher) -> list[str]:
    try:
        old = {e["path"]: e for e in project.cache.read_manifest(locked.hash)}
    except (MissingObject, CorruptObject):
        return ["(the cache no longer has the locked folder manifest to compare files)"]
    new = {e["path"]: e for e in hasher.manifest(folder)}
    lines = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a is None:
            lines.append(f"{rel}: new file")
        elif b is None:
            lines.append(f"{rel}: missing in the re-run")
        elif a["hash"] != b["hash"]:
            lines.append(f"{rel}:")
            lines += [
                "  " + line
                for line in _file_detail(
                    project.cache.object_path(a["hash"]),
                    os.path.join(folder, rel),
                    a["size"],
                    b["size"],
                )
            ]
    return lines


def _file_detail(locked_obj, new_path: str, locked_size: int, new_size: int) -> list[str]:
    lines = [f"size {locked_size:,} -> {new_size:,} bytes"]
    if not os.path.isfile(locked_obj):
        return lines + ["(the cache no longer has the locked bytes to compare)"]
    with open(locked_obj, "rb") as a, open(new_path, "rb") as b:
        offset = _first_difference(a, b)
        lines.append(f"first differing byte at offset {offset:,}")
        a.seek(0)
        b.seek(0)
        old, new = a.read(1 << 20), b.read(1 << 20)
    if _is_text(old) and _is_text(new):
        diff = list(
            difflib.unified_diff(
                old.decode().splitlines(),
                new.decode().splitlines(),
                "locked",
                "re-run",
                n=1,
                lineterm="",
            )
        )
        lines += diff[:DIFF_LINES] + (["..."] if len(diff) > DIFF_LINES else [])
    return lines


def _first_difference(a, b) -> int:
    offset = 0
    while True:
        x, y = a.read(1 << 16), b.read(1 << 16)
        if x != y:
            n = min(len(x), len(y))
            i = next((k for k in range(n) if x[k] != y[k]), n)
            return offset + i
        if not x:
            return offset
        offset += len(x)


def _is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False
