"""The environment fingerprint: what, besides code and data, decides a stage's result.

Recorded in the lockfile as, e.g.:
    env:
      python: CPython 3.11.7
      platform: linux-x86_64
      packages: {numpy: 2.4.6, scikit-learn: 1.9.1}
      vars: {PYTHONHASHSEED: '0'}
      files: {requirements.txt: <hash>}
A package that is not installed is recorded as `not installed`, a variable
that is not set as null: both are facts that change results.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache

from .pipeline import EnvSpec

NOT_INSTALLED = "not installed"


@cache
def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


@cache
def platform_name() -> str:
    return f"{sys.platform}-{platform.machine().lower()}"


@cache
def package_version(name: str) -> str:
    from importlib import metadata  # only pipelines that list packages pay for it

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def fingerprint(spec: EnvSpec, file_hash) -> dict:
    """The env mapping of a lock entry; `file_hash(path)` hashes a pinned file (or None)."""
    env: dict = {}
    if spec.python:
        env["python"] = python_version()
    if spec.platform:
        env["platform"] = platform_name()
    if spec.packages:
        env["packages"] = {p: package_version(p) for p in spec.packages}
    if spec.vars:
        env["vars"] = {v: os.environ.get(v) for v in spec.vars}
    if spec.files:
        env["files"] = {f: file_hash(f) for f in spec.files}
    return env


def changes(old: dict, new: dict) -> list[str]:
    """`NAME OLD -> NEW` for every difference, flattened (`scikit-learn 1.5.1 -> 1.5.2`)."""
    out = []
    flat_old, flat_new = _flatten(old or {}), _flatten(new or {})
    for name in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(name, "(none)"), flat_new.get(name, "(none)")
        if a != b:
            out.append(f"{name} {a} -> {b}")
    return out


def _flatten(env: dict) -> dict:
    out = {}
    for k, v in env.items():
        if isinstance(v, dict):
            out.update({name: value for name, value in v.items()})
        else:
            out[k] = v
    return out
