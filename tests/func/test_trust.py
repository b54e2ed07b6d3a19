"""Signed run records: a poisoned remote cannot make `build --pull` or `pull` restore its bytes.

Against a folder remote and the S3 server on loopback (`remote_url`). CI
builds, commits the lockfile and pushes signed; an attacker with write access
to the remote rewrites the run record to name their own, validly hashed
object. A fresh clone that trusts CI's key must run the stage instead.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from reprobuild import signature
from reprobuild.hashing import hash_bytes
from tests.conftest import Workspace, git, stages_restored, stages_run
from tests.s3server import remote_files, remote_fs

pytest.importorskip("fsspec", reason="remotes need fsspec (pip install -e '.[test]')")
pytest.importorskip("cryptography", reason="signing needs cryptography (reprobuild[trust])")

EVIL = b"model of the attacker\n"


def pipeline(public: str | None) -> dict:
    keys = f"trusted_keys: [{public}]\n" if public else ""
    return {
        "reprobuild.yaml": keys + "stages:\n  train:\n    cmd: tr a-z A-Z < data.txt > model.txt\n"
        "    deps: [data.txt]\n    outs: [model.txt]\n",
        "data.txt": "hello\n",
        ".gitignore": "model.txt\n",
    }


def make_key(ws: Workspace, name: str):
    folder = ws.root.parent / "keys"
    r = ws.run("key", "generate", "--name", name, "--out", str(folder))
    assert r.code == 0, r.err
    line = next(ln for ln in r.out.splitlines() if ln.startswith("trusted_keys: ["))
    return folder / f"{name}.key", line[len("trusted_keys: [") : -1]


def clone(ws: Workspace, name: str) -> Workspace:
    target = ws.root.parent / name
    git(ws.root.parent, "clone", "-q", str(ws.root), str(target))
    return Workspace(target, ws.capsys)


def record_path(url: str, key: str) -> str:
    return f"{remote_fs(url)[1]}/runs/{key[:2]}/{key[2:]}"


def poison(url: str, key: str, signature_of=None) -> None:
    """Upload the attacker's object and point the remote run record at it.

    `signature_of`: None drops the signature, "keep" keeps the old one (a tampered
    record), or a SigningKey signs the poisoned record with it."""
    fs, root = remote_fs(url)
    digest = hash_bytes(EVIL)
    fs.makedirs(f"{root}/objects/{digest[:2]}", exist_ok=True)
    fs.pipe_file(f"{root}/objects/{digest[:2]}/{digest[2:]}", EVIL)
    doc = json.loads(fs.cat_file(record_path(url, key)))
    doc["outs"]["model.txt"] = {"hash": digest, "size": len(EVIL), "mode": 0o644}
    if signature_of is None:
        doc.pop("signature", None)
    elif signature_of != "keep":
        doc["signature"] = signature_of.sign(key, doc["stage"], doc["outs"])
    fs.pipe_file(record_path(url, key), json.dumps(doc).encode())


@pytest.fixture
def ci(ws, remote_url, monkeypatch):
    """CI: its key trusted by the pipeline, built, committed, pushed signed."""
    secret, public = make_key(ws, "ci")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    ws.write(pipeline(public))
    assert ws.run("build").code == 0
    ws.commit_all("built")
    monkeypatch.setenv("REPROBUILD_SIGNING_KEY", str(secret))
    r = ws.run("push", "--remote", remote_url)
    assert r.code == 0 and "1 signed run records" in r.out, r.out + r.err
    monkeypatch.delenv("REPROBUILD_SIGNING_KEY")
    key = list(remote_files(remote_url, "runs"))[0].replace("/", "")
    return ws, remote_url, key, secret


def test_a_fresh_clone_with_the_ci_signed_remote_runs_nothing(ci):
    ws, url, key, _ = ci
    doc = json.loads(remote_fs(url)[0].cat_file(record_path(url, key)))
    assert doc["signature"]["key"].startswith("ed25519:")
    other = clone(ws, "dev")
    r = other.run("build", "--pull", "--remote", url)
    assert r.code == 0, r.err
    assert stages_run(r) == [] and stages_restored(r) == ["train"]
    assert other.read("model.txt") == "HELLO\n"


@pytest.mark.parametrize("how", ["unsigned", "untrusted key", "tampered"])
def test_a_poisoned_record_is_refused_and_the_stage_runs(ci, how, tmp_path):
    ws, url, key, _ = ci
    if how == "unsigned":
        poison(url, key, None)
        why = "unsigned"
    elif how == "untrusted key":
        signature.generate("attacker", tmp_path / "evil-keys")
        poison(url, key, signature.load_signing_key(tmp_path / "evil-keys/attacker.key"))
        why = "signed by an untrusted key"
    else:
        poison(url, key, "keep")  # CI's signature, the attacker's object
        why = "bad signature (tampered)"
    other = clone(ws, "dev")
    r = other.run("build", "--pull", "--remote", url)
    assert r.code == 0, r.err
    assert stages_run(r) == ["train"] and stages_restored(r) == []
    assert other.read("model.txt") == "HELLO\n"
    assert f"not trusted, not used: train ({why}): run record {key}" in r.err
    local = json.loads((other.root / "cache/runs" / key[:2] / key[2:]).read_text())
    assert local["outs"]["model.txt"]["hash"] != hash_bytes(EVIL)  # its own run, not the attacker's
    assert not (other.root / "cache/objects" / hash_bytes(EVIL)[:2]).exists()


def test_pull_never_stores_an_untrusted_record(ci):
    ws, url, key, _ = ci
    poison(url, key, None)
    other = clone(ws, "dev")
    r = other.run("pull", "--remote", url)
    assert f"not trusted, not used: train (unsigned): run record {key}" in r.err
    assert not (other.root / "cache/runs" / key[:2] / key[2:]).exists()
    # the lockfile (from git) still names CI's object, so checkout restores the right bytes
    assert other.read("model.txt") == "HELLO\n"


def unsigned_then_poisoned(ws, remote_url):
    """An unsigned build pushed, its remote record then poisoned; a fresh clone."""
    ws.write(pipeline(None))
    ws.run("build")
    ws.commit_all("built")
    ws.run("push", "--remote", remote_url)
    key = list(remote_files(remote_url, "runs"))[0].replace("/", "")
    poison(remote_url, key, None)
    return clone(ws, "dev")


def test_without_trusted_keys_a_poisoned_record_is_used(ws, remote_url):
    """What the signatures prevent: the remote's word is taken without them."""
    other = unsigned_then_poisoned(ws, remote_url)
    r = other.run("build", "--pull", "--remote", remote_url)
    assert stages_restored(r) == ["train"] and other.read("model.txt") == EVIL.decode()


