"""Remote speed benchmark (issue: a shared remote cache). Prints a table; asserts nothing.

    python benchmarks/bench_remote.py [--small 1000] [--small-kib 4] [--big-gib 1] [--repeat 1] [--jobs 16]
                                      [--no-aws] [--aws PATH]
    python benchmarks/bench_remote.py --small 10000 --small-kib 1 --repeat 3  # issue 15's rows

The aws CLI is not a dependency: install it aside (`python3 -m venv /tmp/aws &&
/tmp/aws/bin/pip install awscli`) and give `--aws /tmp/aws/bin/aws`, or have
`aws` on PATH.

Against an S3 server on loopback (moto's server mode, in a process of its own
so that it does not share the GIL of the client being measured), in one run:
- `reprobuild push` of N small objects (a folder out) to an empty prefix, a
  no-op push (existence checks only), and `reprobuild pull` into an empty
  cache (downloads, verification, and checkout into the workspace);
- the same files with s3fs at its best (one batched `put`/`get` call:
  asyncio, every file in flight), and with `aws s3 sync --endpoint-url` when
  the aws CLI works;
- the same for one large object (default 1 GiB): `reprobuild push/pull` against
  s3fs `put_file`/`get_file` and `aws s3 cp`, the best of `--repeat` runs.
Every figure is the wall time of a fresh process, as a user runs it (so each
includes interpreter start-up and imports). The server is moto, not S3: the
numbers compare the clients, not what a real bucket sustains. On a shared
machine a best-of-N moves with the load; bench_push_ab.py compares a 1 GiB push
with aws s3 cp in interleaved rounds (medians, CPU of client and server).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEN_SMALL = """\
import os, sys, random
n, kib = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
for i in range(n):
    d = f"small/{i % 32:02d}"
    os.makedirs(d, exist_ok=True)
    open(f"{d}/{i}.bin", "wb").write(rng.randbytes(rng.randint(kib * 512, kib * 1536)))
"""

GEN_BIG = """\
import os, sys
left = int(float(sys.argv[1]) * 2**30)
with open("big.bin", "wb") as f:
    while left > 0:
        chunk = os.urandom(min(left, 64 * 2**20))
        f.write(chunk)
        left -= len(chunk)
"""

S3FS_PUT = """\
import sys, os, s3fs
src, dest = sys.argv[1], sys.argv[2]
fs = s3fs.S3FileSystem()
if os.path.isdir(src):
    local = sorted(str(p) for p in __import__("pathlib").Path(src).rglob("*") if p.is_file())
    fs.put(local, [dest + "/" + os.path.relpath(p, src) for p in local])
else:
    fs.put_file(src, dest)
"""

S3FS_GET = """\
import sys, os, s3fs
src, dest = sys.argv[1], sys.argv[2]
fs = s3fs.S3FileSystem()
remote = fs.find(src)
if len(remote) == 1 and remote[0] == src:
    fs.get_file(src, dest)
else:
    fs.get(remote, [os.path.join(dest, os.path.relpath(p, src)) for p in remote])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(endpoint: str) -> dict:
    """The environment every client runs with: the server's endpoint, its credentials."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    env.pop("AWS_PROFILE", None)
    return env


def make_bucket(env: dict, name: str = "bench") -> None:
    """The bucket the runs push to, on the server `env` points at."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ).create_bucket(Bucket=name)


def start_server(port: int, *args: str) -> subprocess.Popen:
    """moto's server on loopback (`args`: more of its options, e.g. a certificate)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto server did not start")


def timed(cmd, cwd, env) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    return dt


def aws_works(env, aws: str) -> bool:
    if shutil.which(aws) is None:
        return False
    proc = subprocess.run(
        [aws, "s3", "ls", "--endpoint-url", env["AWS_ENDPOINT_URL"]], env=env, capture_output=True
    )
    return proc.returncode == 0


def wipe(env, prefix: str) -> None:
    """Delete every object under s3://bench/prefix (the server keeps them in memory)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket="bench", Delete={"Objects": keys})


def rate(n_files: int, nbytes: int, seconds: float) -> str:
    return f"{seconds:7.2f} s  {n_files / seconds:8.0f} obj/s  {nbytes / seconds / 1e6:8.1f} MB/s"


def size(path: Path) -> int:
    return path.stat().st_size


