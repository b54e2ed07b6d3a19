"""Safe YAML loading that remembers where every value came from.

Pipeline and params files are composed into YAML nodes (no Python objects are
ever constructed from tags) and converted by hand, so that:
- every mapping and list keeps the line of each of its entries, for errors
  that name `file:line`;
- tags other than the standard ones (`!!python/object`, custom `!tags`) are
  refused;
- aliases are expanded with a budget, so an alias bomb ("billion laughs")
  fails fast and in bounded memory instead of exhausting it.
"""

from __future__ import annotations

from .errors import PipelineError

# Values (scalars + containers) a document may expand to, aliases counted each
# time they are used. 1,000,000 is far beyond any real pipeline.
MAX_NODES = 1_000_000

_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


class MDict(dict):
    """A dict that knows the line (1-based) of itself and of each key."""

    line: int = 0
    lines: dict


class MList(list):
    """A list that knows the line of itself and of each item."""

    line: int = 0
    lines: list


def line_of(container, key, default: int = 0) -> int:
    """Line of `container[key]` when known, else the container's own line."""
    lines = getattr(container, "lines", None)
    if isinstance(lines, dict) and key in lines:
        return lines[key]
    if isinstance(lines, list) and isinstance(key, int) and 0 <= key < len(lines):
        return lines[key]
    return getattr(container, "line", default)


def load(text: str, filename: str):
    """Parse one YAML document into MDict/MList/scalars; errors name the file and line."""
    import yaml  # here, not at the top: a no-op from the plan cache parses no YAML

    try:  # the C parser is 10x faster; fall back when libyaml is missing
        from yaml import CSafeLoader as _Loader
    except ImportError:  # pragma: no cover
        from yaml import SafeLoader as _Loader  # type: ignore[assignment]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = None
        lines = text.splitlines()
        if mark and mark.line < len(lines) and "${" in lines[mark.line]:
            hint = "inside [ ] or { }, quote values that hold ${...}: ['data/${name}.csv']"
        raise PipelineError(
            f"invalid YAML: {problem}",
            file=filename,
            line=mark.line + 1 if mark else None,
            hint=hint,
        ) from None
    if node is None:
        return None
    return _Converter(filename).convert(node)


def load_file(path, display: str):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PipelineError("file not found", file=display) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read: {exc}", file=display) from None
    return load(text, display)


class _Converter:
    def __init__(self, filename: str):
        self.filename = filename
        self.budget = MAX_NODES
        # scalar construction is delegated to PyYAML's safe constructor
        import yaml

        self.yaml = yaml
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node):
        yaml = self.yaml
        self.budget -= 1
        if self.budget < 0:
            raise PipelineError(
                f"document expands to more than {MAX_NODES:,} values (an alias bomb?)",
                file=self.filename,
                line=node.start_mark.line + 1,
            )
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise self._bad_tag(node)
            return self.constructor.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _STD + "seq":
                raise self._bad_tag(node)
            out = MList()
            out.line, out.lines = line, []
            for item in node.value:
                out.append(self.convert(item))
                out.lines.append(item.start_mark.line + 1)
            return out
        if isinstance(node, yaml.MappingNode):
            if node.tag != _STD + "map":
                raise self._bad_tag(node)
            out = MDict()
            out.line, out.lines = line, {}
            defaults = []  # from `<<: *anchor`; explicit keys win wherever they stand
            for knode, vnode in node.value:
                if knode.tag == _STD + "merge":
                    merged = self.convert(vnode)
                    for part in merged if isinstance(merged, list) else [merged]:
                        if not isinstance(part, dict):
                            raise PipelineError(
                                "`<<` merges mappings only",
                                file=self.filename,
                                line=vnode.start_mark.line + 1,
                            )
                        defaults.append(part)
                    continue
                key = self.convert(knode)
                if isinstance(key, (dict, list)):
                    raise PipelineError(
                        "a mapping key must be a scalar",
                        file=self.filename,
                        line=knode.start_mark.line + 1,
                    )
                if key in out:
                    raise PipelineError(
                        f"duplicate key '{key}'", file=self.filename, line=knode.start_mark.line + 1
                    )
                out[key] = self.convert(vnode)
                out.lines[key] = knode.start_mark.line + 1
            for part in defaults:
                for k, v in part.items():
                    if k not in out:
                        out[k] = v
                        out.lines[k] = line_of(part, k, line)
            return out
        raise self._bad_tag(node)  # pragma: no cover

    def _bad_tag(self, node):
        return PipelineError(
            f"YAML tag {node.tag!r} is not allowed",
            file=self.filename,
            line=node.start_mark.line + 1,
        )
