"""The layered text drawing (dagtext) and the DOT/Mermaid/JSON formats (dag), without a project."""

from __future__ import annotations

import random
import re

import networkx as nx
import pytest

from reprobuild import dag
from reprobuild.dagtext import GLYPH, Node, crossings, draw, layers_of, place

FLOW = {"down": ("S", "▼"), "right": ("E", "▶")}
BITS = {ch: bits for bits, ch in GLYPH.items() if bits}
DIRS = {"N": (1, -1, 0), "E": (2, 0, 1), "S": (4, 1, 0), "W": (8, 0, -1)}  # name: (bit, drow, dcol)


def boxes(lines: list[str], labels: list[str]) -> dict[str, tuple[int, int, int]]:
    """label -> (label row, left column, width) of its box."""
    found = {}
    for label in labels:
        pattern = re.compile(rf"│ +{re.escape(label)} +[│├]")
        hits = [(r, m) for r, line in enumerate(lines) for m in pattern.finditer(line)]
        assert len(hits) == 1, f"box {label!r} drawn {len(hits)} times"
        r, m = hits[0]
        found[label] = (r, m.start(), m.end() - m.start())
    return found


def traced_edges(text: str, labels: list[str], direction: str) -> set[tuple[str, str]]:
    """Follow the lines out of every box, along the flow and sideways but never back, to the
    boxes their arrows point at: the edges a reader sees (a crossing drawn as a straight line
    cannot be turned at)."""
    lines = text.splitlines()
    width = max(map(len, lines))
    grid = [line.ljust(width) for line in lines]
    at = boxes(grid, labels)
    flow, arrow = FLOW[direction]
    back = {"S": "N", "E": "W"}[flow]

    def target(r, c):
        for label, (lr, lc, w) in at.items():
            if direction == "down" and r + 1 == lr - 1 and lc <= c < lc + w:
                return label
            if (
                direction == "right"
                and c + 1 == lc
                and lr <= r
                and all(grid[x][lc] == "│" for x in range(lr, r + 1))
            ):  # the box's left side
                return label
        raise AssertionError(f"arrow at {r},{c} points at no box")

    opposite = {"N": "S", "S": "N", "E": "W", "W": "E"}
    edges = set()
    for label, (r, c, w) in at.items():
        if direction == "down":
            todo = [((r + 2, x), "S") for x in range(c, c + w) if grid[r + 1][x] == "┬"]
        else:
            todo = [
                ((x, c + w), "E")
                for x in range(r - 1, r + 9)
                if x < len(grid)
                and grid[x][c + w - 1] == "├"
                and all(grid[y][c + w - 1] in "│├" for y in range(r, x))
            ]
        seen = set()
        while todo:
            (cell, heading) = state = todo.pop()
            if state in seen:
                continue
            seen.add(state)
            ch = grid[cell[0]][cell[1]]
            assert 0 <= cell[0] < len(grid) and 0 <= cell[1] < width, (
                f"a line runs off the drawing at {cell}"
            )
            if ch == arrow:
                edges.add((label, target(*cell)))
                continue
            bits = BITS.get(ch, 0)
            if not bits & DIRS[opposite[heading]][0]:  # a crossing: this line jumps it
                turns = [heading]
            else:
                turns = [
                    name
                    for name, (bit, _, _) in DIRS.items()
                    if bits & bit and name not in (back, opposite[heading])
                ]
            for name in turns:
                _, dr, dc = DIRS[name]
                todo.append(((cell[0] + dr, cell[1] + dc), name))
    return edges


