"""`${name}` templating of pipeline values.

A name is looked up in the stage's own context first (`item`, `key`, matrix
keys), then params, then `vars`; dotted names walk into mappings
(`${train.forest.depth}`, `${item.lr}`). `\\${` is a literal `${`.

In a command every substituted value is escaped for the quoting context it
stands in (bare, "...", '...'), so it is literal text inside one shell word:
a param can never inject shell syntax. A mapping in a
command expands, as in DVC, to `--key value` pairs (nested keys dotted,
each value one quoted word): `train.py ${item}` with item `{C: 1.0}` gives
`train.py --C 1.0`. Elsewhere
(paths, param keys) values are substituted as text, and a string that is just
`${name}` keeps the value's own type.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_REF = re.compile(r"(\\?)\$\{\s*([A-Za-z_][\w.@-]*)\s*\}")
_MISSING = object()


class TemplateError(Exception):
    """An unknown name or a value of the wrong kind; the caller adds file and line."""


@dataclass
class Context:
    """Where `${...}` names come from, in lookup order."""

    local: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    vars: dict = field(default_factory=dict)
    # Dotted param names used while rendering: they become params of the stage.
    used_params: set = field(default_factory=set)

    def child(self, local: dict) -> Context:
        return Context({**self.local, **local}, self.params, self.vars, self.used_params)

    def lookup(self, name: str):
        for source, is_param in ((self.local, False), (self.params, True), (self.vars, False)):
            value = dig(source, name)
            if value is not _MISSING:
                if is_param:
                    self.used_params.add(name)
                return value
        raise TemplateError(f"unknown name '${{{name}}}'")


def dig(tree, dotted: str):
    """Value at a dotted path in nested mappings, or _MISSING."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def render(text: str, ctx: Context):
    """Render a non-command string; `"${x}"` alone keeps x's type."""
    match = _REF.fullmatch(text)
    if match and not match.group(1):
        return ctx.lookup(match.group(2))
    return _REF.sub(lambda m: _substitute(m, ctx), text)


def render_cmd(text: str, ctx: Context) -> str:
    """Render a shell command: every value becomes literal text of exactly one shell word.

    The shell's quoting state is followed, so a value is escaped for where it
    stands: bare (`shlex.quote`), inside "..." (backslash before \\ $ ` "), or
    inside '...' (close the quote, a quoted value, reopen).
    """
    out, i, state = [], 0, None  # state: None, "'" or '"'
    while i < len(text):
        ch = text[i]
        match = _REF.match(text, i) if ch in "\\$" else None
        if match:
            out.append(_substitute_in(match, ctx, state))
            i = match.end()
            continue
        if ch == "\\" and state != "'" and i + 1 < len(text):
            out.append(text[i : i + 2])  # an escaped character keeps the quoting state
            i += 2
            continue
        if ch in "'\"" and state in (None, ch):
            state = None if state == ch else ch
        out.append(ch)
        i += 1
    return "".join(out)


def _substitute_in(match: re.Match, ctx: Context, state: str | None) -> str:
    if match.group(1):  # escaped: \${x} -> ${x}
        return match.group(0)[1:]
    name = match.group(2)
    value = ctx.lookup(name)
    if isinstance(value, dict):
        if state is not None:
            raise TemplateError(
                f"'${{{name}}}' is a mapping: it expands to --KEY VALUE flags, "
                "so it cannot stand inside quotes"
            )
        return " ".join(
            f"--{_flag(k, name)} {shlex.quote(to_text(v, name))}" for k, v in _flat_items(value)
        )
    text = to_text(value, name)
    if state == '"':
        return re.sub(r'([\\$`"])', r"\\\1", text)
    if state == "'":
        return "'" + shlex.quote(text) + "'"
    return shlex.quote(text)


def render_tree(value, ctx: Context):
    """Render every string inside lists and mappings (keys included), keeping line marks."""
    if isinstance(value, str):
        return render(value, ctx) if "${" in value else value
    if isinstance(value, list):
        out = type(value)(render_tree(v, ctx) for v in value)
        _copy_marks(value, out)
        return out
    if isinstance(value, dict):
        out = type(value)()
        _copy_marks(value, out)
        lines = getattr(out, "lines", None)
        for k, v in value.items():
            nk = render(k, ctx) if isinstance(k, str) and "${" in k else k
            out[nk] = render_tree(v, ctx)
            if isinstance(lines, dict) and k in lines:
                lines[nk] = lines[k]
        return out
    return value


def _copy_marks(src, dst):
    if hasattr(src, "line"):
        dst.line = src.line
        dst.lines = dict(src.lines) if isinstance(src.lines, dict) else list(src.lines)


def _substitute(match: re.Match, ctx: Context) -> str:
    if match.group(1):  # escaped: \${x} -> ${x}
        return match.group(0)[1:]
    name = match.group(2)
    return to_text(ctx.lookup(name), name)


_FLAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _flat_items(mapping: dict, prefix: str = ""):
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat_items(v, key + ".")
        else:
            yield key, v


def _flag(key: str, name: str) -> str:
    if not _FLAG.match(key):
        raise TemplateError(f"'${{{name}}}' has key {key!r}, which cannot be a command-line flag")
    return key


def to_text(value, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float, str)):
        return str(value)
    kind = (
        "list"
        if isinstance(value, list)
        else "mapping"
        if isinstance(value, dict)
        else type(value).__name__
    )
    raise TemplateError(f"'${{{name}}}' is a {kind}, not a single value")
