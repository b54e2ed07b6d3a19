"""Adding entries to the pipeline file's `sources:` list without disturbing the rest.

The file is a user's: comments, order and layout stay as they are. The list
is found through PyYAML's node marks and only its text is touched: a block
list gets a new `- ENTRY` line after its last item, a flow list (`[a, b]`)
gets `, ENTRY` before its `]`, and a file without `sources:` gets a block
before `stages:` (or at its end). The result is written atomically by the
caller after it loads and validates.
"""

from __future__ import annotations

import json
import re

import yaml

_PLAIN = re.compile(r"^[A-Za-z0-9_./@+=-][A-Za-z0-9_./@+= -]*$")


def scalar(text: str) -> str:
    """A YAML scalar for `text`: bare when unambiguous, else a JSON (double-quoted) string."""
    if _PLAIN.match(text) and not text.endswith(" ") and text not in ("null", "true", "false"):
        return text
    return json.dumps(text)


def entry_text(path: str, url: str | None) -> str:
    return f"{scalar(path)}: {{url: {scalar(url)}}}" if url else scalar(path)


def add_sources(text: str, entries: list[tuple[str, str | None]]) -> str:
    """`text` with (path, url) entries appended to the top-level `sources:` list."""
    if not entries:
        return text
    items = [entry_text(p, u) for p, u in entries]
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    node, stages_line = None, None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "sources":
                node = (key, value)
            elif isinstance(key, yaml.ScalarNode) and key.value == "stages" and node is None:
                stages_line = key.start_mark.line
    if node is None:
        block = "sources:\n" + "".join(f"  - {i}\n" for i in items)
        lines = text.splitlines(keepends=True)
        if stages_line is None:
            return text + ("" if not text or text.endswith("\n") else "\n") + block
        return "".join(lines[:stages_line]) + block + "\n" + "".join(lines[stages_line:])
    key, value = node
    if isinstance(value, yaml.ScalarNode) and value.value in ("", "null", "~"):
        # `sources:` with nothing after it
        line_end = (
            text.index("\n", key.end_mark.index)
            if "\n" in text[key.end_mark.index :]
            else len(text)
        )
        block = "".join(f"\n  - {i}" for i in items)
        return text[:line_end] + block + text[line_end:]
    if not isinstance(value, yaml.SequenceNode):
        raise ValueError("`sources` is not a list")
    if value.flow_style:
        close = text.rindex("]", value.start_mark.index, value.end_mark.index)
        sep = ", " if value.value else ""
        return text[:close] + sep + ", ".join(items) + text[close:]
    indent = " " * value.start_mark.column
    # after the last item's own text (its comments and following lines stay where they are)
    end = _text_end(value.value[-1])
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    return text[:line_end] + "".join(f"\n{indent}- {i}" for i in items) + text[line_end:]


def _text_end(node) -> int:
    """Where a node's own text ends. A block mapping or sequence ends only where the next
    token starts (a following line), so descend to its last scalar or flow node."""
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style:
        if not node.value:
            break
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return node.end_mark.index
