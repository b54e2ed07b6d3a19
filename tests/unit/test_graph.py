import pytest

from reprobuild import graph, pipeline
from reprobuild.errors import PipelineError
from reprobuild.workspace import Workspace


def load(tmp_path, text, files=()):
    (tmp_path / "reprobuild.yaml").write_text(text)
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    ws = Workspace(tmp_path / "reprobuild.yaml", tmp_path)
    p = pipeline.load(ws)
    return p, graph.build(p, str(tmp_path))


def test_edges_equal_inside_containing(tmp_path):
    p, g = load(
        tmp_path,
        """
stages:
  a: {cmd: x, outs: [data/prepared]}
  b: {cmd: x, deps: [data/prepared/train.csv], outs: [b.txt]}
  c: {cmd: x, deps: [data], outs: [c.txt]}
  d: {cmd: x, deps: [b.txt], outs: [d.txt]}
  e: {cmd: x, deps: [raw.csv], outs: [e.txt]}
""",
        files=["raw.csv"],
    )
    assert sorted(g.edges) == [("a", "b"), ("a", "c"), ("b", "d")]
    assert graph.select(g, p, ["d"], str(tmp_path)) == ["a", "b", "d"]
    assert graph.select(g, p, ["c.txt"], str(tmp_path)) == ["a", "c"]
    assert graph.order(g) == ["a", "b", "c", "d", "e"]


def test_cycle_named(tmp_path):
    with pytest.raises(PipelineError, match=r"cycle: (x -> y -> x|y -> x -> y)"):
        load(
            tmp_path,
            "stages:\n  x: {cmd: c, deps: [y.txt], outs: [x.txt]}\n  y: {cmd: c, deps: [x.txt], outs: [y.txt]}\n",
        )


def test_code_from_other_stage_makes_edge(tmp_path):
    _, g = load(
        tmp_path,
        "stages:\n  gen: {cmd: c, outs: [gen.py]}\n  use: {cmd: python gen.py, outs: [o]}\n",
    )
    assert list(g.edges) == [("gen", "use")]


def test_long_chain_of_2000_stages(tmp_path):
    stages = "\n".join(
        f"  s{i}: {{cmd: c, deps: ['{'in.txt' if i == 0 else f'o{i - 1}'}'], outs: [o{i}]}}"
        for i in range(2000)
    )
    _, g = load(tmp_path, "stages:\n" + stages + "\n", files=["in.txt"])
    assert g.number_of_edges() == 1999
