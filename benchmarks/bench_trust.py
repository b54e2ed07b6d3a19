"""What checking signatures adds to `build --pull` (issue: trust). Prints figures; asserts nothing.

    python benchmarks/bench_trust.py [--stages 1000]

A pipeline of N trivial stages is built, pushed signed to a folder remote,
and each measured build starts from a copy with no outputs and an empty
cache, so every stage's run record is read from the remote and restored:
- `build --pull` in-process with and without `trusted_keys` (best of 4 each,
  alternating which goes first);
- inside the trusted builds, the time spent in signature checks alone
  (Trust.check: decoding and Ed25519 verification, every record);
- verifying N signatures with `cryptography` directly, as the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def pipeline(n: int, key: str | None) -> str:
    lines = [f"trusted_keys: [{key}]"] if key else []
    lines.append("stages:")
    for i in range(n):
        lines += [f"  s{i}:", f"    cmd: echo {i} > out/{i}.txt", f"    outs: [out/{i}.txt]"]
    return "\n".join(lines) + "\n"


def run(cwd: Path, *args: str) -> int:
    from reprobuild.cli.main import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return main(list(args))
    finally:
        os.chdir(old)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=1000)
    n = ap.parse_args().stages
    from reprobuild import signature

    tmp = Path(tempfile.mkdtemp(prefix="rb-bench-trust-"))
    try:
        secret, _, public = signature.generate("bench", tmp / "keys")
        src, remote = tmp / "src", tmp / "remote"
        for d in (src, remote, src / "out"):
            d.mkdir()
        (src / "reprobuild.yaml").write_text(pipeline(n, public))
        assert run(src, "build", "-q") == 0
        assert run(src, "push", "-q", "--remote", str(remote), "--sign-key", str(secret)) == 0

        checked = [0.0, 0]
        real_check = signature.Trust.check

        def timed_check(self, *a):
            start = time.perf_counter()
            try:
                return real_check(self, *a)
            finally:
                checked[0] += time.perf_counter() - start
                checked[1] += 1

        signature.Trust.check = timed_check
        results = {}
        runs = 0
        pair = [("without trusted_keys", None), ("with trusted_keys", public)]
        for attempt in range(4):  # alternated: the second of two builds pays the first's writeback
            for label, key in pair if attempt % 2 else pair[::-1]:
                best = results.get(label)
                runs += 1
                ws = tmp / f"ws-{runs}"
                (ws / "out").mkdir(parents=True)
                (ws / "reprobuild.yaml").write_text(pipeline(n, key))
                shutil.copy(src / "reprobuild.lock", ws / "reprobuild.lock")
                checked[:] = [0.0, 0]
                start = time.perf_counter()
                code = run(ws, "build", "-q", "--pull", "--remote", str(remote))
                took = time.perf_counter() - start
                assert code == 0 and not any((ws / "cache/runs").rglob("x"))
                restored = len(list((ws / "out").iterdir()))
                assert restored == n, restored
                if best is None or took < best[0]:
                    results[label] = (took, checked[0], checked[1])
        signature.Trust.check = real_check

        from cryptography.hazmat.primitives.asymmetric import ed25519

        private = ed25519.Ed25519PrivateKey.generate()
        msgs = [signature.message(f"{i:032x}", f"s{i}", {}) for i in range(n)]
        sigs = [private.sign(m) for m in msgs]
        pub = private.public_key()
        start = time.perf_counter()
        for m, s in zip(msgs, sigs, strict=True):
            pub.verify(s, m)
        floor = time.perf_counter() - start

        plain, trusted = results["without trusted_keys"], results["with trusted_keys"]
        print(
            f"build --pull of {n} stages, every one restored from a folder remote (best of 4, alternating):"
        )
        print(f"  without trusted_keys: {plain[0]:.2f} s")
        print(f"  with trusted_keys:    {trusted[0]:.2f} s  ({trusted[0] - plain[0]:+.2f} s)")
        print(f"  signature checks inside it: {trusted[1] * 1000:.0f} ms for {trusted[2]} records")
        print(f"  {n} Ed25519 verifications alone: {floor * 1000:.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
