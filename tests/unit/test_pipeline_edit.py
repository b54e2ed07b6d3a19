"""Adding `sources:` entries keeps the rest of the user's file as it was."""

from __future__ import annotations

import yaml

from reprobuild.pipeline_edit import add_sources

STAGES = "stages:  # the work\n  s:\n    cmd: echo\n"


def test_a_file_without_sources_gets_a_block_before_its_stages():
    text = "# my pipeline\nparams: p.yaml\n" + STAGES
    new = add_sources(text, [("data/raw.csv", None)])
    assert new == "# my pipeline\nparams: p.yaml\nsources:\n  - data/raw.csv\n\n" + STAGES


def test_a_block_list_grows_after_its_last_item_and_keeps_comments():
    text = "sources:\n  - a.csv  # first\n  - b: {url: 'http://x/b'}\n# between\n" + STAGES
    new = add_sources(text, [("c d.csv", "s3://bucket/c")])
    assert "# first" in new and "# between\n" + STAGES in new
    assert yaml.safe_load(new)["sources"] == [
        "a.csv",
        {"b": {"url": "http://x/b"}},
        {"c d.csv": {"url": "s3://bucket/c"}},
    ]


def test_flow_and_empty_lists_and_odd_names():
    flow = add_sources("sources: [a, b]\n" + STAGES, [("c", None)])
    assert flow.startswith("sources: [a, b, c]\n")
    empty = add_sources("sources: []\n" + STAGES, [("c", None)])
    assert yaml.safe_load(empty)["sources"] == ["c"]
    bare = add_sources("sources:\n" + STAGES, [("true", None), ("x: y", None)])
    assert yaml.safe_load(bare)["sources"] == ["true", "x: y"]  # quoted, never retyped
