"""Every bad input exits 2 with one line naming the file, line, stage or path; no traceback."""

from __future__ import annotations

import os

import pytest

CASES = {
    "unknown field": (
        "stages:\n  a:\n    cmd: 'true'\n    outz: [x]\n",
        "reprobuild.yaml:4: stage 'a': unknown field 'outz'",
    ),
    "unknown template name": (
        "stages:\n  a:\n    cmd: echo ${nope}\n",
        "reprobuild.yaml:3: stage 'a': unknown name '${nope}'",
    ),
    "missing source dep": (
        "stages:\n  a:\n    cmd: 'true'\n    deps: [data/missing.csv]\n",
        "reprobuild.yaml:4: stage 'a': dep 'data/missing.csv' does not exist and no stage makes it",
    ),
    "missing script": (
        "stages:\n  a:\n    cmd: python nothere.py\n",
        "stage 'a': code file 'nothere.py' does not exist",
    ),
    "overlapping outs": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [data]\n  b:\n    cmd: 'true'\n    outs: [data/x.csv]\n",
        "reprobuild.yaml:7: stage 'b': out 'data/x.csv' overlaps out 'data' of stage 'a'",
    ),
    "same out twice": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [x]\n  b:\n    cmd: 'true'\n    outs: [x]\n",
        "stage 'b': out 'x' is also an out of stage 'a'",
    ),
    "cycle": (
        "stages:\n  a:\n    cmd: 'true'\n    deps: [b.txt]\n    outs: [a.txt]\n"
        "  b:\n    cmd: 'true'\n    deps: [a.txt]\n    outs: [b.txt]\n",
        "cycle: a -> b -> a",
    ),
    "path leaves workspace": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [../evil.txt]\n",
        "reprobuild.yaml:4: stage 'a': path '../evil.txt' leaves the workspace",
    ),
    "absolute path": (
        "stages:\n  a:\n    cmd: 'true'\n    deps: [/etc/passwd]\n",
        "stage 'a': path '/etc/passwd' must be relative",
    ),
    "python tag": (
        "stages: !!python/object/apply:os.system ['touch pwned']\n",
        "reprobuild.yaml:1: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    "bad yaml": ("stages:\n  a: [\n", "reprobuild.yaml:3: invalid YAML"),
    "unknown param": (
        "stages:\n  a:\n    cmd: 'true'\n    params: [train.depth]\n",
        "reprobuild.yaml:4: stage 'a': unknown param 'train.depth'",
    ),
    "cmd missing": (
        "stages:\n  a:\n    outs: [x]\n",
        "reprobuild.yaml:2: stage 'a': `cmd` is required",
    ),
    "non-scalar in cmd": (
        "vars:\n  l: [1, 2]\nstages:\n  a:\n    cmd: echo ${l}\n",
        "stage 'a': '${l}' is a list, not a single value",
    ),
    "out is the project itself": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [.]\n",
        "reprobuild.yaml:4: stage 'a': out '.' would contain the pipeline's own folder",
    ),
    "out is the lockfile": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [reprobuild.lock]\n",
        "stage 'a': out 'reprobuild.lock' is one of reprobuild's or git's own files",
    ),
    "out inside .git": (
        "stages:\n  a:\n    cmd: 'true'\n    outs: [.git/hooks]\n",
        "stage 'a': out '.git/hooks' is one of reprobuild's or git's own files",
    ),
    "empty foreach": (
        "stages:\n  a:\n    foreach: []\n    do: {cmd: 'true'}\n",
        "reprobuild.yaml:3: stage 'a': `foreach` is empty",
    ),
    "missing params file": (
        "stages:\n  a:\n    cmd: 'true'\n    params: [{other.yaml: [k]}]\n",
        "reprobuild.yaml:4: stage 'a': params file 'other.yaml' does not exist",
    ),
    "missing wdir": (
        "stages:\n  a:\n    cmd: 'true'\n    wdir: nowhere\n",
        "reprobuild.yaml:4: stage 'a': wdir 'nowhere' is not a folder",
    ),
    "unknown top-level field": ("stagez: {}\n", "reprobuild.yaml:1: unknown field 'stagez'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_pipeline_exits_2_with_one_line(ws, name):
    text, expected = CASES[name]
    ws.write({"reprobuild.yaml": text, "params.yaml": "seed: 1\n"})
    r = ws.run("status")
    assert r.code == 2
    assert expected in r.err
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err
    assert not (ws.root / "pwned").exists()


def test_out_containing_the_pipeline_folder_refused(ws):
    ws.write(
        {
            "sub/reprobuild.yaml": "stages:\n  a:\n    cmd: 'true'\n    outs: [..]\n",
            "precious.txt": "x",
        }
    )
    r = ws.run("-f", "sub", "build")
    assert r.code == 2 and "would contain the pipeline's own folder" in r.err
    assert ws.read("precious.txt") == "x"


def test_symlink_escape_refused(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws.root / "link")
    ws.write({"reprobuild.yaml": "stages:\n  a:\n    cmd: 'true'\n    outs: [link/x.txt]\n"})
    r = ws.run("build")
    assert r.code == 2 and "leads out of the workspace through a symlink" in r.err


def test_alias_bomb_refused(ws):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 10) + "]")
    ws.write({"reprobuild.yaml": "\n".join(lines) + "\n"})
    r = ws.run("status")
    assert r.code == 2 and "alias bomb" in r.err


def test_no_pipeline_file(ws):
    r = ws.run("status")
    assert r.code == 2 and "no reprobuild.yaml" in r.err


def test_unknown_target(ws):
    ws.write({"reprobuild.yaml": "stages:\n  a:\n    cmd: echo > x\n    outs: [x]\n"})
    r = ws.run("build", "nope")
    assert r.code == 2 and "'nope' is neither a stage nor an out" in r.err


def test_verbose_shows_traceback(ws):
    ws.write({"reprobuild.yaml": "stages:\n  a:\n    cmd: echo ${nope}\n"})
    r = ws.run("-v", "status")
    assert r.code == 2 and "Traceback" in r.err


def test_corrupt_lockfile_means_rebuild(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  a:\n    cmd: echo hi > x\n    outs: [x]\n",
            "reprobuild.lock": "schema: 99\nstages: {}\n",
        }
    )
    r = ws.run("build")
    assert r.code == 0 and "unknown format or schema" in r.err
    assert "schema: 1" in ws.read("reprobuild.lock")
