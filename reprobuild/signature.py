"""Signed run records: who may say "this stage key gave these outputs".

A remote is shared: anyone who can write to it can upload a run record that
maps a real stage key to objects of their own making, all validly hashed.
So a record is trusted only when an Ed25519 key the pipeline lists under
`trusted_keys:` (or REPROBUILD_TRUSTED_KEYS) signed it. The `cryptography`
package does the arithmetic (`pip install 'reprobuild[trust]'`); it is
imported only to sign or verify, never at start-up.

Key files, as `reprobuild key generate` writes them (text, UTF-8):

    NAME.key   mode 0600, the secret key:
                   # reprobuild signing key NAME: keep it secret
                   ed25519-secret:<base64 of the 32-byte Ed25519 seed>
    NAME.pub   the public key, one line:
                   ed25519:<base64 of the 32-byte raw public key> NAME

A public key in `trusted_keys:` or REPROBUILD_TRUSTED_KEYS (separated by
commas, spaces or newlines) is the `ed25519:<base64>` word; anything after it
on a .pub line is a comment.

What is signed, for a record of stage key KEY and stage NAME: the bytes

    b"reprobuild run record v1\\n" + canonical JSON of
    {"key": KEY, "stage": NAME, "outs": [[PATH, HASH, SIZE, NFILES, MODE], ...]}

with the outs sorted by PATH (folders end in '/'; NFILES and MODE are null
when absent), JSON with sorted keys, no spaces, ASCII only. A folder's HASH
covers its manifest, so every file below it, their sizes and exec bits. The
signature travels in the record as

    "signature": {"key": "ed25519:<base64>", "sig": "<base64 of 64 bytes>"}

Ed25519 signatures are deterministic: the same record signed by the same key
gives the same bytes, so a push can tell an up-to-date signed copy on the
remote from one that must be replaced.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

PREFIX = "ed25519:"
SECRET_PREFIX = "ed25519-secret:"
DOMAIN = b"reprobuild run record v1\n"
INSTALL = "signing and checking run records needs cryptography: pip install 'reprobuild[trust]'"
_WORD = re.compile(r"[^\s,]+")


def parse_public(text: str) -> bytes:
    """The 32 raw bytes of an `ed25519:<base64>` public key; ValueError when it is not one."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise ValueError(f"a public key looks like {PREFIX}<base64>")
    try:
        raw = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a public key's base64 is not valid") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one {len(raw)}")
    return raw


def format_public(raw: bytes) -> str:
    return PREFIX + base64.b64encode(raw).decode()


def keys_from_env(value: str | None) -> list[str]:
    """REPROBUILD_TRUSTED_KEYS: public keys separated by commas, spaces or newlines."""
    keys = []
    for word in _WORD.findall(value or ""):
        try:
            parse_public(word)
        except ValueError as exc:
            raise UsageError(f"REPROBUILD_TRUSTED_KEYS: '{word[:60]}': {exc}") from None
        keys.append(word)
    return keys


def trust_for(listed) -> Trust | None:
    """The Trust of a pipeline's `trusted_keys:` plus REPROBUILD_TRUSTED_KEYS; None when none."""
    keys = list(listed) + keys_from_env(os.environ.get("REPROBUILD_TRUSTED_KEYS"))
    return Trust(keys) if keys else None


def message(key: str, stage: str, outs: dict) -> bytes:
    """The signed bytes of a run record: `outs` maps PATH to {hash, size[, nfiles][, mode]}."""
    rows = [
        [path, d["hash"], d["size"], d.get("nfiles"), d.get("mode")]
        for path, d in sorted(outs.items())
    ]
    doc = {"key": key, "stage": stage, "outs": rows}
    return DOMAIN + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UsageError(INSTALL) from None
    return ed25519, InvalidSignature


# -- secret keys -------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    private: object  # cryptography's Ed25519PrivateKey
    public: str  # ed25519:<base64>

    def sign(self, key: str, stage: str, outs: dict) -> dict:
        sig = self.private.sign(message(key, stage, outs))
        return {"key": self.public, "sig": base64.b64encode(sig).decode()}


def generate(name: str, folder: Path) -> tuple[Path, Path, str]:
    """Write NAME.key (0600) and NAME.pub in `folder`; (secret path, public path, public key)."""
    ed25519, _ = _crypto()
    from cryptography.hazmat.primitives import serialization

    secret, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (secret, public):
        if path.exists():
            raise UsageError(f"{path} exists; not overwriting a key (choose another --name)")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    text = (
        f"# reprobuild signing key {name}: keep it secret\n"
        f"{SECRET_PREFIX}{base64.b64encode(seed).decode()}\n"
    )
    # O_EXCL and 0600 from the first byte: the secret is never readable by others, even briefly
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(secret, 0o600)
    public_text = format_public(raw_public)
    public.write_text(f"{public_text} {name}\n")
    return secret, public, public_text


def load_signing_key(path: str | os.PathLike) -> SigningKey:
    """The secret key in a NAME.key file; a UsageError naming the file when it is not one."""
    ed25519, _ = _crypto()
    from cryptography.hazmat.primitives import serialization

    path = Path(path).expanduser()
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"signing key {path}: not a regular file")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"signing key {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"signing key {path}: not a reprobuild key file") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        if len(lines) != 1 or not lines[0].startswith(SECRET_PREFIX):
            raise ValueError
        seed = base64.b64decode(lines[0][len(SECRET_PREFIX) :], validate=True)
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, binascii.Error):
        raise UsageError(
            f"signing key {path}: not a reprobuild key file "
            f"(one line {SECRET_PREFIX}<base64>; make one with `reprobuild key generate`)"
        ) from None
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return SigningKey(private, format_public(raw_public))


# -- checking ----------------------------------------------------------------------


class Trust:
    """The public keys whose signatures make a remote run record usable."""

    def __init__(self, keys: list[str]):
        self.keys = list(dict.fromkeys(keys))
        self._loaded: dict[str, object] = {}
        self._verified: set[tuple[str, bytes, bytes]] = set()
        self._invalid_signature = None

    def __bool__(self) -> bool:
        return bool(self.keys)

    def check(self, doc: dict, key: str, stage: str, outs: dict) -> str | None:
        """None when a trusted key signed this record, else why not (unsigned, untrusted, ...)."""
        sig = doc.get("signature")
        if sig is None:
            return "unsigned"
        if not isinstance(sig, dict) or not isinstance(sig.get("key"), str):
            return "malformed signature"
        if sig["key"] not in self.keys:
            return "signed by an untrusted key"
        try:
            raw = base64.b64decode(str(sig.get("sig", "")), validate=True)
        except (binascii.Error, ValueError):
            return "malformed signature"
        signed = message(key, stage, outs)
        if (sig["key"], raw, signed) in self._verified:
            return None  # a pulled record is read again right after it is stored
        public = self._public(sig["key"])
        try:
            public.verify(raw, signed)
        except self._invalid_signature:
            return "bad signature (tampered)"
        self._verified.add((sig["key"], raw, signed))
        return None

    def _public(self, text: str):
        if text not in self._loaded:
            ed25519, self._invalid_signature = _crypto()
            self._loaded[text] = ed25519.Ed25519PublicKey.from_public_bytes(parse_public(text))
        return self._loaded[text]


def default_key_folder() -> Path:
    """$XDG_CONFIG_HOME/reprobuild/keys, else ~/.config/reprobuild/keys: outside any repository."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "reprobuild" / "keys"