def test_a_record_pulled_before_keys_were_trusted_is_not_used_after(ws, remote_url):
    """Records this machine made stay trusted; a pulled one only while it is signed."""
    secret, public = make_key(ws, "ci")
    other = unsigned_then_poisoned(ws, remote_url)
    assert stages_restored(other.run("build", "--pull", "--remote", remote_url)) == ["train"]
    assert other.read("model.txt") == EVIL.decode()  # no keys yet: the poison got in
    other.write(pipeline(public))  # the team adopts signing
    (other.root / "model.txt").unlink()
    r = other.run("build")  # no remote at all: the pulled record in the local cache is not used
    assert stages_run(r) == ["train"] and other.read("model.txt") == "HELLO\n"
    (other.root / "model.txt").unlink()
    r = other.run("build")  # the record it made itself is used
    assert stages_restored(r) == ["train"] and other.read("model.txt") == "HELLO\n"


def test_trusted_keys_from_the_environment(ws, remote_url, monkeypatch):
    secret, public = make_key(ws, "ci")
    ws.write(pipeline(None))
    ws.run("build")
    ws.commit_all("built")
    ws.run("push", "--remote", remote_url)  # unsigned
    monkeypatch.setenv("REPROBUILD_TRUSTED_KEYS", public)
    other = clone(ws, "dev")
    r = other.run("build", "--pull", "--remote", remote_url)
    assert stages_run(r) == ["train"] and "train (unsigned)" in r.err
    # a signed push replaces the unsigned copy; then a clone restores
    r = ws.run("push", "--remote", remote_url, "--sign-key", str(secret))
    assert "1 signed run records" in r.out, r.out + r.err
    third = clone(ws, "dev2")
    r = third.run("build", "--pull", "--remote", remote_url)
    assert stages_restored(r) == ["train"] and stages_run(r) == []


def test_malformed_trusted_key_names_file_and_line(ws):
    ws.write(pipeline(None))
    ws.write(
        {"reprobuild.yaml": "trusted_keys:\n  - ed25519:AAAA\n" + pipeline(None)["reprobuild.yaml"]}
    )
    r = ws.run("status")
    assert r.code == 2
    assert "reprobuild.yaml:2:" in r.err and "trusted key 'ed25519:AAAA'" in r.err


def test_key_generate_refuses_to_overwrite_and_keeps_the_secret_private(ws, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(ws.root.parent / "config"))
    r = ws.run("key", "generate", "--name", "laptop")
    assert r.code == 0, r.err
    folder = ws.root.parent / "config/reprobuild/keys"
    assert stat.S_IMODE(os.stat(folder / "laptop.key").st_mode) == 0o600
    public = (folder / "laptop.pub").read_text().split()[0]
    assert f"trusted_keys: [{public}]" in r.out
    signature.parse_public(public)
    again = ws.run("key", "generate", "--name", "laptop")
    assert again.code == 2 and "not overwriting" in again.err
    bad = ws.root.parent / "bad.key"
    bad.write_text("not a key\n")
    ws.write(pipeline(None))
    r = ws.run("push", "--remote", str(ws.root.parent), "--sign-key", str(bad))
    assert r.code == 2 and "not a reprobuild key file" in r.err and "Traceback" not in r.err
