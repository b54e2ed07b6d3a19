"""The defects a trial switch from DVC found: each is a behaviour a user would notice."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.conftest import stages_run

PIPE = {
    "reprobuild.yaml": """\
        stages:
          fetch:
            cmd: printf 'raw\\n' > data.xml
            outs: [data.xml]
          prepare:
            cmd: tr a-z A-Z < data.xml > prepared.txt
            deps: [data.xml]
            outs: [prepared.txt]
          report:
            cmd: wc -c < prepared.txt > report.json
            deps: [prepared.txt]
            metrics: [report.json]
        """
}


@pytest.fixture
def built(ws):
    ws.write(PIPE)
    assert ws.run("build").code == 0
    ws.commit_all("built")
    return ws


def lock(ws, name="reprobuild.lock") -> dict:
    return yaml.safe_load(ws.read(name))


def test_build_never_destroys_an_edited_out_it_cannot_restore(built):
    """Defect 1: the hand-made content is stored in the cache before it is replaced."""
    built.write({"data.xml": "my precious hand edit\n"})
    r = built.run("build")
    assert r.code == 0
    assert "out 'data.xml' differs from the lockfile and was in no cache" in r.err
    where = r.err.split("saved as ")[1].split(" before")[0]
    assert open(where).read() == "my precious hand edit\n"


def test_frozen_stage_with_a_replaced_out_is_reported_not_silently_used(built):
    """Defect 2: status and build -n say so; the build stops; one hash per path."""
    text = built.read("reprobuild.yaml").replace(
        "    outs: [data.xml]\n", "    outs: [data.xml]\n    frozen: true\n", 1
    )
    built.write({"reprobuild.yaml": text})
    built.write({"data.xml": "replaced\n"})
    st = built.run("status")
    assert "out modified: data.xml" in st.out
    dry = built.run("build", "-n")
    assert (
        "out modified: data.xml" in dry.out and "up to date" not in dry.out.split("fetch")[1][:40]
    )
    r = built.run("build")
    assert r.code == 1 and "frozen stage's out modified: data.xml" in r.out + r.err
    assert stages_run(r) == []
    hashes = {
        e[p]["hash"]
        for s in lock(built)["stages"].values()
        for e in (s.get("deps", {}), s.get("outs", {}))
        for p in e
        if p == "data.xml"
    }
    assert len(hashes) == 1
    # accepting it with commit makes the lineage consistent again
    assert built.run("commit", "fetch").code == 0
    assert stages_run(built.run("build")) == ["prepare", "report"]


def test_commit_never_rewrites_the_run_record_of_a_key(built):
    """Defect 3: a run record is what a run of that key produced."""
    key = lock(built)["stages"]["fetch"]["key"]
    record = built.root / "cache" / "runs" / key[:2] / key[2:]
    before = record.read_bytes()
    built.write({"data.xml": "cosmetic\n"})
    assert built.run("commit", "fetch").code == 0
    assert record.read_bytes() == before
    assert lock(built)["stages"]["fetch"]["key"] == key  # the lockfile records the workspace


def test_each_pipeline_file_has_its_own_lockfile(built):
    """Defect 4: `-f other.yaml` writes other.lock, never reprobuild.lock."""
    before = built.read("reprobuild.lock")
    built.write(
        {"other.yaml": "stages:\n  solo:\n    cmd: echo hi > solo.txt\n    outs: [solo.txt]\n"}
    )
    assert built.run("-f", "other.yaml", "build").code == 0
    assert built.read("reprobuild.lock") == before
    assert list(lock(built, "other.lock")["stages"]) == ["solo"]
    assert stages_run(built.run("build")) == []


def test_status_lists_out_problems_beside_input_changes(built):
    """Defect 5: every reason that holds, inputs and outputs alike."""
    os.remove(built.root / "prepared.txt")
    text = built.read("reprobuild.yaml").replace("tr a-z A-Z", "tr a-y A-Y")
    built.write({"reprobuild.yaml": text})
    out = built.run("status").out
    assert "cmd changed" in out and "out missing: prepared.txt" in out


def test_a_removed_dep_is_named_removed(built):
    """Defect 6."""
    text = built.read("reprobuild.yaml").replace(
        "    deps: [prepared.txt]\n", "    deps: [prepared.txt, data.xml]\n"
    )
    built.write({"reprobuild.yaml": text})
    assert "dep added: data.xml" in built.run("status").out
    built.run("build")
    built.write({"reprobuild.yaml": PIPE["reprobuild.yaml"].replace("        ", "")})
    out = built.run("status").out
    assert "dep removed: data.xml" in out and "dep changed" not in out


def test_metrics_diff_says_when_there_are_no_metrics(ws):
    """Defect 7."""
    ws.write({"reprobuild.yaml": "stages:\n  a:\n    cmd: echo > a.txt\n    outs: [a.txt]\n"})
    ws.run("build")
    ws.commit_all("one")
    ws.write({"x.txt": "x"})
    ws.commit_all("two")
    r = ws.run("metrics", "diff", "HEAD~1")
    assert r.code == 0 and "no metrics found" in r.out
