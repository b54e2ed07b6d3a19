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


def test_writer_is_atomic_and_final(tmp_path):
    path = tmp_path / "reprobuild.lock"
    w = lockfile.LockWriter(path, {})
    for i in range(50):
        w.update(f"s{i}", ENTRY)
    w.close()
    stages, _ = lockfile.read(path)
    assert len(stages) == 50
    assert [p.name for p in tmp_path.iterdir()] == ["reprobuild.lock"]  # no temp files left
