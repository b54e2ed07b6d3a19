import copy
import json

from reprobuild import lockfile

ENTRY = {
    "outs": {"m.pkl": {"size": 3, "hash": "b" * 32}},
    "key": "a" * 32,
    "params": {"z": 1, "a.b": [1, 2]},
    "cmd": "python x.py",
    "env": {"python": "CPython 3.11.7", "packages": {"numpy": "2.0"}},
    "deps": {"d/": {"hash": "c" * 32, "size": 10, "nfiles": 2}},
    "code": {},
}


def test_round_trip_and_fixed_order(tmp_path):
    path = tmp_path / "reprobuild.lock"
    lockfile.write(path, {"train": ENTRY, "a": ENTRY})
    text = path.read_text()
    assert text.index("  a:") < text.index("  train:")
    body = text.split("  train:")[1]
    assert [
        line.split(":")[0].strip()
        for line in body.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ] == ["key", "cmd", "deps", "params", "env", "outs"]
    assert "m.pkl: {hash: " + "b" * 32 + ", size: 3}" in text
    stages, problem = lockfile.read(path)
    assert problem is None
    assert stages["train"]["outs"] == ENTRY["outs"] and stages["train"]["params"] == ENTRY["params"]


def test_same_input_same_bytes_whatever_dict_order():
    shuffled = dict(reversed(list(ENTRY.items())))
    assert lockfile.dumps({"s": ENTRY}) == lockfile.dumps({"s": shuffled})


def test_bad_lockfiles_mean_rebuild(tmp_path):
    for text in ("{{{", "schema: 2\nstages: {}\n", "- a list\n"):
        stages, problem = lockfile.parse(text)
        assert stages == {} and problem


def test_values_shared_between_stages_are_written_out_not_aliased():
    shared = {**ENTRY, "params": {"layers": [1, 2]}}
    text = lockfile.dumps({"a": shared, "b": shared})
    assert "&" not in text and "*" not in text
    assert text == lockfile.dumps({"a": copy.deepcopy(shared), "b": copy.deepcopy(shared)})


def test_writer_keeps_to_its_budget_before_its_first_write(tmp_path):
    path = tmp_path / "reprobuild.lock"
    stages = {f"s{i}": ENTRY for i in range(2000)}
    lockfile.write(path, stages)
    before = path.read_bytes()
    w = lockfile.LockWriter(path, stages)  # 2,000 entries: estimated 0.14 s, so not for 2.8 s
    w.update("s0", {**ENTRY, "key": "1" * 32})
    assert path.read_bytes() == before
    w.close()
    assert lockfile.read(path)[0]["s0"]["key"] == "1" * 32


def test_writer_keeps_the_parsed_copy_current(tmp_path):
    path, copy = tmp_path / "reprobuild.lock", tmp_path / "reprobuild.lock.json"
    w = lockfile.LockWriter(path, {}, parsed_copy=copy)  # nothing yet: writes at once
    w.update("s0", ENTRY)
    w.close()  # nothing pending: the copy made with the write must serve the next command
    assert set(json.loads(copy.read_bytes())["stages"]) == {"s0"}
    assert lockfile.read(path, copy)[0].keys() == lockfile.read(path)[0].keys()


def test_writer_is_atomic_and_final(tmp_path):
    path = tmp_path / "reprobuild.lock"
    w = lockfile.LockWriter(path, {})
    for i in range(50):
        w.update(f"s{i}", ENTRY)
    w.close()
    stages, _ = lockfile.read(path)
    assert len(stages) == 50
    assert [p.name for p in tmp_path.iterdir()] == ["reprobuild.lock"]  # no temp files left
