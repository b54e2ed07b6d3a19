"""Interleaved A/B of a 1 GiB push: `reprobuild push` against `aws s3 cp`, same server, same file.

    python benchmarks/bench_push_ab.py --aws PATH/TO/aws [--rounds 7] [--gib 1]
        [--variant NAME='python code run before reprobuild's main']...

One moto server on loopback (its own process). Each round makes a fresh object
(a new random file built into an empty cache), then pushes that cache object with
every contender, one fresh process each, in an order that rotates from round to
round, and deletes the uploads before the next round. A round is taken as a
whole, so the machine's load (shared with other jobs) falls on every contender
alike; the medians and the minimum over the rounds are the figures to compare.

With --https the server speaks TLS with a certificate made for the run
(AWS_CA_BUNDLE points both clients at it): there botocore sends a part's CRC32
in a trailer and hashes no body for SigV4, as against S3 itself.

For each run: wall-clock MB/s, the client's CPU seconds (getrusage of children:
user + system) and the server's (from /proc). A variant is reprobuild with some
code run first, e.g. `--variant in8='import reprobuild.transfer as t;
t.IN_FLIGHT = 8'`, to compare settings without editing the module.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_remote import client_env, free_port, make_bucket, start_server, wipe  # noqa: E402

GEN = """\
import os, sys
left = int(float(sys.argv[1]) * 2**30)  # sys.argv[2], the round, only makes the stage run again
with open("big.bin", "wb") as f:
    while left > 0:
        chunk = os.urandom(min(left, 64 * 2**20))
        f.write(chunk)
        left -= len(chunk)
"""

RUN_MAIN = "import sys; from reprobuild.cli.main import main; sys.argv[0] = 'reprobuild'; "


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def start_tls_server(port: int, cert: Path, key: Path) -> subprocess.Popen:
    return start_server(port, "-c", str(cert), "-k", str(key))


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, cwd, env, server: int) -> tuple[float, float, float]:
    """Wall seconds, client CPU seconds, server CPU seconds of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = cpu_of(server)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    s1 = cpu_of(server)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, s1 - s0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8, help="even: each goes first as often")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the object in GiB")
    ap.add_argument("--aws", default="aws", help="the aws CLI (default: on PATH)")
    ap.add_argument("--no-aws", action="store_true", help="compare variants only")
    ap.add_argument("--no-base", action="store_true", help="leave out plain reprobuild")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=CODE")
    ap.add_argument("--https", action="store_true", help="the server speaks TLS")
    args = ap.parse_args()
    port = free_port()
    certs = tempfile.TemporaryDirectory()
    if args.https:
        cert, key = make_certificate(Path(certs.name))
        os.environ["AWS_CA_BUNDLE"] = str(cert)  # for this process's boto3 as for the clients
        server = start_tls_server(port, cert, key)
    else:
        server = start_server(port)
    scheme = "https" if args.https else "http"
    env = client_env(f"{scheme}://127.0.0.1:{port}")
    push = ["push", "big", "--remote"]
    contenders: dict[str, object] = {}
    if not args.no_base:
        contenders["reprobuild"] = lambda dest, src: (
            [sys.executable, "-m", "reprobuild"] + push + [dest]
        )
    for spec in args.variant:
        name, code = spec.split("=", 1)
        contenders[name] = lambda dest, src, code=code: (
            [
                sys.executable,
                "-c",
                code + "\n" + RUN_MAIN + "sys.exit(main())",
            ]
            + push
            + [dest]
        )
    if not args.no_aws:
        contenders["aws s3 cp"] = lambda dest, src: [
            args.aws,
            "s3",
            "cp",
            "--quiet",
            str(src),
            dest,
            "--endpoint-url",
            env["AWS_ENDPOINT_URL"],
        ]
    results: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in contenders}
    try:
        make_bucket(env)
        with tempfile.TemporaryDirectory() as tmp:
            ws = Path(tmp)
            (ws / "gen_big.py").write_text(GEN)
            names = list(contenders)
            for rnd in range(args.rounds):
                shutil.rmtree(ws / "cache", ignore_errors=True)
                (ws / "reprobuild.yaml").write_text(
                    f"stages:\n  big:\n    cmd: python gen_big.py {args.gib} {rnd}\n"
                    "    outs: [big.bin]\n"
                )
                subprocess.run(
                    [sys.executable, "-m", "reprobuild", "build", "-q"], cwd=ws, env=env, check=True
                )
                os.sync()  # the build's writeback does not fall on the first push
                objects = [p for p in (ws / "cache" / "objects").rglob("*") if p.is_file()]
                src = max(objects, key=lambda p: p.stat().st_size)
                nbytes = src.stat().st_size
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                line = []
                for i, name in enumerate(order):
                    dest = f"s3://bench/r{rnd}-{i}"
                    wall, cpu, srv = run(contenders[name](dest, src), ws, env, server.pid)
                    wipe(env, f"r{rnd}-{i}")
                    results[name].append((nbytes / wall / 1e6, cpu, srv, i))
                    line.append(f"{name} {nbytes / wall / 1e6:6.1f} MB/s cpu {cpu:4.2f}+{srv:4.2f}")
                load = os.getloadavg()[0]
                print(f"round {rnd + 1} (load {load:.2f}): " + " | ".join(line), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        certs.cleanup()
    gib = args.gib
    print(
        f"\n{args.rounds} rounds over {scheme}, {gib:g} GiB each, {os.cpu_count()} CPUs; "
        "MB/s median (min-max), CPU s per GiB median: client, server"
    )
    width = max(map(len, results))
    for name, rows in results.items():
        mbs = [r[0] for r in rows]
        print(
            f"{name:<{width}}  {statistics.median(mbs):6.1f} ({min(mbs):5.1f}-{max(mbs):5.1f}) MB/s"
            f"  client {statistics.median(r[1] for r in rows) / gib:4.2f} s"
            f"  server {statistics.median(r[2] for r in rows) / gib:4.2f} s"
        )
        if name != "aws s3 cp" and "aws s3 cp" in results:
            ratios = [r[0] / a[0] for r, a in zip(rows, results["aws s3 cp"], strict=True)]
            print(
                f"{'':<{width}}    / aws s3 cp in the same round: median "
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            )
        for pos in sorted({r[3] for r in rows}):
            at = [r for r in rows if r[3] == pos]
            print(
                f"{'':<{width}}    run {pos + 1} of the round: {statistics.median(r[0] for r in at):6.1f}"
                f" MB/s, client {statistics.median(r[1] for r in at) / gib:4.2f} s,"
                f" server {statistics.median(r[2] for r in at) / gib:4.2f} s ({len(at)} rounds)"
            )


if __name__ == "__main__":
    main()
