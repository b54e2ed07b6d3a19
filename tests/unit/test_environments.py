"""Package closures, lock-file pins and machine-profile differences, without I/O beyond tmp."""

from __future__ import annotations

import json

from reprobuild import machine
from reprobuild.envs import lock_files, pinned
from reprobuild.packages import ALL, Installed

DISTS = {
    "app": ["1.0", ["lib>=1", 'extra-lib; extra == "fancy"', 'winonly; sys_platform == "win32"']],
    "lib": ["2.0", ["base"]],
    "base": ["3.0", []],
    "extra-lib": ["0.1", []],
    "other": ["9.0", ["base"]],
}


def closure(*names):
    return Installed(None)._closure(DISTS, names)


def test_closure_follows_requirements_with_markers_and_extras():
    versions, via = closure("app")
    assert versions == {"app": "1.0", "base": "3.0", "lib": "2.0"}  # sorted; no extra, no win32
    assert via == {"base": ["app"], "lib": ["app"]}
    versions, via = closure("app[fancy]")
    assert versions["extra-lib"] == "0.1" and via["extra-lib"] == ["app"]


def test_closure_names_every_listed_package_it_comes_via_and_missing_ones():
    versions, via = closure("app", "other", "Not_There")
    assert versions["not-there"] == "not installed"
    assert via["base"] == ["app", "other"]
    assert "other" not in via  # listed packages come via nobody


def test_all_takes_every_distribution():
    versions, via = closure(ALL)
    assert list(versions) == sorted(DISTS) and via == {}


def test_the_closure_cache_is_reused_until_sys_path_changes(tmp_path, monkeypatch):
    cache = tmp_path / "packages.json"
    (tmp_path / "tmp").mkdir()
    calls = []
    monkeypatch.setattr("reprobuild.packages._read_dists", lambda: calls.append(1) or DISTS)
    one = Installed(cache)
    assert one.versions(("app",))[0]["lib"] == "2.0"
    one.save()
    two = Installed(cache)
    assert two.versions(("app",))[0]["lib"] == "2.0" and calls == [1]  # from the file
    doc = json.loads(cache.read_text())
    (mine,) = doc["interpreters"].values()
    mine["stamp"][0][1] += 1  # a sys.path folder changed (a package was installed)
    cache.write_text(json.dumps(doc))
    Installed(cache).versions(("app",))
    assert calls == [1, 1]


def test_pins_from_a_requirements_file_and_a_uv_lock(tmp_path):
    (tmp_path / "requirements.lock").write_text(
        "# via uv pip compile\n--no-index\nNumPy==2.4.6 \\\n    --hash=sha256:abc\n"
        "scikit_learn[extra]==1.9.1 ; python_version >= '3.10'\nloose>=1\n"
    )
    assert pinned(str(tmp_path), "requirements.lock") == {"numpy": "2.4.6", "scikit-learn": "1.9.1"}
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "uv.lock").write_text(
        'version = 1\n[[package]]\nname = "me"\nversion = "0.1"\nsource = { virtual = "." }\n'
        '[[package]]\nname = "Polars"\nversion = "2.1.0"\n'
    )
    assert pinned(str(tmp_path), "proj/pyproject.toml") == {"polars": "2.1.0"}
    assert lock_files("proj/uv.lock") == ["proj/pyproject.toml", "proj/uv.lock"]


def test_profile_differences_say_what_changed():
    old = {
        "cpu": "A",
        "cpus": 2,
        "simd": ["avx2", "avx512f"],
        "libraries": [{"api": "openblas", "version": "0.3", "architecture": "SkylakeX"}],
        "vars": {"OMP_NUM_THREADS": "1"},
    }
    new = {
        "cpu": "A",
        "cpus": 2,
        "simd": ["avx2"],
        "libraries": [{"api": "openblas", "version": "0.3", "architecture": "Haswell"}],
        "vars": {"OPENBLAS_CORETYPE": "Haswell"},
    }
    assert machine.differences(old, new) == [
        "simd: -avx512f",
        "openblas architecture: SkylakeX -> Haswell",
        "OMP_NUM_THREADS: 1 -> (unset)",
        "OPENBLAS_CORETYPE: (unset) -> Haswell",
    ]
    assert "unknown" in machine.differences(None, new)[0]
    assert "same machine" in machine.differences(new, new)[0]


def test_profile_of_this_machine():
    p = machine.profile({"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "3"})
    assert p["vars"] == {"OMP_NUM_THREADS": "3"} and p["cpus"] >= 1 and p["cpu"]


def test_the_library_probe_is_kept_until_the_interpreter_or_its_packages_change(
    tmp_path, monkeypatch
):
    """The probe (a Python subprocess, ~0.2 s) runs once; its answer is reused from the
    state folder by later builds, and asked again when a folder on sys.path changes."""
    import os
    import subprocess
    import sys

    state = tmp_path / "state"
    state.mkdir()
    extra = tmp_path / "site"  # on the probe's sys.path through PYTHONPATH
    extra.mkdir()
    environ = {"PATH": os.path.dirname(sys.executable), "PYTHONPATH": str(extra)}
    probes = []
    real_run = subprocess.run
    monkeypatch.setattr(
        machine.subprocess, "run", lambda *a, **k: probes.append(a) or real_run(*a, **k)
    )

    def profile():
        machine._libraries.cache_clear()  # as a new build (a new process) would
        return machine.profile(environ, str(state))

    first = profile()
    assert len(probes) == 1 and list((state / "machine").iterdir())
    assert profile() == first and len(probes) == 1  # kept
    os.utime(extra, ns=(1, 1))  # as a package installed there would
    assert profile() == first and len(probes) == 2  # asked again
    assert profile() == first and len(probes) == 2
    environ["OMP_NUM_THREADS"] = "1"  # another key
    profile()
    assert len(probes) == 3
    for f in (state / "machine").iterdir():
        f.write_text("{broken")
    profile()
    assert len(probes) == 4  # a damaged file is a new probe, not an error


def test_the_probe_started_ahead_is_the_one_the_first_stage_takes(tmp_path, monkeypatch):
    """A fresh workspace's build starts the probe before parsing its pipeline; the first
    profile() takes that answer instead of probing again; a kept answer starts none."""
    import os
    import subprocess
    import sys

    state = tmp_path / "state"
    monkeypatch.setattr(machine.os, "environ", {"PATH": os.path.dirname(sys.executable)})
    machine._libraries.cache_clear()
    monkeypatch.setattr(machine, "_ahead", {})
    runs, started = [], []
    real_run, real_popen = subprocess.run, subprocess.Popen
    monkeypatch.setattr(
        machine.subprocess, "run", lambda *a, **k: runs.append(a) or real_run(*a, **k)
    )
    monkeypatch.setattr(
        machine.subprocess, "Popen", lambda *a, **k: started.append(a) or real_popen(*a, **k)
    )
    machine.start_probe(str(state))
    assert len(started) == 1 and len(machine._ahead) == 1
    machine.start_probe(str(state))  # already under way
    assert len(started) == 1
    state.mkdir()
    first = machine.profile(None, str(state))
    assert runs == [] and machine._ahead == {}  # the answer came from the probe started ahead
    assert list((state / "machine").iterdir())  # an answer (none when a probe fails), kept
    machine._libraries.cache_clear()  # as the next build (a new process) would
    machine.start_probe(str(state))
    assert len(started) == 1  # kept: nothing to start
    assert machine.profile(None, str(state)) == first and runs == []


def test_a_probe_started_ahead_and_never_taken_is_stopped(tmp_path, monkeypatch):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    machine._stop(proc)
    assert proc.returncode is not None
