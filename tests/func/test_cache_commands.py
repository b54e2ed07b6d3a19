"""`checkout`, `commit`, `gc`, `cache verify` and `init` through the CLI."""

from __future__ import annotations

import os
import shutil
import textwrap

from tests.conftest import stages_run

PIPE = {
    "reprobuild.yaml": """\
        stages:
          make:
            cmd: python make.py ${n}
            outs: [out/, single.txt]
        """,
    "params.yaml": "n: 3\n",
    "make.py": """\
        import os, sys
        n = int(sys.argv[1])
        os.makedirs("out/sub", exist_ok=True)
        for i in range(n):
            open(f"out/sub/{i}.txt", "w").write(f"file {i} of {n}\\n")
        open("single.txt", "w").write(f"{n}\\n")
        """,
}


def objects(root):
    return sorted(p.name for p in (root / "cache/objects").rglob("*") if p.is_file())


def test_checkout_restores_deleted_outputs(ws):
    ws.write(PIPE)
    ws.run("build")
    shutil.rmtree(ws.root / "out")
    ws.write({"single.txt": "edited\n"})
    r = ws.run("checkout")
    assert r.code == 1 and "1 restored" in r.out and "kept single.txt: changed by hand" in r.err
    assert ws.read("out/sub/2.txt") == "file 2 of 3\n" and ws.read("single.txt") == "edited\n"
    r = ws.run("checkout", "--force")
    assert r.code == 0 and ws.read("single.txt") == "3\n"
    assert ws.run("status", "--check").code == 0


def test_checkout_writes_only_declared_outs(ws, tmp_path):
    """A lockfile (from a branch, a pull request) naming another path cannot make checkout touch it."""
    ws.write(PIPE)
    ws.run("build")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    lock = ws.read("reprobuild.lock").replace("single.txt:", "../../victim:")
    ws.write({"reprobuild.lock": lock})
    r = ws.run("checkout")
    assert "ignored make: ../../victim" in r.err
    assert (victim / "keep.txt").read_text() == "precious"


def test_gc_refuses_unreadable_lockfile(ws):
    ws.write(PIPE)
    ws.run("build")
    before = objects(ws.root)
    ws.write(
        {
            "reprobuild.lock": "<<<<<<< HEAD\n"
            + ws.read("reprobuild.lock")
            + "=======\n>>>>>>> other\n"
        }
    )
    r = ws.run("gc")
    assert r.code == 2 and "gc removes nothing" in r.err
    assert objects(ws.root) == before


def test_checkout_names_what_the_cache_lacks(ws):
    ws.write(PIPE)
    ws.run("build")
    shutil.rmtree(ws.root / "cache/objects")
    os.unlink(ws.root / "single.txt")
    r = ws.run("checkout")
    assert r.code == 1 and "missing from the cache: make: single.txt" in r.err


def test_restored_workspace_file_edit_does_not_alter_cache(ws):
    ws.write(PIPE)
    ws.run("build")
    os.unlink(ws.root / "single.txt")
    ws.run("checkout")
    with open(ws.root / "single.txt", "a") as f:  # a user edits the restored file in place
        f.write("more\n")
    os.unlink(ws.root / "single.txt")
    ws.run("checkout")
    assert ws.read("single.txt") == "3\n"


