"""Tracked sources (`add`, `import`, `update`) in real git repositories, with a folder
remote, the S3 server on loopback and a local http.server; fresh clones that pull."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading

import pytest
import yaml

from tests.conftest import Workspace, git, stages_restored, stages_run

pytest.importorskip("fsspec", reason="remotes need fsspec (pip install -e '.[test]' brings it)")

PIPE = {
    "reprobuild.yaml": """\
        # the team's pipeline: comments stay where they are
        stages:
          prepare:
            cmd: cat data/raw/*.csv | sort > prepared.txt
            deps: [data/raw/]
            outs: [prepared.txt]
          count:
            cmd: wc -l < prepared.txt > count.txt
            deps: [prepared.txt]
            outs: [count.txt]
        """,
    ".gitignore": "# hand-written\n*.log\n",
}


def raw(ws: Workspace, rows: str) -> None:
    ws.write({"data/raw/a.csv": rows, "data/raw/b.csv": "zz\n"})


@pytest.fixture
def tracked(ws):
    """A repository whose raw data is a tracked source, built and committed."""
    ws.write(PIPE)
    raw(ws, "c\nb\na\n")
    r = ws.run("add", "data/raw")
    assert r.code == 0, r.err
    assert "added data/raw (2 files" in r.out
    assert ws.run("build").code == 0
    ws.commit_all("data v1")
    return ws


def clone(ws: Workspace, name: str = "clone") -> Workspace:
    target = ws.root.parent / name
    git(ws.root.parent, "clone", "-q", str(ws.root), str(target))
    return Workspace(target, ws.capsys)


def lock(ws: Workspace) -> dict:
    return yaml.safe_load(ws.read("reprobuild.lock"))


def test_add_declares_caches_pins_and_keeps_git_clean(tracked):
    text = tracked.read("reprobuild.yaml")
    assert text.startswith("# the team's pipeline: comments stay where they are\nsources:\n")
    assert "  - data/raw\n" in text
    entry = lock(tracked)["sources"]["data/raw"]
    assert entry["nfiles"] == 2 and len(entry["hash"]) == 32
    objects = tracked.root / "cache" / "objects"
    assert (objects / entry["hash"][:2] / (entry["hash"][2:] + ".dir")).is_file()
    # managed .gitignore blocks beside the data; the hand-written line is untouched
    assert "/raw\n" in tracked.read("data/.gitignore")
    assert tracked.read(".gitignore").startswith("# hand-written\n*.log\n")
    assert "/prepared.txt" in tracked.read(".gitignore")
    assert git(tracked.root, "status", "--porcelain") == ""
    assert stages_run(tracked.run("build")) == []


def test_changed_source_is_reported_until_recorded(tracked):
    raw(tracked, "d\nc\nb\na\n")
    st = tracked.run("status", "--check")
    assert st.code == 1
    assert "source changed: data/raw" in st.out and "dep changed: data/raw" in st.out
    assert tracked.run("add", "data/raw").code == 0
    assert "source changed" not in tracked.run("status").out
    # a build records it too: content into the cache, then the pin into the lockfile
    raw(tracked, "e\n")
    r = tracked.run("build")
    assert "recorded" in r.out and stages_run(r) == ["prepare", "count"]
    assert tracked.run("status", "--check").code == 0


def test_fresh_clone_reads_then_pulls_and_runs_nothing(tracked, tmp_path):
    remote = str(tmp_path / "remote")
    assert tracked.run("push", "--remote", remote).code == 0
    other = clone(tracked)
    assert not (other.root / "data" / "raw").exists()
    st = other.run("status")
    assert st.code == 0, st.err
    assert "missing: data/raw (tracked source; reprobuild pull)" in st.out
    assert other.run("status", "--check").code == 1
    for cmd in (("dag",), ("lineage", "count.txt"), ("metrics", "show"), ("diff",)):
        r = other.run(*cmd)
        assert r.code == 0, (cmd, r.err)
    assert "data/raw" in other.run("lineage", "count.txt").out
    r = other.run("pull", "--remote", remote)
    assert r.code == 0, r.err
    assert other.read("data/raw/a.csv") == "c\nb\na\n"
    r = other.run("build")
    assert stages_run(r) == [] and stages_restored(r) == []
    assert git(other.root, "status", "--porcelain") == ""


def test_build_pull_restores_sources_first(tracked, tmp_path):
    remote = str(tmp_path / "remote")
    assert tracked.run("push", "--remote", remote).code == 0
    other = clone(tracked)
    r = other.run("build", "--pull", "--remote", remote)
    assert r.code == 0, r.err
    assert stages_run(r) == []
    assert sorted(stages_restored(r)) == ["count", "data/raw", "prepare"]  # the source first
    assert other.read("count.txt").strip() == "4"


def test_missing_source_fails_its_stages_with_the_reason(tracked):
    other = clone(tracked)
    r = other.run("build")
    assert r.code == 1
    assert "missing: data/raw (tracked source; reprobuild pull)" in r.out + r.err


def test_pull_target_fetches_its_own_outputs_unless_with_deps(tracked, tmp_path):
    remote = str(tmp_path / "remote")
    assert tracked.run("push", "--remote", remote).code == 0
    other = clone(tracked)
    assert other.run("pull", "count", "--remote", remote).code == 0
    assert (other.root / "count.txt").is_file()
    assert not (other.root / "prepared.txt").exists()
    assert not (other.root / "data" / "raw").exists()
    assert other.run("pull", "count", "--with-deps", "--remote", remote).code == 0
    assert (other.root / "prepared.txt").is_file() and (other.root / "data/raw/b.csv").is_file()
    third = clone(tracked, "third")
    assert third.run("pull", "data/raw", "--remote", remote).code == 0
    assert (third.root / "data/raw/a.csv").is_file() and not (third.root / "count.txt").exists()


def test_checkout_rev_brings_back_older_raw_data(tracked):
    raw(tracked, "new\n")
    assert tracked.run("build").code == 0
    tracked.commit_all("data v2")
    assert tracked.run("checkout", "--rev", "HEAD~1").code == 0
    assert tracked.read("data/raw/a.csv") == "c\nb\na\n"
    assert tracked.read("count.txt").strip() == "4"
    assert tracked.run("checkout").code == 0
    assert tracked.read("data/raw/a.csv") == "new\n"


def test_pull_rev_brings_an_older_revision_into_a_fresh_clone(tracked, tmp_path):
    remote = str(tmp_path / "remote")
    assert tracked.run("push", "--remote", remote).code == 0  # v1
    raw(tracked, "new\n")
    assert tracked.run("build").code == 0
    tracked.commit_all("data v2")
    assert tracked.run("push", "--remote", remote).code == 0
    other = clone(tracked)  # at v2, with an empty cache
    r = other.run("pull", "--rev", "HEAD~1", "--remote", remote)
    assert r.code == 0, r.err
    assert other.read("data/raw/a.csv") == "c\nb\na\n"
    assert other.read("count.txt").strip() == "4"
    assert other.run("pull", "--rev", "no-such-rev", "--remote", remote).code == 2


def test_gc_keeps_tracked_sources(tracked):
    r = tracked.run("gc")
    assert r.code == 0, r.err
    shutil.rmtree(tracked.root / "data" / "raw")
    assert tracked.run("checkout").code == 0
    assert tracked.read("data/raw/a.csv") == "c\nb\na\n"


def test_add_refuses_outs_and_paths_outside(tracked):
    r = tracked.run("add", "count.txt")
    assert r.code == 2 and "is an out of stage 'count'" in r.err
    r = tracked.run("add", "../elsewhere")
    assert r.code == 2 and "not inside" in r.err
    r = tracked.run("add", "nothing-here")
    assert r.code == 2 and "does not exist" in r.err


def test_add_refuses_what_git_tracks_and_writes_nothing(tracked):
    """As DVC does: one owner per path, or git keeps committing what the cache holds."""
    tracked.write({"notes/a.csv": "x,y\n1,2\n", "notes/b.csv": "x\n"})
    git(tracked.root, "add", "notes/a.csv")
    before = tracked.read("reprobuild.yaml"), tracked.read("reprobuild.lock")
    r = tracked.run("add", "notes")
    assert r.code == 2 and "'notes' is tracked by git" in r.err
    assert "git rm -r --cached notes" in r.err
    assert (tracked.read("reprobuild.yaml"), tracked.read("reprobuild.lock")) == before
    git(tracked.root, "rm", "-r", "-q", "--cached", "notes")
    assert tracked.run("add", "notes").code == 0


def test_gitignore_block_follows_the_pipeline_and_spares_hand_lines(tracked):
    tracked.write({"data/.gitignore": "# mine\n*.tmp\n" + tracked.read("data/.gitignore")})
    text = tracked.read("reprobuild.yaml").replace("  - data/raw\n", "")
    text = text.replace("sources:\n", "")
    tracked.write({"reprobuild.yaml": text})
    assert tracked.run("build").code != 2
    assert tracked.read("data/.gitignore") == "# mine\n*.tmp\n"
    assert "sources" not in lock(tracked)


# -- imports -------------------------------------------------------------------------


@pytest.fixture
def http_origin(tmp_path):
    """A local http.server serving tmp_path/www on loopback."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


IMPORT_PIPE = {
    "reprobuild.yaml": """\
        stages:
          use:
            cmd: cat data/rates.csv > used.txt
            deps: [data/rates.csv]
            outs: [used.txt]
        """
}


def test_import_from_http_then_update_then_pinned_version_gone(ws, http_origin, tmp_path):
    www, base = http_origin
    (www / "rates.csv").write_text("eur,1.0\n")
    ws.write(IMPORT_PIPE)
    r = ws.run("import", f"{base}/rates.csv", "data/rates.csv")
    assert r.code == 0, r.err
    assert ws.read("data/rates.csv") == "eur,1.0\n"
    entry = lock(ws)["sources"]["data/rates.csv"]
    assert entry["url"] == f"{base}/rates.csv" and entry["size"] == 8
    assert f'- data/rates.csv: {{url: "{base}/rates.csv"}}' in ws.read("reprobuild.yaml")
    assert ws.run("build").code == 0
    ws.commit_all("imported")

    assert ws.run("update").out.startswith("up to date: data/rates.csv")
    (www / "rates.csv").write_text("eur,1.1\n")
    r = ws.run("update", "data/rates.csv")
    assert r.code == 0 and "updated data/rates.csv: source changed" in r.out
    assert ws.read("data/rates.csv") == "eur,1.1\n"
    assert stages_run(ws.run("build")) == ["use"]

    # a clone with no caches: the origin's current bytes are not the pinned ones
    other = clone(ws)  # the committed, older pin
    (tmp_path / "empty-remote").mkdir()
    r = other.run("pull", "--remote", str(tmp_path / "empty-remote"))
    assert r.code != 0
    assert f"{base}/rates.csv no longer has the version pinned for data/rates.csv" in r.err


def test_import_from_a_versioned_s3_bucket(ws, s3_bucket, s3_env, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=s3_bucket, Key="rates.csv", Body=b"eur,1.0\n")
    ws.write(IMPORT_PIPE)
    url = f"s3://{s3_bucket}/rates.csv"
    r = ws.run("import", url, "data/rates.csv")
    assert r.code == 0, r.err
    entry = lock(ws)["sources"]["data/rates.csv"]
    assert entry["version_id"] and entry["etag"]
    ws.commit_all("imported")
    s3.put_object(Bucket=s3_bucket, Key="rates.csv", Body=b"eur,2.0\n")
    # the pinned version is fetched by its version id, not the newer one
    other = clone(ws)
    (tmp_path / "empty-remote").mkdir()
    r = other.run("pull", "--remote", str(tmp_path / "empty-remote"))
    assert r.code == 0, r.err
    assert other.read("data/rates.csv") == "eur,1.0\n"
    # no remote configured at all: the origin still has the pinned version
    bare = clone(ws, "bare")
    r = bare.run("pull")
    assert r.code == 0, r.err
    assert bare.read("data/rates.csv") == "eur,1.0\n"
    r = ws.run("update")
    assert "updated data/rates.csv" in r.out
    assert lock(ws)["sources"]["data/rates.csv"]["version_id"] != entry["version_id"]
    assert ws.read("data/rates.csv") == "eur,2.0\n"


def test_import_of_a_missing_url_names_it(ws, http_origin):
    _, base = http_origin
    ws.write(IMPORT_PIPE)
    r = ws.run("import", f"{base}/nope.csv", "data/rates.csv")
    assert r.code == 1 and f"{base}/nope.csv" in r.err and "Traceback" not in r.err
    assert "sources" not in ws.read("reprobuild.yaml")


def test_status_suggests_tracking_an_untracked_input(ws):
    ws.write(IMPORT_PIPE)
    ws.write({"data/rates.csv": "eur,1.0\n"})
    out = ws.run("status").out
    assert "hint: 'data/rates.csv' is read but neither made by a stage nor tracked" in out
    assert ws.run("add", "data/rates.csv").code == 0
    assert "hint:" not in ws.run("status").out


def test_verify_reruns_on_a_tracked_source_restored_from_the_cache(tracked):
    shutil.rmtree(tracked.root / "data" / "raw")
    r = tracked.run("verify", "prepare")
    assert r.code == 0, r.out + r.err
    assert "reproducible  prepare" in r.out


def test_an_experiment_reads_the_pinned_source_from_the_cache(tracked):
    """The experiment's worktree has no untracked data: its build restores the source."""
    raw(tracked, "edited but not recorded\n")  # the experiment uses the pinned version
    r = tracked.run("exp", "run", "-n", "pinned")
    assert r.code == 0, r.out + r.err
    exp_lock = yaml.safe_load(
        git(tracked.root, "show", "refs/reprobuild/exps/pinned:reprobuild.lock")
    )
    ours = lock(tracked)
    assert exp_lock["sources"] == ours["sources"]
    assert exp_lock["stages"]["count"]["outs"] == ours["stages"]["count"]["outs"]
    assert tracked.read("data/raw/a.csv") == "edited but not recorded\n"  # workspace untouched


def test_an_import_then_more_sources_then_an_import_over_an_added_path(ws, http_origin):
    """The block list's last item is a mapping after an import: the next entry goes after
    it (not into the file's next line); an added path is not silently replaced."""
    www, base = http_origin
    (www / "a.csv").write_text("a\n")
    (www / "b.csv").write_text("b\n")
    ws.write({**IMPORT_PIPE, "data/rates.csv": "local\n", "notes.txt": "n\n"})
    assert ws.run("import", f"{base}/a.csv", "data/a.csv").code == 0
    r = ws.run("import", f"{base}/b.csv", "data/b.csv")
    assert r.code == 0, r.err
    assert ws.run("add", "notes.txt").code == 0
    declared = yaml.safe_load(ws.read("reprobuild.yaml"))["sources"]
    assert declared == [
        {"data/a.csv": {"url": f"{base}/a.csv"}},
        {"data/b.csv": {"url": f"{base}/b.csv"}},
        "notes.txt",
    ]
    assert ws.run("add", "data/rates.csv").code == 0
    r = ws.run("import", f"{base}/a.csv", "data/rates.csv")
    assert r.code == 2 and "already a tracked source (added)" in r.err
    assert ws.read("data/rates.csv") == "local\n"
    r = ws.run("update", "data/rates.csv")
    assert r.code == 2 and "added, not imported" in r.err
    r = ws.run("update")  # every import; added sources are not mentioned
    assert r.code == 0 and "data/rates.csv" not in r.out and "up to date: data/a.csv" in r.out


def test_two_pipelines_in_one_folder_keep_their_own_gitignore_blocks(ws):
    ws.write(
        {
            "reprobuild.yaml": "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n",
            "other.yaml": "stages:\n  b:\n    cmd: echo b > b.txt\n    outs: [b.txt]\n",
        }
    )
    assert ws.run("build").code == 0
    assert ws.run("-f", "other.yaml", "build").code == 0
    assert ws.run("build").code == 0
    text = ws.read(".gitignore")
    assert "/a.txt" in text and "/b.txt" in text
    ws.commit_all("both")
    assert git(ws.root, "status", "--porcelain") == ""


def test_lineage_of_a_tracked_source_is_its_pin(tracked):
    r = tracked.run("lineage", "data/raw")
    assert r.code == 0 and "data/raw  tracked source" in r.out and "2 files" in r.out
    r = tracked.run("lineage", "data/raw", "--json")
    assert r.code == 0 and '"nfiles": 2' in r.out


def test_a_declared_source_that_is_nowhere_is_said_by_build(ws):
    ws.write({**IMPORT_PIPE, "data/rates.csv": "x\n", "extra.csv": "e\n"})
    assert ws.run("add", "data/rates.csv", "extra.csv").code == 0
    ws.commit_all("tracked")
    other = clone(ws)
    r = other.run("build")  # no cache, no remote: neither source can be had
    assert r.code == 1
    assert "missing: extra.csv (tracked source; reprobuild pull)" in r.err  # no stage reads it


def test_import_of_a_shared_folder_then_update(ws, tmp_path):
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "a.csv").write_text("a\n")
    (shared / "sub" / "b.csv").write_text("b\n")
    ws.write({"reprobuild.yaml": "stages: {}\n"})
    assert ws.run("import", str(shared), "data/shared").code == 0
    assert ws.read("data/shared/sub/b.csv") == "b\n"
    entry = lock(ws)["sources"]["data/shared"]
    assert entry["nfiles"] == 2 and entry["etag"].startswith("folder:")
    assert ws.run("update").out.startswith("up to date: data/shared")
    (shared / "c.csv").write_text("c\n")
    assert "updated data/shared" in ws.run("update").out
    assert lock(ws)["sources"]["data/shared"]["nfiles"] == 3


def many_files(ws) -> dict:
    from reprobuild.cache import STORE_IN_PROCESSES_AT

    files = {
        f"data/big/d{i % 13}/f{i}.txt": f"row {i % 1700}\n"
        for i in range(STORE_IN_PROCESSES_AT + 50)
    }
    ws.write({"reprobuild.yaml": "stages: {}\n", **files})
    (ws.root / "data/big/d0/f0.txt").chmod(0o755)
    return files


def test_add_of_a_many_file_folder_in_several_processes_round_trips(ws):
    """Past cache.STORE_IN_PROCESSES_AT files, `add` (its own process, one thread) stores
    the folder from forked processes: every byte and mode comes back through checkout."""
    files = many_files(ws)
    r = ws.run_process("add", "data/big")
    assert r.returncode == 0, r.stderr
    assert f"({len(files):,} files" in r.stdout
    st = ws.run_process("status", "--check")
    assert st.returncode == 0, st.stdout
    shutil.rmtree(ws.root / "data/big")
    assert ws.run_process("checkout").returncode == 0
    assert {p: ws.read(p) for p in files} == files
    assert (ws.root / "data/big/d0/f0.txt").stat().st_mode & 0o111


@pytest.mark.parametrize(
    "fault, code, message",
    [
        ("enospc@object:tmp-written", 2, "error: No space left on device"),
        ("object:tmp-written", 2, "a process doing it was killed"),  # SIGKILL, in a child
        ("sigint@object:tmp-written", 130, "error: interrupted"),  # Ctrl-C, from a child
    ],
)
def test_add_whose_store_process_fails_says_so_and_changes_nothing(ws, fault, code, message):
    many_files(ws)
    env = {**os.environ, "REPROBUILD_FAULT": fault}
    # its own session: the Ctrl-C reaches its process group, not this test's
    r = ws.run_process("add", "data/big", env=env, start_new_session=True, timeout=120)
    assert r.returncode == code and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert ws.read("reprobuild.yaml") == "stages: {}\n"
    assert not (ws.root / "reprobuild.lock").exists()
    assert git(ws.root, "status", "--porcelain", "--untracked-files=no") == ""
