"""Hermetic stage environments: a virtual environment built by uv from a lock file.

A stage (or the whole pipeline) that says `env: {requirements: FILE}` runs
with that environment's `bin/` first on PATH (and VIRTUAL_ENV set), so its
`python` is the environment's. FILE is a pinned requirements file (installed
with `uv pip sync`: exactly what it lists, nothing else), or `uv.lock` /
`pyproject.toml` (the pair, installed with `uv sync --frozen
--no-install-project`). The lock file's hash is in the stage's key, and its
pins are the stage's `packages` in the lockfile.

Layout, in the cache:

    cache/envs/<hash>/                 the environment (uv venv --relocatable)
    cache/envs/<hash>/reprobuild-env.json
        {"schema": 1, "kind": "requirements" | "project",
         "files": {NAME: HASH}, "python": "CPython 3.11.7", "interpreter": PATH}
    cache/envs/<hash>.lock             flock: one builder at a time

<hash> is the XXH3-128 of the kind, the lock files' names and contents, and
the interpreter (its path and version). An environment is built in
`cache/tmp/`, its record written last, then renamed into `envs/`: a reader
finds a complete environment or none. The lock makes two stages, builds or
workspaces sharing the cache (or Dask workers on a shared filesystem) build
it once; the others wait, then use it. `gc` keeps an environment while a
kept lockfile names its files' hashes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import hashing
from .fsutil import atomic_write, fsync_dir, remove_path


class EnvError(Exception):
    """The environment could not be built (uv's message), or uv is missing."""


SCHEMA = 1
RECORD = "reprobuild-env.json"
PROJECT_FILES = ("pyproject.toml", "uv.lock")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#\\]+)")


def lock_files(path: str) -> list[str]:
    """The files that pin an environment: the requirements file, or pyproject.toml + uv.lock."""
    folder, name = os.path.split(path)
    if name in PROJECT_FILES:
        return [os.path.join(folder, n).replace(os.sep, "/") for n in PROJECT_FILES]
    return [path]


def kind_of(path: str) -> str:
    return "project" if os.path.basename(path) in PROJECT_FILES else "requirements"


def pinned(base: str, path: str) -> dict:
    """{name: version} the lock file pins, sorted (the stage's `packages` in the lockfile)."""
    from .packages import normalise

    pins: dict = {}
    if kind_of(path) == "project":
        import tomllib

        folder = os.path.join(base, os.path.dirname(path))
        try:
            with open(os.path.join(folder, "uv.lock"), "rb") as f:
                doc = tomllib.load(f)
        except (OSError, ValueError):
            return {}
        for pkg in doc.get("package", []):
            source = pkg.get("source") or {}
            if source.get("virtual") == "." or source.get("editable") == ".":
                continue  # the project itself: not installed (--no-install-project)
            if "name" in pkg and "version" in pkg:
                pins[normalise(pkg["name"])] = str(pkg["version"])
    else:
        try:
            text = Path(base, path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
        for line in text.splitlines():
            m = _PIN.match(line)
            if m:
                pins[normalise(m.group(1))] = m.group(2)
    return dict(sorted(pins.items()))


@dataclass(frozen=True)
class EnvRequest:
    """What a job needs to find or build its environment (picklable: Dask ships it)."""

    kind: str
    files: tuple[tuple[str, str], ...]  # (name relative to the pipeline folder, absolute path)
    cache_root: str
    python: str = sys.executable

    @property
    def main_file(self) -> str:
        """The requirements file, or the project folder."""
        path = self.files[0][1]
        return os.path.dirname(path) if self.kind == "project" else path

    def hashes(self) -> dict:
        return {name: hashing.hash_file_raw(path)[0] for name, path in self.files}

    def digest(self, hashes: dict) -> str:
        doc = {
            "schema": SCHEMA,
            "kind": self.kind,
            "files": hashes,
            "interpreter": os.path.realpath(self.python),
            "python": sys.version,
        }
        return hashing.hash_bytes(json.dumps(doc, sort_keys=True).encode())


def request(requirements: str, base: str, cache_root: str) -> EnvRequest:
    files = tuple(
        (rel, os.path.normpath(os.path.join(base, rel))) for rel in lock_files(requirements)
    )
    return EnvRequest(kind_of(requirements), files, cache_root)


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise EnvError(
        "env.requirements needs uv to build the environment: pip install 'reprobuild[envs]'"
    )


def ensure(req: EnvRequest, say=None) -> Path:
    """The environment's folder, built first when missing. `say(line)` gets progress and uv's output."""
    say = say or (lambda line: None)
    hashes = req.hashes()
    digest = req.digest(hashes)
    envs = Path(req.cache_root) / "envs"
    final = envs / digest
    if (final / RECORD).is_file():
        return final
    envs.mkdir(parents=True, exist_ok=True)
    fd = os.open(envs / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build to finish creating environment {digest[:12]}...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        if (final / RECORD).is_file():
            return final
        if final.exists():  # cannot happen (rename is atomic); never use what we cannot trust
            remove_path(final)
        _create(req, hashes, digest, final, say)
        return final
    finally:
        os.close(fd)


def _create(req: EnvRequest, hashes: dict, digest: str, final: Path, say) -> None:
    uv = uv_binary()
    names = ", ".join(hashes)
    say(f"creating environment {digest[:12]} from {names} with uv (once, in {final.parent})")
    tmp_root = Path(req.cache_root) / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tmp_root, prefix=f"env-{digest[:12]}-"))
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        steps = [
            [uv, "venv", "--relocatable", "--no-project", "--python", req.python, str(tmp / "v")],
        ]
        if req.kind == "project":
            env["UV_PROJECT_ENVIRONMENT"] = str(tmp / "v")
            steps.append(
                [uv, "sync", "--frozen", "--no-install-project", "--project", req.main_file]
            )
        else:
            steps.append(
                [uv, "pip", "sync", "--python", str(tmp / "v" / "bin" / "python"), req.main_file]
            )
        for cmd in steps:
            _run(cmd, os.path.dirname(req.files[0][1]), env, say)
        python = subprocess.run(
            [
                str(tmp / "v" / "bin" / "python"),
                "-c",
                "import platform; print(platform.python_implementation(), platform.python_version())",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        record = {
            "schema": SCHEMA,
            "kind": req.kind,
            "files": hashes,
            "python": python,
            "interpreter": os.path.realpath(req.python),
        }
        atomic_write(tmp / "v" / RECORD, json.dumps(record, sort_keys=True, indent=1).encode())
        os.replace(tmp / "v", final)
        fsync_dir(final.parent)
        say(f"environment {digest[:12]} ready")
    finally:
        remove_path(tmp)


def _run(cmd: list[str], cwd: str, env: dict, say) -> None:
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        say(line)
    if proc.wait() != 0:
        useful = [ln.strip() for ln in lines if ln.strip()]
        detail = "; ".join(useful[-3:]) if useful else f"exit code {proc.returncode}"
        raise EnvError(f"uv {cmd[1]} failed: {detail}")


def activate(env_dir: Path, environ: dict | None = None) -> dict:
    """The process environment a stage runs with: the environment's bin/ first on PATH."""
    environ = dict(os.environ if environ is None else environ)
    environ.pop("PYTHONHOME", None)
    environ["VIRTUAL_ENV"] = str(env_dir)
    environ["PATH"] = str(env_dir / "bin") + os.pathsep + environ.get("PATH", "")
    return environ


# -- gc -------------------------------------------------------------------------


def referenced(entries: list[dict]) -> list[dict]:
    """The `env.requirements` mappings ({file: hash}) kept lock entries name."""
    found = []
    for entry in entries:
        reqs = (entry.get("env") or {}).get("requirements")
        if isinstance(reqs, dict) and reqs:
            found.append(reqs)
    return found


def unreferenced(cache_root: Path, entries: list[dict]) -> list[Path]:
    """Environments (and stray lock files) no kept lockfile refers to."""
    envs = Path(cache_root) / "envs"
    if not envs.is_dir():
        return []
    wanted = [sorted(r.values()) for r in referenced(entries)]
    drop, kept = [], set()
    for path in sorted(p for p in envs.iterdir() if p.suffix != ".lock"):
        try:
            record = json.loads((path / RECORD).read_bytes())
            hashes = sorted(record["files"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            hashes = None
        if hashes is None or hashes not in wanted:
            drop.append(path)
        else:
            kept.add(path.name)
    drop += [p for p in sorted(envs.glob("*.lock")) if p.stem not in kept]
    return drop
