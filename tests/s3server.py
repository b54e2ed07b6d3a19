"""A real S3-compatible server on loopback for the remote tests, and remote helpers.

moto's server mode (`ThreadedMotoServer`), as s3fs's own test suite uses it:
one server per test session on 127.0.0.1 and a free port, a fresh bucket per
test. s3fs reaches it through botocore's `AWS_ENDPOINT_URL` (read when a
client is made, unlike fsspec's FSSPEC_S3_ENDPOINT_URL, which fsspec reads
once at import). Credentials are dummies, and AWS_CONFIG_FILE /
AWS_SHARED_CREDENTIALS_FILE point nowhere so a developer's own ~/.aws never
takes part. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import uuid

import pytest

S3_PACKAGES = (
    "fsspec",
    "s3fs",
    "moto",
    "boto3",
    "flask",
    "flask_cors",
)  # flask*: moto's server mode


def missing_s3_packages() -> str | None:
    """Why the S3 tests cannot run here, or None."""
    absent = [name for name in S3_PACKAGES if importlib.util.find_spec(name) is None]
    if absent:
        return (
            f"S3 remote tests need {', '.join(absent)} (pip install -e '.[test]', "
            f"which brings s3fs and moto[server])"
        )
    return None


@pytest.fixture(scope="session")
def s3_endpoint():
    """http://127.0.0.1:PORT of a moto S3 server living for the whole session."""
    reason = missing_s3_packages()
    if reason:
        pytest.skip(reason)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(
        logging.ERROR
    )  # one line per request otherwise, into captured stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A new, empty bucket on the loopback server."""
    import boto3

    name = f"rb-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["folder", "s3"])
def remote_url(request, tmp_path) -> str:
    """A folder remote, and an S3 remote on the loopback server."""
    if request.param == "folder":
        path = tmp_path / "team-remote"
        path.mkdir()
        return str(path)
    return f"s3://{request.getfixturevalue('s3_bucket')}/team/cache"


# -- looking at a remote from outside ------------------------------------------------


def remote_fs(url: str):
    """(filesystem, root) of a remote URL, a fresh instance (no cached listings)."""
    import fsspec.core

    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, root.rstrip("/")


def remote_files(url: str, under: str) -> dict[str, str]:
    """{name relative to `under`: full path} of every file below URL/under."""
    fs, root = remote_fs(url)
    base = f"{root}/{under}"
    try:
        found = fs.find(base)
    except FileNotFoundError:
        return {}
    return {p[len(base) + 1 :]: p for p in (str(x) for x in found)}


def assert_remote_usable(url: str) -> int:
    """Every run record on the remote has all its objects (manifest files included); how many records."""
    fs, root = remote_fs(url)
    objects = set(remote_files(url, "objects"))
    records = remote_files(url, "runs")
    for name, path in records.items():
        doc = json.loads(fs.cat_file(path))
        for out, meta in doc["outs"].items():
            h = meta["hash"]
            if meta.get("nfiles") is None:
                assert f"{h[:2]}/{h[2:]}" in objects, f"run record {name} names {out}, absent"
                continue
            assert f"{h[:2]}/{h[2:]}.dir" in objects, (
                f"run record {name} names {out}/, manifest absent"
            )
            for e in json.loads(fs.cat_file(f"{root}/objects/{h[:2]}/{h[2:]}.dir")):
                assert f"{e['hash'][:2]}/{e['hash'][2:]}" in objects, f"{out}/{e['path']} absent"
    return len(records)
