"""The machine profile: what can change floating-point results without changing a key.

Kept in each run record (cache.py), never in the lockfile, which must stay
machine-independent. Taken where the stage ran (a Dask worker too), once per
process for each interpreter and set of numeric variables:

    {"cpu": "AMD EPYC 9B45", "machine": "x86_64", "cpus": 2,
     "simd": ["avx", "avx2", "avx512f", "fma", ...],        # from /proc/cpuinfo
     "numpy": "2.4.6", "numpy_simd": ["X86_V2", "X86_V3", ...],  # what NumPy dispatches to
     "libraries": [{"api": "openblas", "version": "0.3.31", "architecture": "Haswell",
                    "threading": "pthreads", "threads": 2}],   # threadpoolctl
     "vars": {"OPENBLAS_CORETYPE": "Haswell", ...}}            # numeric variables that are set

NumPy and the BLAS/OpenMP libraries are read in the stage's interpreter (the
first `python` on the stage's PATH: a hermetic environment's, else the one
the shell finds), by a short probe that imports numpy and threadpoolctl when
they are importable there; it costs ~0.2 s, so its answer is kept in the
workspace's state folder, `.reprobuild/machine/<XXH3 of the key>.json`:

    {"schema": 1, "key": [host, boot id, python, numeric vars, PYTHONPATH,
                          LD_LIBRARY_PATH, LD_PRELOAD],
     "python": [inode, size, mtime_ns], "paths": {DIR: mtime_ns, ...},
     "libraries": {...what the probe printed...}}

and reused while the interpreter file and every folder on its `sys.path` are
unchanged: installing, upgrading or removing a package changes its
site-packages folder's mtime, a reboot changes the boot id. A missing,
damaged or stale file is a new probe.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from functools import cache

# Variables that change what numeric libraries compute (kernels, threads, dispatch).
NUMERIC_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_L2_SIZE",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OMP_DYNAMIC",
    "MKL_CBWR",
    "MKL_NUM_THREADS",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "BLIS_ARCH_TYPE",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NPY_DISABLE_CPU_FEATURES",
    "NPY_ENABLE_CPU_FEATURES",
    "GLIBC_TUNABLES",
    "POLARS_MAX_THREADS",
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "TF_DETERMINISTIC_OPS",
)
_SIMD_PREFIXES = ("sse", "ssse3", "pni", "avx", "fma", "f16c", "amx", "neon", "asimd", "sve")

PROBE = r"""
import json
out = {}
try:
    import numpy
    out["numpy"] = numpy.__version__
    try:
        from numpy._core import _multiarray_umath as m
    except ImportError:
        from numpy.core import _multiarray_umath as m
    feats = m.__cpu_features__
    out["numpy_simd"] = list(m.__cpu_baseline__) + [f for f in m.__cpu_dispatch__ if feats.get(f)]
except Exception:
    pass
try:
    from threadpoolctl import threadpool_info
    out["libraries"] = sorted(
        (
            {
                "api": i.get("internal_api"),
                "version": i.get("version"),
                "architecture": i.get("architecture"),
                "threading": i.get("threading_layer"),
                "threads": i.get("num_threads"),
            }
            for i in threadpool_info()
        ),
        key=lambda d: json.dumps(d, sort_keys=True),
    )
except Exception:
    pass
import os, sys
out["_paths"] = [p for p in sys.path if p and os.path.isdir(p)]
print(json.dumps(out))
"""
PROBE_SCHEMA = 1
LOADER_VARS = ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")  # where the probe's imports come from


@cache
def cpu() -> tuple[str, tuple[str, ...]]:
    """(CPU model, its SIMD features) from /proc/cpuinfo; platform's guess elsewhere."""
    model, flags = "", ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = tuple(
                        sorted(
                            {
                                f
                                for f in value.split()
                                if f.startswith(_SIMD_PREFIXES) or f in ("sha_ni", "gfni", "vaes")
                            }
                        )
                    )
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or "unknown", flags


def stage_python(environ: dict | None) -> str:
    """The interpreter a stage's `python` is: the first on its PATH."""
    return _first_python((environ or os.environ).get("PATH"))


@cache
def _first_python(path: str | None) -> str:
    """A PATH search per stage showed in a build's profile: once per PATH per process."""
    return shutil.which("python", path=path) or shutil.which("python3", path=path) or sys.executable


def _inputs(environ) -> tuple[str, tuple, str, tuple]:
    """What the probe's answer depends on besides the machine: (python, numeric
    variables, PATH, loader variables) of a stage run with `environ`."""
    numeric = tuple((v, environ[v]) for v in NUMERIC_VARS if v in environ)
    loader = tuple(environ.get(v, "") for v in LOADER_VARS)
    return stage_python(environ), numeric, environ.get("PATH", ""), loader


