"""Params files: YAML mappings whose values stages declare by dotted key.

A stage's params are recorded as flat `dotted.key: value` leaves, so a change
deep in a section is reported as exactly that leaf: `param changed:
train.forest.depth 6 -> 8`. Keys from a file other than the pipeline's first
params file are written `FILE:key`.
"""

from __future__ import annotations

from pathlib import Path

from . import yamlio
from .errors import PipelineError

DEFAULT_PARAMS = "params.yaml"


def load_params(pipeline_dir: Path, files: list[str], pipeline_display: str) -> dict[str, dict]:
    """{file name: its mapping}, in declared order. Missing files are an error."""
    loaded = {}
    for name in files:
        data = yamlio.load_file(pipeline_dir / name, name)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PipelineError("a params file must hold a mapping", file=name)
        loaded[name] = data
    return loaded


def merged(params_files: dict[str, dict]) -> dict:
    """The `${...}` namespace: all params files merged, later files winning."""
    out: dict = {}
    for data in params_files.values():
        _deep_merge(out, data)
    return out


def _deep_merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v


def flatten(prefix: str, value) -> dict:
    """{dotted leaf: value}; an empty mapping stays a leaf so it is still recorded."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: _plain(value)}


def _plain(value):
    """Strip line-mark subclasses so values compare and serialise as plain data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
