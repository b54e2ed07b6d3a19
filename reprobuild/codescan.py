"""Code inputs found from a stage's command.

`python FILE.py ...` and `python -m MODULE ...` (any `python`, `python3`,
`python3.11`, optionally after `env VAR=x` or `uv run`) make that file a code
input. Its imports are then followed with `ast` to local modules, resolved
from the script's folder, the stage's wdir and the workspace root, in that
order; a module that resolves to none of them (the standard library, an
installed package) is not followed. Imports inside functions and
`try/except ImportError` blocks count too: a changed helper must rebuild.
"""

from __future__ import annotations

import ast
import os
import re
import shlex

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}


def scripts_in_cmd(cmd: str) -> list[tuple[str, str]]:
    """[("file", "stages/x.py") | ("module", "pkg.mod")] invoked by python in `cmd`."""
    if "python" not in cmd:
        return []
    try:
        lexer = shlex.shlex(cmd, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell will complain, not us
        return []
    found = []
    for i, tok in enumerate(tokens):
        if not _PYTHON.match(os.path.basename(tok)):
            continue
        if i > 0 and tokens[i - 1] not in _SEPARATORS and not _is_prefix(tokens[:i]):
            continue  # e.g. an argument named "python"
        j = i + 1
        while j < len(tokens) and tokens[j].startswith("-") and tokens[j] != "-m":
            j += 1 + (tokens[j] in ("-W", "-X"))  # skip interpreter flags (and their values)
        if j < len(tokens) - 1 and tokens[j] == "-m":
            found.append(("module", tokens[j + 1]))
        elif j < len(tokens) and tokens[j].endswith(".py"):
            found.append(("file", tokens[j]))
    return found


def _is_prefix(before: list[str]) -> bool:
    """True when everything since the last separator is a launcher like `env A=1` or `uv run`."""
    segment = []
    for tok in reversed(before):
        if tok in _SEPARATORS:
            break
        segment.insert(0, tok)
    launchers = {"env", "exec", "time", "nice", "uv", "run", "poetry", "pipenv", "conda", "nohup"}
    return all(t in launchers or "=" in t or t.startswith("-") for t in segment)


def imported_modules(source: str, filename: str) -> list[tuple[str, int]]:
    """[(dotted module, relative level)] imported anywhere in the source."""
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError):
        return []  # the stage itself will fail loudly; scanning must not
    mods = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            mods.append((base, node.level))
            # `from pkg import mod` may name submodules
            mods.extend((f"{base}.{a.name}" if base else a.name, node.level) for a in node.names)
    return mods


def resolve_module(name: str, roots: list[str], probes: dict | None = None) -> list[str]:
    """Files (absolute) that importing `name` loads from the first root that has it.

    `probes`, when given, collects every "isfile:PATH" asked and its answer."""
    isfile = os.path.isfile if probes is None else _recording_isfile(probes)
    parts = name.split(".")
    for root in roots:
        files = []
        folder = root
        for k, part in enumerate(parts):
            pkg_init = os.path.join(folder, part, "__init__.py")
            module_file = os.path.join(folder, part + ".py")
            if isfile(pkg_init):
                files.append(pkg_init)
                folder = os.path.join(folder, part)
            elif isfile(module_file) and k == len(parts) - 1:
                files.append(module_file)
                break
            else:
                break
        if files:
            return files
    return []


def _recording_isfile(probes: dict):
    def isfile(path: str) -> bool:
        found = probes["isfile:" + path] = os.path.isfile(path)
        return found

    return isfile


def follow_imports(
    entry_files: list[str], roots: list[str], inside: str, probes: dict | None = None
) -> list[str]:
    """All local files reachable from `entry_files` by imports, entries included, sorted.

    Only files under `inside` (the workspace root) count. `probes` as in resolve_module.
    """
    isfile = os.path.isfile if probes is None else _recording_isfile(probes)
    seen: set[str] = set()
    todo = [f for f in entry_files if isfile(f)]
    inside = os.path.join(inside, "")
    while todo:
        path = todo.pop()
        if path in seen or not path.startswith(inside):
            continue
        seen.add(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        here = os.path.dirname(path)
        for mod, level in imported_modules(source, path):
            if level:
                base = here
                for _ in range(level - 1):
                    base = os.path.dirname(base)
                found = resolve_module(mod, [base], probes) if mod else []
            else:
                found = resolve_module(mod, [here, *roots], probes)
            todo.extend(f for f in found if f not in seen)
    return sorted(seen)