def test_commit_accepts_hand_made_outputs(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.write({"single.txt": "hand made\n"})
    assert ws.run("status", "--check").code == 1
    r = ws.run("commit", "make")
    assert r.code == 0 and "committed make" in r.out
    assert ws.run("status", "--check").code == 0
    assert stages_run(ws.run("build")) == []
    os.unlink(ws.root / "single.txt")
    ws.run("checkout")
    assert ws.read("single.txt") == "hand made\n"


def test_gc_removes_only_unreferenced(ws):
    ws.write(PIPE)
    ws.run("build")
    first = set(objects(ws.root))
    ws.write({"params.yaml": "n: 4\n"})
    ws.run("build")
    both = set(objects(ws.root))
    assert first < both
    dry = ws.run("gc", "-n")
    assert dry.code == 0 and "would remove" in dry.out
    assert set(objects(ws.root)) == both
    r = ws.run("gc")
    assert r.code == 0
    left = set(objects(ws.root))
    assert left < both and left != first
    shutil.rmtree(ws.root / "out")
    assert ws.run("checkout").code == 0 and ws.read("out/sub/3.txt") == "file 3 of 4\n"


def test_gc_all_commits_keeps_history(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.commit_all("n=3")
    ws.write({"params.yaml": "n: 4\n"})
    ws.run("build")
    ws.commit_all("n=4")
    before = set(objects(ws.root))
    ws.run("gc", "--all-commits")
    assert set(objects(ws.root)) == before
    ws.run("gc")
    assert set(objects(ws.root)) < before


def test_cache_verify_quarantines_corrupt_objects_and_build_rebuilds(ws):
    ws.write(PIPE)
    ws.run("build")
    assert ws.run("cache", "verify").code == 0
    victim = next(
        p
        for p in (ws.root / "cache/objects").rglob("*")
        if p.is_file() and not p.name.endswith(".dir")
    )
    os.chmod(victim, 0o644)
    victim.write_bytes(b"bit rot")
    r = ws.run("cache", "verify")
    assert r.code == 1 and "corrupt:" in r.err
    assert not victim.exists() and any((ws.root / "cache/quarantine").iterdir())
    assert ws.run("cache", "verify").code == 0


def test_corrupt_object_is_never_restored(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.write({"params.yaml": "n: 4\n"})
    ws.run("build")
    ws.write({"params.yaml": "n: 3\n"})
    for p in (ws.root / "cache/objects").rglob("*"):  # corrupt every file object
        if p.is_file() and not p.name.endswith(".dir"):
            os.chmod(p, 0o644)
            p.write_bytes(b"corrupt")
    r = ws.run("build")
    assert r.code == 0 and stages_run(r) == ["make"]
    assert ws.read("single.txt") == "3\n"


def test_init_writes_a_pipeline_that_builds(ws):
    r = ws.run("init")
    assert r.code == 0
    assert (ws.root / "cache/.gitignore").read_text() == "*\n"
    b = ws.run("build")
    assert b.code == 0 and ws.read("out/greeting.txt") == "hello\n"
    assert ws.run("init").code == 2


def test_checkout_rev_restores_an_older_model_without_running(ws):
    ws.write(PIPE)
    ws.run("build")
    ws.commit_all("n=3")
    ws.write({"params.yaml": "n: 5\n"})
    ws.run("build")
    ws.commit_all("n=5")
    assert ws.read("single.txt") == "5\n"
    r = ws.run("checkout", "--rev", "HEAD~1")
    assert r.code == 0, r.err
    assert ws.read("single.txt") == "3\n" and not (ws.root / "out/sub/4.txt").exists()
    assert "running" not in r.out
    assert ws.run("checkout", "--rev", "nope").code == 2


def test_checkout_rev_outside_git(tmp_path, capsys):
    from tests.conftest import Workspace

    plain = Workspace(tmp_path, capsys)
    plain.write(PIPE)
    plain.run("build")
    r = plain.run("checkout", "--rev", "HEAD")
    assert r.code == 2 and "not in a git repository" in r.err


def test_cache_location_precedence(ws, monkeypatch, tmp_path):
    ws.write(
        {**PIPE, "reprobuild.yaml": "cache: from-yaml\n" + textwrap.dedent(PIPE["reprobuild.yaml"])}
    )
    assert ws.run("build").code == 0
    assert (ws.root / "from-yaml/objects").is_dir() and not (ws.root / "cache/objects").exists()
    monkeypatch.setenv("REPROBUILD_CACHE_DIR", str(tmp_path / "from-env"))
    ws.run("build", "--force")
    assert (tmp_path / "from-env/objects").is_dir()
    ws.run("--cache-dir", str(tmp_path / "from-cli"), "build", "--force")
    assert (tmp_path / "from-cli/objects").is_dir()


def test_hardlink_mode_links_restored_files(ws):
    ws.write(
        {**PIPE, "reprobuild.yaml": "link: hardlink\n" + textwrap.dedent(PIPE["reprobuild.yaml"])}
    )
    assert ws.run("build").code == 0
    os.unlink(ws.root / "single.txt")
    assert ws.run("checkout").code == 0
    restored = (ws.root / "single.txt").stat()
    assert restored.st_nlink == 2 and ws.read("single.txt") == "3\n"
