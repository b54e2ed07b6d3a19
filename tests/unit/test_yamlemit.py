"""yamlemit writes what yaml writes, byte for byte, or declines."""

import random

import pytest
import yaml

from reprobuild import lockfile, yamlemit
from reprobuild.yamlemit import Flow


def _dumpers():
    found = [yaml.SafeDumper]
    if hasattr(yaml, "CSafeDumper"):
        found.append(yaml.CSafeDumper)
    for base in found:

        class Dumper(base):
            def ignore_aliases(self, data):
                return True

        Dumper.add_representer(
            Flow,
            lambda d, data: d.represent_mapping(
                "tag:yaml.org,2002:map", data.items(), flow_style=True
            ),
        )
        yield base.__name__, Dumper


DUMPERS = dict(_dumpers())


def by_yaml(data, dumper):
    return yaml.dump(
        data,
        Dumper=dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=yamlemit.WIDTH,
    )


HOSTILE = [
    "",
    " ",
    "a ",
    " a",
    "a  b",
    "-",
    "- a",
    "-a",
    "--- x",
    "...",
    "?",
    "? a",
    "?a",
    ":",
    ":a",
    "a:",
    "a: b",
    "a:b",
    "a #b",
    "a#b",
    "#a",
    "'",
    "it's",
    '"q"',
    "a,b",
    "[a]",
    "{a}",
    "a]",
    "&a",
    "*a",
    "!a",
    "|",
    ">",
    "%a",
    "@a",
    "`a",
    "=",
    "<<",
    "~",
    "null",
    "Null",
    "NULL",
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "False",
    "0",
    "007",
    "0o7",
    "08",
    "0x1F",
    "0b101",
    "1_000",
    "-1",
    "+1",
    "1.0",
    "1.",
    ".5",
    "1e5",
    "1.0e+5",
    "1e+5",
    ".inf",
    "-.Inf",
    ".NaN",
    "1:30",
    "190:20:30.15",
    "2001-12-14",
    "2001-12-14 21:59:43.10 -5",
    "2001-12-14t21:59:43.10-05:00",
    "1.26.4",
    "v1.0",
    "517e043986134c7c2ef7abd802a240ef",
    "12345678901234567890123456789012",
    "in/0.txt",
    "./x",
    "/abs",
    "a b",
    "cat in/0.txt > out/0.txt",
    "x\ty",
    "naïve",
    "a\nb",
    "a  " * 40,
    "x " * 60,
    "'" + "q " * 50 + "'",
    "a" * 130,
]


def random_text(rng: random.Random) -> str:
    alphabet = "ab01 :#-'\",.?[]{}&*!|>%@`=<~/_+eExX"
    if rng.random() < 0.3:
        return rng.choice(HOSTILE)
    n = rng.choice([1, 2, 3, 5, 10, 30, 80, 130])
    return "".join(rng.choice(alphabet if rng.random() < 0.5 else "abc d") for _ in range(n))


def random_scalar(rng: random.Random):
    kind = rng.random()
    if kind < 0.6:
        return random_text(rng)
    if kind < 0.7:
        return rng.choice([None, True, False])
    if kind < 0.85:
        return rng.choice([0, -5, 7, 10**40, rng.randint(-(10**9), 10**9)])
    return rng.choice(
        [0.0, -0.0, 1.5, 1e20, 1e-5, 3.14159, float("inf"), float("-inf"), float("nan"), 2.0e-308]
    )


def random_data(rng: random.Random, depth: int = 0) -> dict:
    out = {}
    for _ in range(rng.randint(1, 5)):
        key = (
            random_text(rng)
            if rng.random() < 0.3
            else f"k{rng.randint(0, 10 ** rng.randint(0, 30))}"
        )
        kind = rng.random()
        if kind < 0.25 and depth < 3:
            out[key] = random_data(rng, depth + 1)
        elif kind < 0.45:
            out[key] = Flow(
                (random_text(rng) if rng.random() < 0.3 else f"f{i}", random_scalar(rng))
                for i in range(rng.randint(1, 12))
            )
        elif kind < 0.6:
            out[key] = [random_scalar(rng) for _ in range(rng.randint(1, 4))]
        else:
            out[key] = random_scalar(rng)
    return out


@pytest.mark.parametrize("name", sorted(DUMPERS))
def test_each_hostile_string_as_key_value_item_and_flow_value(name):
    for s in HOSTILE:
        data = {s or "k": s, "k2": [s], "k3": Flow([("f", s), (s or "g", 1)]), "k4": {"n": s}}
        got = yamlemit.dump(data)
        if got is not None:
            assert got == by_yaml(data, DUMPERS[name]), repr(s)


@pytest.mark.parametrize("name", sorted(DUMPERS))
def test_generated_documents_are_written_as_yaml_writes_them(name):
    rng = random.Random(20261202)
    taken = 0
    for _ in range(3000):
        data = random_data(rng)
        got = yamlemit.dump(data)
        if got is not None:
            taken += 1
            assert got == by_yaml(data, DUMPERS[name]), data
            assert yaml.safe_load(got) == yaml.safe_load(by_yaml(data, DUMPERS[name]))
    assert taken > 1000  # most documents take the fast path, or this proves little


@pytest.mark.parametrize("name", sorted(DUMPERS))
def test_keys_near_yamls_simple_key_limit(name):
    for n in range(118, 131):
        for data in ({"k" * n: 1}, {"a": Flow([("k" * n, 1)])}):
            got = yamlemit.dump(data)
            if got is not None:
                assert got == by_yaml(data, DUMPERS[name]), n


def test_what_it_declines_goes_through_yaml():
    for data in ({"a": []}, {"a": {}}, {"a": [{"b": 1}]}, {"a": "naïve"}, {"a" * 123: 1}):
        assert yamlemit.dump(data) is None


def test_a_realistic_lockfile_is_the_same_either_way(monkeypatch):
    pkgs = {f"package-{i}": f"{i}.{i * 7}.0" for i in range(14)}
    stages = {
        f"train@{m}": {
            "key": f"{i:032x}",
            "cmd": f"python stages/train.py --model {m} --features data/features/train.parquet "
            f"--seed 42 --class-weight balanced --out models/{m}.pkl --C 1.0 --max_iter 1000",
            "deps": {"data/features/": {"hash": "a" * 32, "size": 123, "nfiles": 2}},
            "params": {"train.C": 1.0, "train.layers": [64, 32], "train.name": "it's 2.0"},
            "env": {"python": "CPython 3.11.7", "platform": "linux-x86_64", "packages": pkgs},
            "outs": {f"models/{m}.pkl": {"hash": "b" * 32, "size": 9}},
        }
        for i, m in enumerate(["logreg", "forest", "boosting"])
    }
    sources = {"data/raw.csv": {"hash": "c" * 32, "size": 5, "url": "https://x.org/a b.csv"}}
    slow = lockfile.dumps(stages, sources, fast=False)

    def no_yaml():
        raise AssertionError("the fast path was not taken")

    monkeypatch.setattr(lockfile, "_yaml", no_yaml)
    assert lockfile.dumps(stages, sources) == slow


def test_an_empty_mapping_is_left_to_yaml():
    assert yamlemit.dump({}) is None  # yaml writes "{}": no block style to write
    assert yamlemit.dump({"a": {}}) is None  # (empty containers are declined anywhere)
