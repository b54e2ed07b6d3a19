"""The plan cache: used when nothing it depends on changed, a miss otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from reprobuild import pipeline as pipeline_mod
from reprobuild import plancache
from reprobuild.errors import PipelineError
from reprobuild.project import Project


def write(root, files: dict[str, str]) -> None:
    """Write files with an mtime in the past: a plan is never kept for a file just written."""
    old = time.time() - 30
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.utime(p, (old, old))


PIPE = (
    "stages:\n"
    "  prep:\n    cmd: python prep.py ${n}\n    deps: [raw.txt]\n    outs: [mid.txt]\n"
    "  train:\n    cmd: cat mid.txt > model.txt\n    deps: [mid.txt]\n    outs: [model.txt]\n"
)


@pytest.fixture
def root(tmp_path):
    write(
        tmp_path,
        {
            "reprobuild.yaml": PIPE,
            "params.yaml": "n: 1\n",
            "raw.txt": "raw\n",
            "prep.py": "import helper\n",
            "helper.py": "X = 1\n",
        },
    )
    (tmp_path / ".reprobuild").mkdir()  # as the first build leaves it
    return tmp_path


def opened(root) -> Project:
    return Project.open(str(root / "reprobuild.yaml"), cwd=root)


def test_second_open_uses_the_plan_and_gives_the_same_project(root, monkeypatch):
    first = opened(root)
    assert not first.plan_used
    assert plancache.path_of(first.ws).is_file()

    def no_parsing(*a, **k):
        raise AssertionError("the pipeline file was parsed again")

    with monkeypatch.context() as m:
        m.setattr(pipeline_mod, "load", no_parsing)
        second = opened(root)
    assert second.plan_used
    assert second.pipeline == first.pipeline
    assert second.select([]) == first.select([]) == ["prep", "train"]
    assert second.predecessors("train") == ["prep"] and second.successors("prep") == ["train"]
    assert list(second.graph.edges) == list(first.graph.edges)
    assert [d.path for d in second.pipeline.stages["prep"].code] == ["helper.py", "prep.py"]


@pytest.mark.parametrize(
    "files",
    [
        {"reprobuild.yaml": PIPE.replace("cat mid.txt", "cat  mid.txt")},
        {"params.yaml": "n: 2\n"},
        {"helper.py": "import extra\n", "extra.py": "Y = 2\n"},  # an imported module's imports
        {"helper/__init__.py": ""},  # a package now shadows helper.py
    ],
    ids=["pipeline", "params", "imported-code", "new-module"],
)
def test_a_change_the_load_depends_on_is_a_miss(root, files):
    opened(root)
    assert opened(root).plan_used
    write(root, files)
    fresh = opened(root)
    assert not fresh.plan_used
    reference = pipeline_mod.load(fresh.ws)
    assert fresh.pipeline == reference
    assert opened(root).plan_used  # and the new plan is kept


def test_a_bad_plan_file_is_a_miss(root):
    first = opened(root)
    path = plancache.path_of(first.ws)
    for junk in (b"{not json", b"[]", b'{"format": 1}', b""):
        path.write_bytes(junk)
        again = opened(root)
        assert not again.plan_used and again.pipeline == first.pipeline
    text = path.read_text().replace('"train"', '"tra\\u0000in"', 1)
    path.write_text(text.replace('"stages":[[', '"stages":[[1,', 1))  # a wrong shape
    assert opened(root).pipeline == first.pipeline


def test_a_missing_dep_fails_as_without_the_plan(root):
    opened(root)
    (root / "raw.txt").unlink()
    with pytest.raises(PipelineError, match="dep 'raw.txt' does not exist"):
        opened(root)


def test_no_plan_for_a_file_written_during_the_load(tmp_path):
    (tmp_path / "reprobuild.yaml").write_text(
        PIPE.replace("python prep.py ${n}", "cat raw.txt > mid.txt")
    )
    (tmp_path / "raw.txt").write_text("raw\n")
    (tmp_path / ".reprobuild").mkdir()
    project = opened(tmp_path)
    assert not plancache.path_of(project.ws).exists()


def test_noop_with_a_plan_imports_no_networkx_yaml_or_rich(root):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    write(root, {"prep.py": "open('mid.txt', 'w').write('m')\n"})

    def run(*args):
        return subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "reprobuild", *args],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
        )

    assert run("build", "-q").returncode == 0
    for args in (["build", "-q"], ["status"]):
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert not imported & {"networkx", "yaml", "rich"}, args


def test_a_cache_moved_onto_an_out_fails_as_without_the_plan(root, monkeypatch):
    opened(root)
    assert opened(root).plan_used
    with pytest.raises(PipelineError, match="would delete or overwrite the cache"):
        Project.open(str(root / "reprobuild.yaml"), str(root / "mid.txt"), cwd=root)
    monkeypatch.setenv("REPROBUILD_CACHE_DIR", str(root / "model.txt"))
    with pytest.raises(PipelineError, match="would delete or overwrite the cache"):
        opened(root)


def test_a_plan_for_other_files_with_the_same_content_is_a_miss(root):
    """A plan shipped with a workspace names the right hashes but not these files' inodes
    and ctimes: it must not stand in for the pipeline file (its commands would run)."""
    project = opened(root)
    path = plancache.path_of(project.ws)
    shipped = path.read_text().replace("cat mid.txt > model.txt", "echo pwned > model.txt")
    text = (root / "reprobuild.yaml").read_text()
    (root / "reprobuild.yaml").unlink()
    write(root, {"reprobuild.yaml": text})  # same bytes and mtime, a new file
    path.write_text(shipped)
    again = opened(root)
    assert not again.plan_used
    assert again.pipeline.stages["train"].cmd == ("cat mid.txt > model.txt",)


def test_no_state_folder_is_made_and_a_symlinked_one_is_not_used(root, tmp_path_factory):
    (root / ".reprobuild").rmdir()
    project = opened(root)
    assert not (root / ".reprobuild").exists() and not project.plan_used
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (root / ".reprobuild").symlink_to(elsewhere)
    opened(root)
    assert list(elsewhere.iterdir()) == [] and not opened(root).plan_used


@pytest.mark.parametrize("many", [2, plancache.LIST_AT + 8])  # lstat-ed, then listed
def test_a_dep_or_out_turned_into_a_symlink_out_of_the_workspace_is_a_miss(tmp_path, many):
    stages = "".join(
        f"  s{i}:\n    cmd: cat in/{i}.txt > out/{i}.txt\n    deps: [in/{i}.txt]\n"
        f"    outs: [out/{i}.txt]\n"
        for i in range(many)
    )
    root = tmp_path / "ws"
    write(root, {"reprobuild.yaml": "stages:\n" + stages})
    write(root, {f"in/{i}.txt": f"{i}\n" for i in range(many)})
    (root / "out").mkdir()
    (root / ".reprobuild").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    opened(root)
    assert opened(root).plan_used
    last = many - 1
    (root / "in" / f"{last}.txt").unlink()
    (root / "in" / f"{last}.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PipelineError, match="leads out of the workspace through a symlink"):
        opened(root)
    (root / "in" / f"{last}.txt").unlink()
    (root / "in" / f"{last}.txt").write_text("back\n")
    assert opened(root).plan_used  # the plan holds again
    (root / "out" / "0.txt").symlink_to(outside / "secret.txt")  # an out leading out
    with pytest.raises(PipelineError, match="'out/0.txt' leads out of the workspace"):
        opened(root)
