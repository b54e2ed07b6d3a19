"""`reprobuild key generate`: an Ed25519 key pair for signing run records.

`register(add)` adds the subparser; COMMANDS maps the command to its
function. Imported at start-up: `cryptography` is imported by
reprobuild.signature, and only when a key is made.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ..errors import EXIT_OK, UsageError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}\Z")


def register(add) -> None:
    k = add("key", "signing keys for run records pushed to a shared remote")
    sub = k.add_subparsers(dest="key_command", metavar="ACTION")
    g = sub.add_parser(
        "generate",
        help="write an Ed25519 key pair (secret NAME.key, mode 0600, and NAME.pub)",
        description="Write an Ed25519 key pair: NAME.key (secret, mode 0600) and NAME.pub. "
        "Keep the secret key on trusted CI only; commit the public key under trusted_keys:.",
    )
    g.add_argument("--name", help="key name (default: this host's name)")
    g.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the key files (default: $XDG_CONFIG_HOME/reprobuild/keys, "
        "else ~/.config/reprobuild/keys; outside any repository)",
    )


def cmd_key(args) -> int:
    from ..signature import default_key_folder, generate

    if getattr(args, "key_command", None) != "generate":
        raise UsageError("usage: reprobuild key generate [--name NAME] [--out DIR]")
    import socket

    name = args.name or socket.gethostname().split(".")[0] or "reprobuild"
    if not _NAME.match(name):
        raise UsageError(f"key name '{name[:60]}': letters, digits and _ . @ - only")
    folder = Path(args.out).expanduser().absolute() if args.out else default_key_folder()
    secret, public, text = generate(name, folder)
    repo = _inside_git(folder)
    if repo is not None:
        print(
            f"warning: {secret} is inside the git work tree {repo}: never commit it "
            "(add it to .gitignore, or keep keys outside the repository)",
            file=sys.stderr,
        )
    print(f"secret key: {secret} (mode 0600; keep it on trusted CI only)")
    print(f"public key: {public}")
    print("add the public key to reprobuild.yaml, so that runs it signed are trusted:")
    print(f"trusted_keys: [{text}]")
    print(f"and sign pushes with it: REPROBUILD_SIGNING_KEY={secret} reprobuild push")
    return EXIT_OK


def _inside_git(folder: Path) -> Path | None:
    for parent in (folder, *folder.parents):
        if os.path.exists(parent / ".git"):
            return parent
    return None


COMMANDS: dict = {"key": cmd_key}
