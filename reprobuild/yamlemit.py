"""Writing plain data as YAML without PyYAML, byte for byte as PyYAML writes it.

Importing yaml costs ~15 ms and its representer ~60 µs a lockfile entry,
the largest fixed cost of a build that runs a few small stages (its
pipeline comes from the plan cache, so nothing else needs yaml). `dump`
writes what `yaml.dump(data, Dumper=SafeDumper or CSafeDumper,
sort_keys=False, default_flow_style=False, allow_unicode=True, width=WIDTH)`
would, for the data a lockfile holds: mappings (block, or `Flow` on one
line), lists of scalars, str, int, float, bool and None. For anything else
it returns None and the caller uses yaml: a dict in a list, an empty
container, a string outside printable ASCII, an empty key or one of 123
characters or more. The rules are PyYAML's: emitter.analyze_scalar for a scalar's style,
resolver.py's patterns for what a plain scalar would read back as, and the
emitter's column bookkeeping for where long lines fold (_Writer). Tests
compare the two, through both of yaml's emitters, on generated and hostile
values.
"""

from __future__ import annotations

import re

WIDTH = 100  # yaml's `width`: past it, a line folds at the next single space or comma


class Flow(dict):
    """A mapping written on one line: `{hash: ..., size: ...}`."""


class _Unsupported(Exception):
    pass


# What a plain scalar reads back as other than a string (yaml/resolver.py, YAML 1.1).
# Compiled at first use (re caches it): a no-op build imports this module but writes nothing.
_NOT_STR = r"""^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
    |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
    |[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    |<<
    |~|null|Null|NULL|
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
     (?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
     (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?
    |=)$"""
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_SIMPLE = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./-]*")  # plain wherever it is, if not _NOT_STR


def _plain_allowed(s: str, flow: bool) -> bool:
    """emitter.analyze_scalar for one line of printable ASCII."""
    if s[0] == " " or s[-1] == " " or s.startswith(("---", "...")):
        return False
    first, followed = s[0], len(s) == 1 or s[1] == " "
    if first in "#,[]{}&*!|>'\"%@`" or (first == "-" and followed):
        return False
    if first in "?:" and (flow or followed):
        return False
    if flow and any(c in s for c in ",?[]{}:"):
        return False
    return ": " not in s and not s.endswith(":") and " #" not in s


def _str(s: str, flow: bool, memo: dict) -> str:
    got = memo.get((s, flow))
    if got is None:
        if not s:
            got = "''"
        elif not _PRINTABLE.fullmatch(s):
            raise _Unsupported
        elif (_SIMPLE.fullmatch(s) or _plain_allowed(s, flow)) and not re.match(_NOT_STR, s, re.X):
            got = s
        else:
            got = "'" + s.replace("'", "''") + "'"
        memo[(s, flow)] = got
    return got


def _scalar(v, flow: bool, memo: dict) -> str:
    if isinstance(v, str):
        return _str(v, flow, memo)
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if type(v) is int:
        return str(v)
    if type(v) is float:  # yaml's represent_float
        if v != v:
            return ".nan"
        if v in (float("inf"), float("-inf")):
            return ".inf" if v > 0 else "-.inf"
        text = repr(v).lower()
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    raise _Unsupported


class _Writer:
    """The emitter's column bookkeeping (yaml/emitter.py: write_indent, write_indicator,
    write_plain, write_single_quoted), enough to fold long scalars and flow mappings
    exactly where yaml does: at a single space, or after a comma, once past WIDTH."""

    def __init__(self):
        self.parts: list[str] = []
        self.column = 0
        self.whitespace = True
        self.indention = True

    def raw(self, text: str) -> None:
        self.parts.append(text)
        self.column += len(text)

    def indent(self, indent: int) -> None:
        if (
            not self.indention
            or self.column > indent
            or (self.column == indent and not self.whitespace)
        ):
            self.parts.append("\n")
            self.column, self.whitespace, self.indention = 0, True, True
        if self.column < indent:
            self.raw(" " * (indent - self.column))
            self.whitespace = True

    def indicator(self, text: str, need_space: bool, whitespace=False, indention=False) -> None:
        self.raw(text if self.whitespace or not need_space else " " + text)
        self.whitespace = whitespace
        self.indention = self.indention and indention

    def scalar(self, styled: str, indent: int, split: bool) -> None:
        if styled[0] != "'":
            if not self.whitespace:
                self.raw(" ")
            self.whitespace = self.indention = False
            body, lo, hi = styled, 0, len(styled)
        else:
            self.indicator("'", True)
            body, lo, hi = styled[1:-1], 1, len(styled) - 1
        # A single space past WIDTH becomes a line break; never the first or last in quotes.
        for m in _WORDS.finditer(body):
            run = m.group()
            if (
                run == " "
                and split
                and self.column > WIDTH
                and (lo == 0 or (m.start() > 0 and m.end() < len(body)))
            ):
                self.indent(indent)
                if lo == 0:
                    self.whitespace = self.indention = False
            else:
                self.raw(run)
        if hi < len(styled):
            self.indicator("'", False)


_WORDS = re.compile(r" +|[^ ]+")


def _check_key(k) -> None:
    """A key yaml may write as `? key` (not "simple"): empty, or long. libyaml's limit is
    128 characters; PyYAML's counts the `!!str` tag too, so it is 123."""
    if not isinstance(k, str) or not k or len(k) >= 123:
        raise _Unsupported


def _block(data: dict, indent: int, w: _Writer, memo: dict) -> None:
    for k, v in data.items():
        _check_key(k)
        w.indent(indent)
        w.scalar(_str(k, False, memo), indent + 2, split=False)
        w.indicator(":", False)
        if isinstance(v, Flow):
            if not v:
                raise _Unsupported
            w.indicator("{", True, whitespace=True)
            for i, (fk, fv) in enumerate(v.items()):
                _check_key(fk)
                if i:
                    w.indicator(",", False)
                if w.column > WIDTH:
                    w.indent(indent + 2)
                w.scalar(_str(fk, True, memo), indent + 4, split=False)
                w.indicator(":", False)
                w.scalar(_scalar(fv, True, memo), indent + 4, split=True)
            w.indicator("}", False)
        elif isinstance(v, dict):
            if not v:
                raise _Unsupported
            _block(v, indent + 2, w, memo)
        elif isinstance(v, list):
            if not v:
                raise _Unsupported
            for item in v:  # a list in a mapping is written at the mapping's own indent
                w.indent(indent)
                w.indicator("-", True, indention=True)
                w.scalar(_scalar(item, False, memo), indent + 2, split=True)
        else:
            w.scalar(_scalar(v, False, memo), indent + 2, split=True)


def dump(data: dict) -> str | None:
    """The YAML text of `data` as yaml would write it, or None when that needs yaml."""
    if not data:  # yaml writes an empty mapping in flow style, "{}"
        return None
    w = _Writer()
    try:
        _block(data, 0, w, {})
    except _Unsupported:
        return None
    return "".join(w.parts) + "\n"