def size_of(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench(root: Path, env: dict, args) -> list[tuple[str, str]]:
    rb = [sys.executable, "-m", "reprobuild"]
    py = [sys.executable, "-c"]
    ep = ["--endpoint-url", env["AWS_ENDPOINT_URL"]]
    ws = root / "ws"
    ws.mkdir()
    (ws / "gen_small.py").write_text(GEN_SMALL)
    (ws / "gen_big.py").write_text(GEN_BIG)
    (ws / "reprobuild.yaml").write_text(
        "stages:\n"
        f"  small:\n    cmd: python gen_small.py {args.small} {args.small_kib}\n    outs: [small/]\n"
        f"  big:\n    cmd: python gen_big.py {args.big_gib}\n    outs: [big.bin]\n"
    )
    timed(rb + ["build", "-q"], ws, env)
    n_small, b_small = size_of(ws / "small")
    b_big = (ws / "big.bin").stat().st_size
    jobs = ["-j", str(args.jobs)]
    use_aws = not args.no_aws and aws_works(env, args.aws)
    aws = args.aws
    rows = []

    # -- small objects
    label = f"{n_small} small objects ({b_small / 1e6:.1f} MB)"
    rows.append(
        (
            f"push {label}",
            rate(
                n_small,
                b_small,
                timed(rb + ["push", "small", "--remote", "s3://bench/rb-small"] + jobs, ws, env),
            ),
        )
    )
    noop = timed(rb + ["push", "small", "--remote", "s3://bench/rb-small"] + jobs, ws, env)
    rows.append(("  no-op push (all there)", f"{noop:7.2f} s"))
    rows.append(
        (
            "  s3fs batched put",
            rate(
                n_small,
                b_small,
                timed(py + [S3FS_PUT, str(ws / "small"), "bench/s3fs-small"], ws, env),
            ),
        )
    )
    if use_aws:
        rows.append(
            (
                "  aws s3 sync (upload)",
                rate(
                    n_small,
                    b_small,
                    timed(
                        [aws, "s3", "sync", "--quiet", str(ws / "small"), "s3://bench/aws-small"]
                        + ep,
                        ws,
                        env,
                    ),
                ),
            )
        )
    shutil.rmtree(ws / "small")
    rows.append(
        (
            f"pull {label} (+ checkout)",
            rate(
                n_small,
                b_small,
                timed(
                    rb
                    + [
                        "--cache-dir",
                        str(root / "cache-a"),
                        "pull",
                        "small",
                        "--remote",
                        "s3://bench/rb-small",
                    ]
                    + jobs,
                    ws,
                    env,
                ),
            ),
        )
    )
    rows.append(
        (
            "  s3fs batched get",
            rate(
                n_small,
                b_small,
                timed(py + [S3FS_GET, "bench/s3fs-small", str(root / "s3fs-small")], ws, env),
            ),
        )
    )
    if use_aws:
        rows.append(
            (
                "  aws s3 sync (download)",
                rate(
                    n_small,
                    b_small,
                    timed(
                        [
                            aws,
                            "s3",
                            "sync",
                            "--quiet",
                            "s3://bench/aws-small",
                            str(root / "aws-small"),
                        ]
                        + ep,
                        ws,
                        env,
                    ),
                ),
            )
        )

    # -- one large object: best of --repeat runs, as a shared machine's load varies from run
    # to run; each run starts from an empty server (the last run's uploads deleted) and
    # rotates which client goes first
    label = f"1 object of {b_big / 2**30:.2f} GiB"
    cache_b = root / "cache-b"
    # every client uploads the same file, reprobuild's cache object, so that they find it
    # alike in the page cache (the workspace copy is replaced by each pull)
    source = max((p for p in (ws / "cache" / "objects").rglob("*") if p.is_file()), key=size)
    pushes = {
        f"push {label}": rb + ["push", "big", "--remote", "s3://bench/rb-big"] + jobs,
        "  s3fs put_file": py + [S3FS_PUT, str(source), "bench/s3fs-big"],
    }
    pulls = {
        f"pull {label} (+ checkout)": rb
        + ["--cache-dir", str(cache_b), "pull", "big", "--remote", "s3://bench/rb-big"]
        + jobs,
        "  s3fs get_file": py + [S3FS_GET, "bench/s3fs-big", str(root / "s3fs-big")],
    }
    if use_aws:
        pushes["  aws s3 cp (upload)"] = [
            aws,
            "s3",
            "cp",
            "--quiet",
            str(source),
            "s3://bench/aws-big",
        ] + ep
        pulls["  aws s3 cp (download)"] = [
            aws,
            "s3",
            "cp",
            "--quiet",
            "s3://bench/aws-big",
            str(root / "aws-big"),
        ] + ep
    best: dict[str, float] = {}
    for run in range(args.repeat):
        for prefix in ("rb-big", "s3fs-big", "aws-big"):
            wipe(env, prefix)
        for group in (pushes, pulls):
            names = list(group)
            for name in names[run % len(names) :] + names[: run % len(names)]:
                if name.startswith("pull"):  # into an empty cache, the workspace file gone
                    shutil.rmtree(cache_b, ignore_errors=True)
                    (ws / "big.bin").unlink(missing_ok=True)
                seconds = timed(group[name], ws, env)
                best[name] = min(best.get(name, seconds), seconds)
    rows += [(name, rate(1, b_big, best[name])) for group in (pushes, pulls) for name in group]
    if not use_aws:
        rows.append(("(aws CLI absent or not working: its rows skipped)", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=1000, help="number of small objects")
    ap.add_argument("--small-kib", type=int, default=4, help="their mean size in KiB")
    ap.add_argument("--big-gib", type=float, default=1.0, help="size of the large object in GiB")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of the large-object rows (best is shown)"
    )
    ap.add_argument("--jobs", type=int, default=16, help="reprobuild push/pull -j")
    ap.add_argument("--no-aws", action="store_true", help="skip the aws CLI rows")
    ap.add_argument("--aws", default="aws", help="the aws CLI to compare with (default: on PATH)")
    args = ap.parse_args()
    port = free_port()
    server = start_server(port)
    env = client_env(f"http://127.0.0.1:{port}")
    try:
        make_bucket(env)
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench(Path(tmp), env, args)
    finally:
        server.terminate()
        server.wait(timeout=30)
    width = max(len(r[0]) for r in rows)
    print(
        f"remote benchmark: moto S3 server on 127.0.0.1, {os.cpu_count()} CPUs, "
        f"reprobuild -j {args.jobs}, large object: best of {args.repeat}"
    )
    if not args.no_aws and shutil.which(args.aws):
        version = subprocess.run([args.aws, "--version"], capture_output=True, text=True)
        print(f"compared with {(version.stdout or version.stderr).strip()}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
