"""`dag`, `lineage`, `diff`, `metrics` and `params` through the CLI, on git repositories
holding two or three commits of a small pipeline."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import Workspace, git

PIPELINE = {
    "reprobuild.yaml": """\
        env:
          python: false
          platform: false
          vars: [MODE]
        stages:
          prepare:
            cmd: sort data/raw.txt > data/clean.txt
            deps: [data/raw.txt]
            outs: [data/clean.txt]
          train:
            cmd: sh train.sh ${train.depth} > models/model.txt
            code: [train.sh]
            deps: [data/clean.txt]
            params: [train]
            outs: [models/model.txt]
          evaluate:
            cmd: sh evaluate.sh
            code: [evaluate.sh]
            deps: [models/model.txt, data/clean.txt]
            metrics: [reports/scores.json, reports/summary.yaml]
          other:
            cmd: echo ${other.word} > other.txt
            outs: [other.txt]
        """,
    "params.yaml": "train: {depth: 3, lr: 0.1}\nother: {word: hi}\n",
    "train.sh": 'echo "depth $1"\nwc -l < data/clean.txt\n',
    "evaluate.sh": """\
        depth=$(sed -n 's/depth //p' models/model.txt)
        mkdir -p reports
        echo "{\\"score\\": 0.$depth, \\"detail\\": {\\"depth\\": $depth, \\"name\\": \\"m\\"}}" > reports/scores.json
        printf 'loss: 1.%s\\nconfusion:\\n  - [1, 2]\\n  - [3, %s]\\n' "$depth" "$depth" > reports/summary.yaml
        """,
    "data/raw.txt": "b\na\nc\n",
    ".gitignore": "data/clean.txt\nmodels/\nreports/\nother.txt\n",
}
PARAMS_DEPTH_4 = "train: {depth: 4, lr: 0.1}\nother: {word: hi}\n"


@pytest.fixture
def pipe(ws):
    """Commit 1: the pipeline, built, its lockfile committed (outputs are not in git)."""
    ws.write(PIPELINE)
    assert ws.run("build").code == 0
    ws.commit_all("v1")
    return ws


def run_json(ws, *args):
    r = ws.run(*args, "--json") if "--json" not in args else ws.run(*args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def fates(doc) -> dict:
    return {n["id"]: n["fate"] for n in doc["nodes"] if n["kind"] == "stage"}


# -- dag ---------------------------------------------------------------------------------


def test_dag_json_has_every_stage_edge_and_fate_and_marks_stale_after_a_change(pipe):
    doc = run_json(pipe, "dag", "--format", "json")
    assert doc["schema"] == 1 and set(fates(doc).values()) == {"skip"}
    assert {(e["from"], e["to"]) for e in doc["edges"]} == {
        ("prepare", "train"),
        ("prepare", "evaluate"),
        ("train", "evaluate"),
    }
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    doc = run_json(pipe, "dag", "--json")
    assert fates(doc) == {"prepare": "skip", "train": "run", "evaluate": "run", "other": "skip"}
    stages = {n["id"]: n for n in doc["nodes"]}
    assert stages["train"]["reasons"] == ["cmd changed", "param changed: train.depth 3 -> 4"]
    assert stages["train"]["stale"] and not stages["other"]["stale"]
    assert stages["evaluate"]["reasons"] == ["upstream: train"]
    assert stages["evaluate"]["outs"] == ["reports/scores.json", "reports/summary.yaml"]


def test_dag_json_shows_restore_when_the_cache_has_the_run(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    pipe.run("build")
    pipe.write({"params.yaml": PIPELINE["params.yaml"]})
    assert fates(run_json(pipe, "dag"))["train"] == "restore"


def test_dag_text_draws_boxes_with_fates_legend_and_reasons(pipe):
    plain = pipe.run("dag")
    assert plain.code == 0
    assert (
        "│ ✓ prepare │" in plain.out and "▼" in plain.out and "●" not in plain.out.split("\n\n")[0]
    )
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    r = pipe.run("dag", "--direction", "right")
    drawing, legend = r.out.split("\n\n", 1)
    assert "│ ● train ├" in drawing and "│ ✓ prepare ├" in drawing and "▶│ ● evaluate" in drawing
    assert "▼" not in drawing
    assert "✓ up to date   ↻ would restore   ● would run" in legend
    assert "train: cmd changed, param changed: train.depth 3 -> 4" in legend
    assert "evaluate: upstream: train" in legend and "other:" not in legend


def test_dag_dot_parses_with_its_edges_and_fates(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    r = pipe.run("dag", "--format", "dot")
    assert r.code == 0 and r.out.startswith("digraph reprobuild {")
    edges = set(re.findall(r'^\s+"([^"]+)" -> "([^"]+)";$', r.out, re.M))
    assert edges == {("prepare", "train"), ("prepare", "evaluate"), ("train", "evaluate")}
    pydot = pytest.importorskip("pydot")
    import networkx as nx

    g = nx.nx_pydot.from_pydot(pydot.graph_from_dot_data(r.out)[0])
    assert {(a.strip('"'), b.strip('"')) for a, b in g.edges()} == edges
    fate = {n.strip('"'): data.get("fate", "").strip('"') for n, data in g.nodes(data=True)}
    assert fate == {"prepare": "skip", "train": "run", "evaluate": "run", "other": "skip"}


def test_dag_mermaid_edges_and_classes(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    text = pipe.run("dag", "--format", "mermaid").out
    assert text.startswith("flowchart TD\n")
    names = dict(re.findall(r'^\s+(n\d+)\["([^"<]+)<br/>', text, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.M)}
    assert edges == {("prepare", "train"), ("prepare", "evaluate"), ("train", "evaluate")}
    classes = {names[n]: c for n, c in re.findall(r"^\s+class (n\d+) (\w+)$", text, re.M)}
    assert classes == {"prepare": "skip", "train": "run", "evaluate": "run", "other": "skip"}


def test_dag_target_keeps_only_its_upstream(pipe):
    doc = run_json(pipe, "dag", "train")
    assert list(fates(doc)) == ["prepare", "train"]
    assert [(e["from"], e["to"]) for e in doc["edges"]] == [("prepare", "train")]


def test_dag_outs_draws_artifacts_between_stages(pipe):
    doc = run_json(pipe, "dag", "--outs", "evaluate")
    outs = {n["id"]: n for n in doc["nodes"] if n["kind"] == "out"}
    assert outs["out:reports/scores.json"]["metric"] and not outs["out:models/model.txt"]["metric"]
    edges = {(e["from"], e["to"]) for e in doc["edges"]}
    assert ("prepare", "out:data/clean.txt") in edges and ("out:data/clean.txt", "train") in edges
    assert ("out:data/clean.txt", "evaluate") in edges and ("prepare", "train") not in edges
    assert "╭" in pipe.run("dag", "--outs").out


def test_dag_output_files(pipe, tmp_path, monkeypatch):
    r = pipe.run("dag", "-o", "graph/dag.dot")
    assert r.code == 0 and (pipe.root / "graph/dag.dot").read_text().startswith("digraph")
    assert (
        json.loads(
            (pipe.root / "graph/dag.json").read_text()
            if pipe.run("dag", "-o", "graph/dag.json").code == 0
            else "{}"
        )["schema"]
        == 1
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz here
    r = pipe.run("dag", "-o", "dag.svg")
    assert r.code == 2 and r.err.count("\n") == 1
    assert (
        r.err.startswith("error: Graphviz's `dot` is not installed")
        and "apt install graphviz" in r.err
    )
    assert not (pipe.root / "dag.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dag_renders_svg_through_graphviz(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    r = pipe.run("dag", "-o", "dag.svg")
    assert r.code == 0, r.err
    svg = (pipe.root / "dag.svg").read_text()
    assert "<svg" in svg and "would run" in svg
    assert (
        'xlink:title="cmd changed&#10;param changed: train.depth 3 &#45;&gt; 4"' in svg
    )  # reasons as tooltips


# -- lineage -------------------------------------------------------------------------------


def test_lineage_reaches_the_sources_and_nothing_unrelated(pipe):
    doc = run_json(pipe, "lineage", "reports/scores.json")
    assert doc["stage"] == "evaluate" and doc["rev"] == "workspace" and not doc["out_of_date"]
    assert list(doc["stages"])[0] == "evaluate" and set(doc["stages"]) == {
        "evaluate",
        "train",
        "prepare",
    }
    assert doc["stages"]["evaluate"]["upstream"] == {
        "models/model.txt": ["train"],
        "data/clean.txt": ["prepare"],
    }
    assert doc["stages"]["train"]["params"] == {"train.depth": 3, "train.lr": 0.1}
    assert doc["stages"]["train"]["cmd"] == "sh train.sh 3 > models/model.txt"
    assert doc["stages"]["train"]["env"] == {"vars": {"MODE": None}}
    assert set(doc["sources"]) == {"data/raw.txt", "train.sh", "evaluate.sh"}
    tree = pipe.run("lineage", "reports/scores.json").out
    assert "prepare" in tree and "data/raw.txt" in tree and "source" in tree and "other" not in tree
    assert "train.depth=3" in tree and "up to date" in tree


def test_lineage_flags_what_no_longer_matches_the_workspace(pipe):
    pipe.write({"data/raw.txt": "z\na\n"})
    doc = run_json(pipe, "lineage", "models/model.txt")
    assert doc["out_of_date"]
    assert doc["stages"]["prepare"]["reasons"] == ["dep changed: data/raw.txt"]
    assert doc["stages"]["train"]["reasons"] == ["upstream: prepare"]
    assert "out of date" in pipe.run("lineage", "models/model.txt").out
    assert not run_json(pipe, "lineage", "other.txt")["out_of_date"]


def test_lineage_of_a_revision(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    pipe.run("build")
    pipe.commit_all("v2")
    old = run_json(pipe, "lineage", "models/model.txt", "--rev", "HEAD~1")
    assert old["rev"] == "HEAD~1" and old["stages"]["train"]["params"]["train.depth"] == 3
    assert (
        old["out_of_date"]
        and "param changed: train.depth 3 -> 4" in old["stages"]["train"]["reasons"]
    )
    assert not old["stages"]["prepare"]["out_of_date"]
    now = run_json(pipe, "lineage", "models/model.txt")
    assert now["stages"]["train"]["params"]["train.depth"] == 4 and not now["out_of_date"]


def test_lineage_of_a_source_or_unknown_path_is_an_error(pipe):
    r = pipe.run("lineage", "data/raw.txt")
    assert (
        r.code == 2
        and r.err
        == "error: no stage in the lockfile made 'data/raw.txt' (a source file, or not built yet)\n"
    )


# -- diff ------------------------------------------------------------------------------------


def test_diff_between_two_commits(pipe):
    pipe.write(
        {
            "params.yaml": PARAMS_DEPTH_4,
            "reprobuild.yaml": PIPELINE["reprobuild.yaml"].replace("other", "extra"),
        }
    )
    pipe.write({"params.yaml": "train: {depth: 4, lr: 0.1}\nextra: {word: hi}\n"})
    assert pipe.run("build").code == 0
    pipe.commit_all("v2")
    doc = run_json(pipe, "diff", "HEAD~1", "HEAD")
    assert (doc["a"], doc["b"]) == ("HEAD~1", "HEAD")
    assert doc["added"] == ["extra"] and doc["removed"] == ["other"]
    assert sorted(doc["changed"]) == ["evaluate", "train"]
    train = doc["changed"]["train"]
    assert train["params"] == {"train.depth": {"old": 3, "new": 4}}
    assert train["cmd"] == {
        "old": "sh train.sh 3 > models/model.txt",
        "new": "sh train.sh 4 > models/model.txt",
    }
    assert (
        set(train["outs"]) == {"models/model.txt"}
        and train["outs"]["models/model.txt"]["old"] != train["outs"]["models/model.txt"]["new"]
    )
    assert set(doc["changed"]["evaluate"]) == {"key", "deps", "outs"}
    text = pipe.run("diff", "HEAD~1", "HEAD").out
    assert "added extra" in text and "removed other" in text and "changed train" in text
    assert "    params: train.depth 3 -> 4" in text
    assert "1 added, 1 removed, 2 changed (HEAD~1 -> HEAD)" in text


def test_diff_defaults_to_head_against_the_working_tree_and_shows_env(pipe, monkeypatch):
    assert "no stage changed (HEAD -> workspace)" in pipe.run("diff").out
    monkeypatch.setenv("MODE", "fast")
    pipe.run("build")
    doc = run_json(pipe, "diff")
    assert (doc["a"], doc["b"]) == ("HEAD", "workspace")
    assert doc["changed"]["prepare"]["env"] == {"MODE": {"old": None, "new": "fast"}}
    assert "    env: MODE null -> fast" in pipe.run("diff").out


def test_a_revision_without_a_lockfile_has_no_stages(ws):
    ws.write(PIPELINE)
    ws.commit_all("pipeline, never built")
    assert ws.run("build").code == 0
    r = ws.run("diff")
    assert r.err == "warning: HEAD has no reprobuild.lock\n"
    assert (
        "added evaluate" in r.out and "4 added, 0 removed, 0 changed (HEAD -> workspace)" in r.out
    )
    assert run_json(ws, "diff")["warnings"] == ["HEAD has no reprobuild.lock"]
    assert (
        ws.run("lineage", "other.txt", "--rev", "HEAD").err
        == "error: HEAD has no reprobuild.lock\n"
    )


# -- metrics and params ------------------------------------------------------------------------


def test_metrics_show_flattens_json_and_yaml(pipe):
    doc = run_json(pipe, "metrics", "show")
    assert doc["rev"] == "workspace" and doc["errors"] == []
    assert doc["metrics"] == {
        "reports/scores.json": {"score": 0.3, "detail.depth": 3, "detail.name": "m"},
        "reports/summary.yaml": {
            "loss": 1.3,
            "confusion.0.0": 1,
            "confusion.0.1": 2,
            "confusion.1.0": 3,
            "confusion.1.1": 3,
        },
    }
    table = pipe.run("metrics", "show").out.splitlines()
    assert table[0].split() == ["path", "metric", "value"]
    assert ["reports/scores.json", "detail.depth", "3"] in [line.split() for line in table]


def test_metrics_diff_between_revisions_reads_the_cache(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})
    pipe.run("build")
    pipe.commit_all("v2")
    doc = run_json(pipe, "metrics", "diff", "HEAD~1", "HEAD")
    assert doc["errors"] == []
    assert doc["metrics"] == {
        "reports/scores.json": {
            "score": {"old": 0.3, "new": 0.4, "change": 0.1},
            "detail.depth": {"old": 3, "new": 4, "change": 1},
        },
        "reports/summary.yaml": {
            "loss": {"old": 1.3, "new": 1.4, "change": 0.1},
            "confusion.1.1": {"old": 3, "new": 4, "change": 1},
        },
    }
    text = pipe.run("metrics", "diff", "HEAD~1").out.splitlines()
    assert text[0].split() == ["path", "metric", "HEAD~1", "workspace", "change"]
    assert text[1].split() == ["reports/scores.json", "detail.depth", "3", "4", "+1"]
    assert "+0.1" in text[2]
    assert "detail.name" in pipe.run("metrics", "diff", "HEAD~1", "--all").out
    assert "no metrics changed (HEAD -> workspace)" in pipe.run("metrics", "diff").out
    old = run_json(pipe, "metrics", "show", "--rev", "HEAD~1")
    assert old["metrics"]["reports/scores.json"]["score"] == 0.3


def test_metrics_of_a_revision_come_from_git_when_the_cache_lacks_them(pipe):
    shutil.rmtree(pipe.root / "cache")
    r = pipe.run("metrics", "show", "--rev", "HEAD")
    assert r.code == 0
    assert "warning: reports/scores.json (HEAD): not in git at HEAD, nor in the cache" in r.err
    git(pipe.root, "add", "-f", "reports/scores.json")
    pipe.commit_all("metrics in git")
    doc = run_json(pipe, "metrics", "show", "--rev", "HEAD")
    assert doc["metrics"]["reports/scores.json"]["score"] == 0.3
    assert [e["path"] for e in doc["errors"]] == ["reports/summary.yaml"]


def test_params_diff_against_the_params_files_now_and_between_commits(pipe):
    pipe.write({"params.yaml": PARAMS_DEPTH_4})  # not built: the params files hold the change
    doc = run_json(pipe, "params", "diff")
    assert doc["params"] == {"train.depth": {"old": 3, "new": 4, "change": 1}}
    text = pipe.run("params", "diff").out.splitlines()
    assert text == ["param        HEAD  workspace  change", "train.depth  3     4          +1"]
    assert "other.word" in pipe.run("params", "diff", "--all").out
    pipe.run("build")
    pipe.commit_all("v2")
    assert run_json(pipe, "params", "diff", "HEAD~1", "HEAD")["params"] == doc["params"]
    assert "no params changed (HEAD -> workspace)" in pipe.run("params", "diff").out


# -- errors -------------------------------------------------------------------------------


def test_revisions_need_git(tmp_path, capsys):
    plain = Workspace(tmp_path / "plain", capsys)
    (tmp_path / "plain").mkdir()
    plain.write(PIPELINE)
    assert plain.run("build").code == 0
    for args in (
        ["diff"],
        ["metrics", "diff"],
        ["params", "diff"],
        ["lineage", "other.txt", "--rev", "HEAD"],
        ["metrics", "show", "--rev", "HEAD"],
    ):
        r = plain.run(*args)
        assert r.code == 2, args
        assert (
            r.err.startswith("error: ")
            and r.err.count("\n") == 1
            and "not in a git repository" in r.err
        )
    assert plain.run("metrics", "show").code == 0 and plain.run("lineage", "other.txt").code == 0


def test_unknown_revision_is_one_line(pipe):
    r = pipe.run("diff", "no-such-rev")
    assert (r.code, r.err) == (2, "error: unknown git revision 'no-such-rev'\n")
    assert (
        pipe.run("metrics").code == 2
        and "usage: reprobuild metrics show" in pipe.run("metrics").err
    )