def start_probe(state_dir: str) -> None:
    """Start the probe for a stage run in this process's environment now, when no kept
    answer serves (a fresh workspace, a new package): a build calls it before parsing
    its pipeline, so the ~0.1 s probe runs on another core meanwhile and the first
    stage's profile() takes its answer. One never taken is killed at exit."""
    python, numeric, path, loader = inputs = _inputs(os.environ)
    kept = _kept_probe(state_dir, _key(python, numeric, loader), python)
    if inputs in _ahead or kept is not None:  # ({} is an answer: no numpy there)
        return
    try:
        proc = subprocess.Popen(
            [python, "-c", PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_probe_env(numeric, path, loader),
        )
    except OSError:
        return
    _ahead[inputs] = proc
    import atexit

    atexit.register(_stop, proc)


_ahead: dict = {}  # start_probe: _inputs -> the probe process started ahead


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def profile(environ: dict | None = None, state_dir: str | None = None) -> dict:
    """The profile of this machine, as the stage (run with `environ`) saw it; `state_dir`
    keeps the library probe's answer across builds (see above)."""
    environ = os.environ if environ is None else environ
    python, numeric, path, loader = _inputs(environ)
    model, simd = cpu()
    doc = {
        "cpu": model,
        "machine": platform.machine(),
        "cpus": os.cpu_count() or 1,
        "simd": list(simd),
        **_libraries(python, numeric, path, loader, state_dir),
        "vars": dict(numeric),
    }
    return doc


@cache
def _libraries(
    python: str, numeric: tuple, path: str, loader: tuple, state_dir: str | None
) -> dict:
    key = _key(python, numeric, loader)
    kept = _kept_probe(state_dir, key, python) if state_dir else None
    if kept is not None:
        return kept
    libraries = _probe(python, numeric, path, loader)
    if libraries is None:  # the probe failed: no facts, and nothing kept
        return {}
    paths = libraries.pop("_paths", [])
    if state_dir and os.path.isdir(state_dir):  # never made where a workspace is not
        _keep_probe(state_dir, key, python, paths, libraries)
    return libraries


def _key(python: str, numeric: tuple, loader: tuple) -> list:
    """What a kept probe answer is filed under (the module docstring's `key`)."""
    return [platform.node(), _boot_id(), python, list(map(list, numeric)), *loader]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _probe_file(state_dir: str, key: list) -> str:
    from .hashing import hash_bytes

    return os.path.join(state_dir, "machine", hash_bytes(json.dumps(key).encode()) + ".json")


def _identity(path: str) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _kept_probe(state_dir: str, key: list, python: str) -> dict | None:
    """The kept answer for `key`, when its interpreter and sys.path folders are unchanged."""
    try:
        with open(_probe_file(state_dir, key), encoding="utf-8") as f:
            doc = json.load(f)
        if (
            doc.get("schema") != PROBE_SCHEMA
            or doc.get("key") != key
            or doc.get("python") != _identity(python)
            or not isinstance(doc.get("libraries"), dict)
            or any(_mtime(p) != t for p, t in doc["paths"].items())
        ):
            return None
        return doc["libraries"]
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _keep_probe(state_dir: str, key: list, python: str, paths, libraries: dict) -> None:
    from pathlib import Path

    from .fsutil import atomic_write

    doc = {
        "schema": PROBE_SCHEMA,
        "key": key,
        "python": _identity(python),
        "paths": {p: _mtime(p) for p in paths if isinstance(p, str)},
        "libraries": libraries,
    }
    try:  # a cache: a rename keeps it whole; losing it to a crash costs one probe
        atomic_write(Path(_probe_file(state_dir, key)), json.dumps(doc).encode(), sync=False)
    except OSError:
        pass


def _probe_env(numeric: tuple, path: str, loader: tuple) -> dict:
    env = {**os.environ, **dict(numeric), "PATH": path}
    for name, value in zip(LOADER_VARS, loader, strict=True):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    for name in NUMERIC_VARS:
        if name not in dict(numeric):
            env.pop(name, None)
    return env


def _probe(python: str, numeric: tuple, path: str, loader: tuple) -> dict | None:
    """What the probe printed in the stage's interpreter (the one started ahead, if
    any); None when it failed."""
    ahead = _ahead.pop((python, numeric, path, loader), None)
    try:
        if ahead is not None:
            out, _ = ahead.communicate(timeout=30)
            code = ahead.returncode
        else:
            done = subprocess.run(
                [python, "-c", PROBE],
                capture_output=True,
                text=True,
                timeout=30,
                env=_probe_env(numeric, path, loader),
                stdin=subprocess.DEVNULL,
            )
            out, code = done.stdout, done.returncode
        doc = json.loads(out) if code == 0 else None
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        if ahead is not None:
            _stop(ahead)
        return None


def differences(old: dict | None, new: dict | None) -> list[str]:
    """What differs between two profiles, one line each (`OPENBLAS_CORETYPE (unset) -> Haswell`)."""
    if not old:
        return ["the earlier run's machine profile is unknown (no run record of it here)"]
    new = new or {}
    lines = []
    for field in ("cpu", "machine", "cpus", "numpy"):
        if old.get(field) != new.get(field):
            lines.append(f"{field}: {old.get(field)} -> {new.get(field)}")
    for field in ("simd", "numpy_simd"):
        a, b = set(old.get(field) or ()), set(new.get(field) or ())
        if a != b:
            change = [f"-{x}" for x in sorted(a - b)] + [f"+{x}" for x in sorted(b - a)]
            lines.append(f"{field}: {' '.join(change)}")
    libs_a = {lib.get("api"): lib for lib in old.get("libraries") or []}
    libs_b = {lib.get("api"): lib for lib in new.get("libraries") or []}
    for api in sorted(set(libs_a) | set(libs_b), key=str):
        a, b = libs_a.get(api), libs_b.get(api)
        if a is None or b is None:
            lines.append(
                f"{api}: {'(none)' if a is None else a.get('version')} -> "
                f"{'(none)' if b is None else b.get('version')}"
            )
            continue
        for key in ("version", "architecture", "threading", "threads"):
            if a.get(key) != b.get(key):
                lines.append(f"{api} {key}: {a.get(key)} -> {b.get(key)}")
    va, vb = old.get("vars") or {}, new.get("vars") or {}
    for name in sorted(set(va) | set(vb)):
        if va.get(name) != vb.get(name):
            lines.append(f"{name}: {va.get(name, '(unset)')} -> {vb.get(name, '(unset)')}")
    return lines or [
        "no difference in the machine profiles: same machine, so the stage itself is nondeterministic (time, randomness, threads)"
    ]
