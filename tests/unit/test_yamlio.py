import pytest

from reprobuild import yamlio
from reprobuild.errors import PipelineError


def test_lines_of_keys_and_items():
    d = yamlio.load("a: 1\nb:\n  - x\n  - y\nc: {k: v}\n", "f.yaml")
    assert d == {"a": 1, "b": ["x", "y"], "c": {"k": "v"}}
    assert d.lines == {"a": 1, "b": 2, "c": 5}
    assert d["b"].lines == [3, 4]
    assert yamlio.line_of(d["c"], "k") == 5


def test_merge_key_keeps_defaults():
    d = yamlio.load("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "f")
    assert d["use"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    "text, msg",
    [
        ("a: !!python/name:os.system x\n", "is not allowed"),
        ("a: !custom x\n", "is not allowed"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: [1\n", "invalid YAML"),
    ],
)
def test_refused(text, msg):
    with pytest.raises(PipelineError, match=msg):
        yamlio.load(text, "f.yaml")


def test_alias_bomb_fails_fast(monkeypatch):
    monkeypatch.setattr(yamlio, "MAX_NODES", 10_000)
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 9)
    )
    with pytest.raises(PipelineError, match="alias bomb"):
        yamlio.load(text, "f")
