"""Lockfile, metrics and params comparisons (history.py), without git."""

from __future__ import annotations

import pytest

from reprobuild import history

OLD = {
    "key": "k1",
    "cmd": "python train.py",
    "code": {"train.py": {"hash": "a" * 32, "size": 1}},
    "deps": {"data/": {"hash": "b" * 32, "size": 2, "nfiles": 1}},
    "params": {"train.depth": 3, "train.lr": 0.1},
    "env": {"python": "CPython 3.11.7", "packages": {"scikit-learn": "1.5.1"}},
    "outs": {"model.pkl": {"hash": "c" * 32, "size": 3}},
}


def test_an_unchanged_entry_has_no_changes():
    assert history.diff_entry(OLD, dict(OLD)) == {}


def test_entry_changes_name_each_field_old_and_new():
    new = {
        **OLD,
        "key": "k2",
        "params": {"train.depth": 4, "seed": 1},
        "env": {"python": "CPython 3.11.7", "packages": {"scikit-learn": "1.5.2"}},
        "deps": {},
        "outs": {"model.pkl": {"hash": "d" * 32, "size": 3}},
    }
    changes = history.diff_entry(OLD, new)
    assert changes["key"] == {"old": "k1", "new": "k2"}
    assert changes["params"] == {
        "seed": {"new": 1},
        "train.depth": {"old": 3, "new": 4},
        "train.lr": {"old": 0.1},
    }
    assert changes["env"] == {"scikit-learn": {"old": "1.5.1", "new": "1.5.2"}}
    assert changes["deps"] == {"data/": {"old": "b" * 32}}
    assert changes["outs"] == {"model.pkl": {"old": "c" * 32, "new": "d" * 32}}
    assert "cmd" not in changes and "code" not in changes


def test_lockfile_diff_sorts_stages_into_added_removed_changed():
    doc = history.diff_locks(
        {"a": OLD, "b": OLD}, {"b": {**OLD, "cmd": "python train.py -v"}, "c": OLD}
    )
    assert doc["added"] == ["c"] and doc["removed"] == ["a"]
    assert doc["changed"] == {"b": {"cmd": {"old": "python train.py", "new": "python train.py -v"}}}


def test_value_diffs_with_numeric_changes():
    rows = history.diff_values(
        {"auc": 0.1, "n": 3, "name": "x", "flag": True, "same": 1},
        {"auc": 0.3, "n": 5, "name": "y", "flag": False, "same": 1, "new": 2},
    )
    assert rows == {
        "auc": {"old": 0.1, "new": 0.3, "change": 0.2},
        "flag": {"old": True, "new": False},
        "n": {"old": 3, "new": 5, "change": 2},
        "name": {"old": "x", "new": "y"},
        "new": {"new": 2},
    }
    assert "same" in history.diff_values({"same": 1}, {"same": 1}, show_all=True)


def test_flatten_nested_metrics():
    assert history.flatten({"a": {"b": 1, "c": [4, {"d": 5}]}, "e": None}) == {
        "a.b": 1,
        "a.c.0": 4,
        "a.c.1.d": 5,
        "e": None,
    }
    assert history.flatten(0.5) == {"value": 0.5}


def test_parse_metrics_by_suffix():
    assert history.parse_metrics(b'{"a": 1}', "m.json") == {"a": 1}
    assert history.parse_metrics(b"a: 1\n", "m.yaml") == {"a": 1}
    with pytest.raises(ValueError, match="invalid JSON"):
        history.parse_metrics(b"a: 1", "m.json")


def test_metric_patterns_of_a_revision_pipeline():
    text = """\
stages:
  evaluate:
    foreach: [a, b]
    do:
      cmd: x
      metrics: ['reports/${item}.json', {summary.yaml: {cache: false}}]
  other:
    wdir: sub
    cmd: y
    metrics: [m.json]
"""
    assert history.revision_metric_patterns(text) == [
        "reports/*.json",
        "summary.yaml",
        "sub/m.json",
    ]
    assert history.revision_metric_patterns("stages: [") == []
    assert history.revision_metric_patterns(None) == []
