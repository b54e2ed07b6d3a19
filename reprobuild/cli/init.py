"""`reprobuild init`: a starter pipeline that builds as it is."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write
from ..workspace import find_root

PIPELINE = """\
# reprobuild pipeline: see `reprobuild --help` and the README.
params: params.yaml
env:
  python: true
  platform: true
  packages: []          # e.g. [numpy, scikit-learn]: their versions are part of every stage's key
  vars: []              # e.g. [PYTHONHASHSEED]
stages:
  greet:
    desc: Write a greeting
    cmd: echo ${greeting} > out/greeting.txt   # parent folders of outs are made for you
    outs: [out/greeting.txt]
"""

PARAMS = "greeting: hello\n"


def run_init(folder: Path) -> list[Path]:
    pipeline, params = folder / "reprobuild.yaml", folder / "params.yaml"
    for path in (pipeline, params):
        if path.exists():
            raise UsageError(
                f"{path.name} already exists here; init writes only into a fresh folder"
            )
    written = []
    atomic_write(pipeline, PIPELINE.encode())
    atomic_write(params, PARAMS.encode())
    written += [pipeline, params]
    ignore = find_root(folder) / "cache" / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, b"*\n")
        written.append(ignore)
    return written
