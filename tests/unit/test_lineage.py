"""Tracing an artifact through lock entries (lineage.py), without a project."""

from __future__ import annotations

import pytest

from reprobuild import lineage
from reprobuild.errors import UsageError


def entry(deps=(), outs=(), code=()):
    meta = {"hash": "0" * 32, "size": 1}
    return {
        "key": "k",
        "cmd": "c",
        "code": {p: meta for p in code},
        "deps": {p: meta for p in deps},
        "outs": {p: meta for p in outs},
    }


ENTRIES = {
    "raw": entry(deps=["src.csv"], outs=["data/raw/"]),
    "left": entry(deps=["data/raw/a.csv"], outs=["left.txt"], code=["left.py"]),
    "right": entry(deps=["data/raw/"], outs=["right.txt"]),
    "join": entry(deps=["left.txt", "right.txt"], outs=["joined.txt"]),
    "unrelated": entry(deps=["other.csv"], outs=["other.txt"]),
}


def test_a_diamond_is_traced_once_per_stage_down_to_the_sources(tmp_path):
    found = lineage.trace("joined.txt", ENTRIES, "workspace", str(tmp_path))
    assert found.stage == "join"
    assert list(found.stages) == ["join", "left", "right", "raw"]
    assert found.stages["left"]["upstream"] == {
        "data/raw/a.csv": ["raw"]
    }  # a file inside an out folder
    assert found.stages["right"]["upstream"] == {"data/raw/": ["raw"]}
    assert set(found.sources) == {"src.csv", "left.py"}
    assert "unrelated" not in found.stages


def test_a_file_inside_an_out_folder_is_made_by_that_stage(tmp_path):
    found = lineage.trace("data/raw/a.csv", ENTRIES, "workspace", str(tmp_path))
    assert found.stage == "raw" and found.path == "data/raw/a.csv" and list(found.stages) == ["raw"]


def test_a_source_has_no_lineage(tmp_path):
    with pytest.raises(UsageError, match="no stage in the lockfile made 'src.csv'"):
        lineage.trace("src.csv", ENTRIES, "workspace", str(tmp_path))


def test_the_tree_names_each_stage_once():
    from rich.console import Console

    found = lineage.trace("joined.txt", ENTRIES, "HEAD", "/nowhere")
    console = Console(width=200, record=True)
    console.print(lineage.tree(found))
    text = console.export_text()
    assert text.count("raw  key") == 1 and "raw (shown above)" in text
    assert "lockfile at HEAD" in text and "src.csv" in text and "unrelated" not in text
