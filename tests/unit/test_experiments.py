"""Overrides: parsing `-S`, grids, and editing params files without losing comments."""

import pytest
import yaml

from reprobuild.errors import UsageError
from reprobuild.experiments import Override, apply_overrides, grid, params_leaves, parse_sets


def test_parse_sets_reads_yaml_scalars_and_comma_grids():
    assert parse_sets(["a.b=1,2.5,x", "c=true", "d=[1, 2]"]) == [
        ("a.b", [1, 2.5, "x"]),
        ("c", [True]),
        ("d", [[1, 2]]),
    ]
    with pytest.raises(UsageError):
        parse_sets(["novalue"])


def test_grid_is_the_cartesian_product_in_order():
    assert grid([("a", [1, 2]), ("b", ["x", "y"])]) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert grid([]) == [{}]


TEXT = """\
# top comment
seed: 42
train:
  models:
    forest:
      n_estimators: 150   # trees
      max_features: sqrt
    logreg:
      C: 1.0
  n_estimators: 7
"""


def test_apply_overrides_keeps_comments_and_touches_only_that_leaf():
    out = apply_overrides(
        TEXT, [Override("k", "params.yaml", ("train", "models", "forest", "n_estimators"), 300)]
    )
    assert "      n_estimators: 300   # trees\n" in out
    assert "  n_estimators: 7\n" in out and "# top comment" in out
    data = yaml.safe_load(out)
    assert data["train"]["models"]["forest"]["n_estimators"] == 300
    assert data["train"]["n_estimators"] == 7


def test_apply_overrides_on_the_later_key_of_the_same_name():
    out = apply_overrides(TEXT, [Override("k", "p", ("train", "n_estimators"), 9)])
    data = yaml.safe_load(out)
    assert data["train"]["n_estimators"] == 9
    assert data["train"]["models"]["forest"]["n_estimators"] == 150


def test_apply_overrides_falls_back_to_a_rewrite_for_flow_style():
    out = apply_overrides("train: {a: 1, b: 2}\n", [Override("k", "p", ("train", "a"), "x y")])
    assert yaml.safe_load(out) == {"train": {"a": "x y", "b": 2}}


def test_params_leaves_prefix_other_files():
    leaves = params_leaves({"params.yaml": "a: {b: 1}\n", "more.yaml": "c: 2\n"}, "params.yaml")
    assert leaves == {"a.b": 1, "more.yaml:c": 2}


def test_exp_commands_stay_light(tmp_path):
    import re
    import subprocess
    import sys

    heavy = re.compile(r"\b(polars|sklearn|dask|distributed|fsspec|s3fs|pandas|numpy)\b")
    (tmp_path / "reprobuild.yaml").write_text("stages:\n  s:\n    cmd: echo > o\n    outs: [o]\n")
    for args in (["exp", "--help"], ["exp", "run", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "reprobuild", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and not heavy.findall(proc.stderr)
