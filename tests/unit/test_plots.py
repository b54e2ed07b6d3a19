"""Reading plot data files into records (no altair needed)."""

import pytest

from reprobuild import plots


@pytest.mark.parametrize(
    "path, data, records",
    [
        ("a.json", b'[{"x": 1, "y": 2}, {"x": 2, "y": 3}]', [{"x": 1, "y": 2}, {"x": 2, "y": 3}]),
        ("a.json", b'{"name": "m", "points": [{"x": 1}]}', [{"x": 1}]),  # the first list of records
        ("a.json", b'{"recall": 0.5, "cm": {"tp": 3}}', [{"recall": 0.5, "cm.tp": 3}]),
        (
            "a.csv",
            b"x,y,label\n1,2.5,a\n2,3,b\n",
            [{"x": 1, "y": 2.5, "label": "a"}, {"x": 2, "y": 3, "label": "b"}],
        ),
        ("a.tsv", b"x\ty\n1\t-2e3\n", [{"x": 1, "y": -2000.0}]),
        ("a.yaml", b"- {x: 1, y: 2}\n", [{"x": 1, "y": 2}]),
        ("a.yml", b"points:\n  - {x: 1}\n", [{"x": 1}]),
    ],
)
def test_records_of_each_format(path, data, records):
    assert plots.records_of(data, path) == records


@pytest.mark.parametrize(
    "path, data, message",
    [
        ("a.json", b"{oops", "invalid JSON"),
        ("a.json", b"[1, 2]", "no records"),
        ("a.csv", b"", "no records"),
        ("a.yaml", b"- !!python/name:os.system\n", "is not allowed"),
    ],
)
def test_bad_data_is_a_value_error(path, data, message):
    with pytest.raises(ValueError, match=message):
        plots.records_of(data, path)


def test_default_y_is_the_last_number_and_x_the_step():
    chart = plots.Chart("t", "line", None, None)
    rows = [
        {"rev": "HEAD", "file": "f", "stage": "s", "step": 0, "loss": 1.0, "ok": True, "n": "a"}
    ]
    assert plots._x(chart) == "step" and plots._y(chart, rows) == "loss"
    assert plots._y(chart, [{"step": 0, "name": "x", "flag": False}]) is None
