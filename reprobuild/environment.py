"""The environment fingerprint: what, besides code and data, decides a stage's result.

Recorded in the lockfile as, e.g.:
    env:
      python: CPython 3.11.7
      platform: linux-x86_64
      packages: {joblib: 1.5.2, numpy: 2.4.6, scikit-learn: 1.9.1, scipy: 1.17.1, ...}
      vars: {PYTHONHASHSEED: '0'}
      files: {requirements.txt: <hash>}
      requirements: {requirements.lock: <hash>}
`packages` is the closure of the listed packages (packages.py): each one and
everything it requires, recursively. A package that is not installed is
recorded as `not installed`, a variable that is not set as null: both are
facts that change results. A stage with `requirements:` runs in a uv-built
environment (envs.py): its packages are the lock file's pins, not what is
installed beside reprobuild. The machine (CPU, BLAS) is not here: it goes to
run records (machine.py), so the lockfile stays machine-independent.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache

from .packages import NOT_INSTALLED, Installed  # noqa: F401  (NOT_INSTALLED: API)
from .pipeline import EnvSpec


@cache
def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


@cache
def platform_name() -> str:
    return f"{sys.platform}-{platform.machine().lower()}"


def fingerprint(
    spec: EnvSpec, file_hash, installed: Installed | None = None, base: str = "."
) -> tuple[dict, dict]:
    """(the env mapping of a lock entry, {package: [listed packages it comes via]}).

    `file_hash(path)` hashes a pinned file (or None); `installed` resolves
    package closures (a fresh, uncached index when None); `base` is the
    pipeline folder, where `requirements` files are read.
    """
    env: dict = {}
    via: dict = {}
    if spec.python:
        env["python"] = python_version()
    if spec.platform:
        env["platform"] = platform_name()
    if spec.requirements:
        from . import envs

        files = envs.lock_files(spec.requirements)
        env["packages"] = envs.pinned(base, spec.requirements)
        env["requirements"] = {f: file_hash(f) for f in files}
    elif spec.packages:
        env["packages"], via = (installed or Installed(None)).versions(spec.packages)
    if spec.vars:
        env["vars"] = {v: os.environ.get(v) for v in spec.vars}
    if spec.files:
        env["files"] = {f: file_hash(f) for f in spec.files}
    return env, via


def changes(old: dict, new: dict, via: dict | None = None) -> list[str]:
    """`NAME OLD -> NEW` for every difference, flattened (`scikit-learn 1.5.1 -> 1.5.2`);
    a package pulled in by a listed one says so: `scipy 1.16.3 -> 1.17.1 (via scikit-learn)`."""
    out = []
    flat_old, flat_new = _flatten(old or {}), _flatten(new or {})
    for name in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(name, "(none)"), flat_new.get(name, "(none)")
        if a != b:
            line = f"{name} {a} -> {b}"
            if via and via.get(name):
                line += f" (via {', '.join(via[name])})"
            out.append(line)
    return out


def _flatten(env: dict) -> dict:
    out = {}
    for k, v in env.items():
        if isinstance(v, dict):
            out.update({name: value for name, value in v.items()})
        else:
            out[k] = v
    return out
