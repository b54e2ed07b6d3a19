"""Keys and decisions, without running anything."""

from reprobuild.decision import State
from reprobuild.hashing import Meta


def state(**over):
    base = dict(
        cmd="python t.py",
        wdir=".",
        code={"t.py": Meta("a" * 32, 1)},
        deps={"d.csv": Meta("b" * 32, 2)},
        params={"x": 1},
        env={"python": "CPython 3.11.7"},
        outs_declared=["m.pkl"],
    )
    base.update(over)
    return State(**base)


def test_key_is_stable_and_32_hex():
    assert state().key == state().key
    import re

    assert re.fullmatch(r"[0-9a-f]{32}", state().key)


def test_key_changes_with_every_input_but_not_sizes():
    k = state().key
    assert state(cmd="python t.py -v").key != k
    assert state(deps={"d.csv": Meta("c" * 32, 2)}).key != k
    assert state(code={"t.py": Meta("e" * 32, 1)}).key != k
    assert state(params={"x": 2}).key != k
    assert state(env={"python": "CPython 3.12.0"}).key != k
    assert state(outs_declared=["other.pkl"]).key != k
    assert state(deps={"d.csv": Meta("b" * 32, 999)}).key == k  # the hash decides, not the size


def test_nan_and_int_keys_compare_as_the_key_does():
    from reprobuild.decision import input_reasons
    from reprobuild.pipeline import EnvSpec, Stage

    stage = Stage("s", ("x",), ".", (), (), (), {}, EnvSpec())
    s = state(
        cmd="x",
        code={},
        deps={},
        params={"nan": float("nan"), "layers": {1: 64}},
        env={},
        outs_declared=[],
    )
    locked = {
        "key": s.key,
        "cmd": "x",
        "params": {"nan": float("nan"), "layers": {"1": 64}},
        "env": {},
    }
    assert input_reasons(stage, locked, s, []) == []


def test_unknown_inputs_have_no_key():
    assert state(unknown=["d.csv"]).key is None
