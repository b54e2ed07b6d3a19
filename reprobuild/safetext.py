"""Text that is safe to print: control characters from files shown, never obeyed.

File names, metric values, params, lockfile fields and file contents can hold
terminal escape sequences (ESC [ 2 J clears the screen; OSC 8 makes links;
a carriage return hides what came before on the line) or Unicode bidi
overrides that make text read differently from its bytes. Every printer
passes such text through `clean`, which writes each of those characters as a
visible escape (`\\x1b`, `\\u202e`); newlines and tabs stay.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text) -> str:
    """`text` with control characters (bar newline and tab) and bidi controls escaped."""
    text = str(text)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def markup_escape(text) -> str:
    """clean(), then rich's markup escape (rich.markup.escape, without importing rich):
    for text put into a rich markup string."""
    markup = _MARKUP_TAG.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", clean(text))
    if markup.endswith("\\") and not markup.endswith("\\\\"):
        return markup + "\\"
    return markup