SHAPES = {
    "chain": [("a", "b"), ("b", "c")],
    "fan-out": [("a", "b"), ("a", "c"), ("a", "d")],
    "fan-in": [("a", "d"), ("b", "d"), ("c", "d")],
    "diamond": [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    "skip": [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("a", "d")],
    "two branches": [("a", "b"), ("c", "d"), ("d", "e")],
}


@pytest.mark.parametrize("direction", ["down", "right"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_drawn_edges_are_exactly_the_graph(shape, direction):
    edges = SHAPES[shape]
    labels = sorted({n for e in edges for n in e})
    drawing = draw([Node(n, n) for n in labels], edges, direction)
    assert drawing.direction == direction
    assert traced_edges(drawing.text(), labels, direction) == set(edges), "\n" + drawing.text()


@pytest.mark.parametrize("seed", range(6))
def test_a_larger_random_graph_reads_exactly(seed):
    rng = random.Random(seed)
    names = [f"stage{i:02d}" for i in range(34)]
    edges = sorted(
        {
            (names[rng.randrange(i)], names[i])
            for i in range(1, 34)
            for _ in range(rng.randint(1, 2))
        }
    )
    for direction in ("down", "right"):
        drawing = draw([Node(n, n) for n in names], edges, direction)
        seen = traced_edges(drawing.text(), names, direction)
        assert seen == set(edges), "\n" + drawing.text()


def test_foreach_chains_draw_straight_and_fan_in_shares_one_line():
    models = ["logreg", "forest", "boosting"]
    nodes = (
        ["featurize"]
        + [f"train@{m}" for m in models]
        + [f"evaluate@{m}" for m in models]
        + ["select"]
    )
    edges = (
        [("featurize", f"train@{m}") for m in models]
        + [(f"train@{m}", f"evaluate@{m}") for m in models]
        + [(f"evaluate@{m}", "select") for m in models]
    )
    drawing = draw([Node(n, n) for n in nodes], edges, "right")
    lines = drawing.text().splitlines()
    for m in models:  # train@m and evaluate@m on one line, joined by a straight arrow
        row = next(line for line in lines if f"│ train@{m} ├" in line)
        assert re.search(rf"│ train@{m} ├─+▶│ evaluate@{m} ├", row), drawing.text()
    assert sum(line.count("▶│ select") for line in lines) == 1


def test_auto_direction_goes_down_when_it_fits_else_right():
    small = draw([Node("a", "a"), Node("b", "b")], [("a", "b")], "auto", width=80)
    assert small.direction == "down" and "▼" in small.text()
    wide = [Node(f"train@model-{i}", f"train@model-{i}") for i in range(8)]
    drawing = draw([Node("prep", "prep"), *wide], [("prep", n.id) for n in wide], "auto", width=80)
    assert drawing.direction == "right"
    assert (
        drawing.width
        < 80
        < draw([Node("prep", "prep"), *wide], [("prep", n.id) for n in wide], "down").width
    )


def test_styles_cover_the_boxes():
    drawing = draw([Node("a", "a", style="yellow"), Node("b", "b")], [("a", "b")], "down")
    styled = [
        (i, a, b) for i, spans in enumerate(drawing.styles) for a, b, s in spans if s == "yellow"
    ]
    assert [i for i, _, _ in styled] == [0, 1, 2]
    assert "yellow" in str(drawing.rich().spans)


def test_rounded_boxes_for_outs():
    text = draw([Node("s", "s"), Node("out:x", "x", rounded=True)], [("s", "out:x")], "down").text()
    assert "╭───╮" in text and "┌───┐" in text


def test_a_source_sits_right_above_its_consumer():
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d"), ("late", "d")])
    layer = layers_of(g)
    assert layer == {"a": 0, "b": 1, "c": 2, "d": 3, "late": 2}


def test_crossings_counts_inversions():
    down = {"a": ["y"], "b": ["x"], "c": []}
    assert crossings(["a", "b", "c"], ["x", "y"], down) == 1
    assert crossings(["b", "a", "c"], ["x", "y"], down) == 0


def test_place_keeps_order_and_gaps_and_is_nearest():
    assert place([3, 3], [10, 10], [1, 1], 1) == [8, 12]  # both want 10: split evenly
    assert place([3, 3], [0, 20], [1, 1], 1) == [0, 20]  # room enough: exactly where wanted
    assert place([3, 3], [10, 0], [5, 1], 1) == [8, 12]  # crossed wishes: the heavy one moves less


# -- formats -----------------------------------------------------------------------------

VIEW = {
    "schema": 1,
    "nodes": [
        {
            "id": "prep",
            "kind": "stage",
            "fate": "skip",
            "stale": False,
            "reasons": [],
            "desc": "",
            "outs": ["d.txt"],
        },
        {
            "id": "train@a",
            "kind": "stage",
            "fate": "run",
            "stale": True,
            "reasons": ['param changed: x "1" -> 2'],
            "desc": "",
            "outs": ["m.txt"],
        },
    ],
    "edges": [{"from": "prep", "to": "train@a"}],
}


def test_dot_quotes_names_and_keeps_fates():
    pydot = pytest.importorskip("pydot")
    graph = pydot.graph_from_dot_data(dag.to_dot(VIEW))[0]
    nodes = {
        n.get_name().strip('"'): n
        for n in graph.get_nodes()
        if n.get_name() not in ("node", "edge")
    }
    assert set(nodes) == {"prep", "train@a"}
    assert nodes["train@a"].get("fate").strip('"') == "run"
    assert [
        (e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()
    ] == [("prep", "train@a")]


def test_mermaid_escapes_labels_and_keeps_reasons_as_comments():
    text = dag.to_mermaid(VIEW)
    assert text.startswith("flowchart TD\n")
    assert '    n1["train@a<br/>would run"]' in text
    assert "    n0 --> n1" in text and "class n1 run" in text
    assert '%% train@a: param changed: x "1" -> 2' in text
