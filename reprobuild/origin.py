"""Imported sources: where a tracked source came from, and which version was taken.

`reprobuild import URL PATH` downloads any fsspec URL (a folder, `s3://`,
`gs://`, `http(s)://`, ...) into PATH and pins, beside the content hash, what
the origin offers to identify the version (lockfile `sources:` entry):

    url         the URL as given (credentials never written: see remote.redact)
    etag        the server's ETag, when it gives one
    version_id  the object version (S3 versioned buckets)
    checksum    a checksum the server computes (e.g. S3's ChecksumSHA256)
    mtime       the modification time the server reports
    (size is the entry's own `size`)

`update` reads those again (one metadata request, no download) and
downloads only when they differ. A normal build never asks the origin.
Getting a pinned version back (a clone whose caches lack it) asks S3 for
that version id; elsewhere it downloads the current bytes, which must hash
to the pin, or it stops with an error naming the URL: never a silent newer
version. Every download lands beside PATH in a temp name, is hashed into
the cache, and only then replaces PATH (whose old content is in the cache).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import EXIT_FAILED, ReprobuildError, UsageError
from .fsutil import remove_path
from .hashing import Meta
from .remote import _missing_backend, _one_line, redact

PIN_FIELDS = ("etag", "version_id", "checksum", "mtime")


class OriginError(ReprobuildError):
    """The origin cannot give what the lockfile pins, or cannot be reached: a failure (exit
    1), not bad usage."""

    exit_code = EXIT_FAILED


def open_url(url: str):
    """(filesystem, path) of an origin URL; fsspec and its backend imported only now."""
    try:
        import fsspec.core
    except ImportError:
        raise UsageError("imports need fsspec: pip install 'reprobuild[remote]'") from None
    options = {"version_aware": True} if url.startswith(("s3://", "s3a://")) else {}
    try:
        return fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
    except ImportError as exc:
        raise UsageError(_missing_backend(url, exc)) from None
    except Exception as exc:
        raise OriginError(f"{redact(url)}: {_one_line(exc, url)}") from None


def identity(url: str) -> dict:
    """What the origin says identifies its current version: {size, etag, version_id, ...}."""
    fs, path = open_url(url)
    try:
        if fs.isdir(path):
            return _folder_identity(fs, path)
        return _file_identity(fs.info(path))
    except FileNotFoundError:
        raise OriginError(f"{redact(url)}: not found at the origin") from None
    except OriginError:
        raise
    except Exception as exc:
        raise OriginError(f"{redact(url)}: {_one_line(exc, url)}") from None


def _file_identity(info: dict) -> dict:
    low = {str(k).lower(): v for k, v in info.items()}
    pins = {}
    for field, names in (
        ("etag", ("etag", "e_tag")),
        ("version_id", ("versionid", "version_id", "generation")),
        ("checksum", ("checksumsha256", "checksumcrc32c", "md5_hash", "crc32c", "content_md5")),
        ("mtime", ("lastmodified", "last_modified", "mtime", "updated", "modified")),
    ):
        for name in names:
            value = low.get(name)
            if value not in (None, ""):
                pins[field] = _text(value)
                break
    if low.get("size") is not None:
        pins["size"] = int(low["size"])
    return pins


def _folder_identity(fs, path: str) -> dict:
    """A folder's identity: a hash of each file's relative name and identity."""
    from .hashing import hash_bytes

    listing = fs.find(path, detail=True)
    rows = []
    for name, info in sorted(listing.items()):
        rel = name[len(path) :].lstrip("/")
        rows.append(f"{rel}\t{sorted(_file_identity(info).items())}")
    return {"etag": "folder:" + hash_bytes("\n".join(rows).encode()), "size": None}


def _text(value) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def pins_of(ident: dict) -> dict:
    return {k: ident[k] for k in PIN_FIELDS if ident.get(k) is not None}


def same_version(entry: dict, ident: dict) -> bool:
    """Do the lockfile's pins describe the origin's current version?"""
    pinned = {k: entry[k] for k in PIN_FIELDS if k in entry}
    if not pinned:
        return False  # nothing to compare: only a download can tell
    current = pins_of(ident)
    return all(current.get(k) == v for k, v in pinned.items())


def download(project, url: str, rel: str, version_id: str | None = None) -> Meta:
    """Download `url` (that version, when given) into the cache through a temp name beside
    `rel`; returns its Meta. The workspace is not touched: `install` puts it in place."""
    fs, path = open_url(url)
    dest = Path(project.prober.abspath(rel))
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-import-"))
    tmp = folder / "data"
    try:
        if version_id:
            with fs.open(path, "rb", version_id=version_id) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        elif fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
        else:
            fs.get_file(path, str(tmp))
        return project.cache.insert(str(tmp), project.hasher)
    except FileNotFoundError:
        raise OriginError(f"{redact(url)}: not found at the origin") from None
    except UsageError:
        raise
    except Exception as exc:
        raise OriginError(f"{redact(url)}: {_one_line(exc, url)}") from None
    finally:
        remove_path(folder)


def install(project, rel: str, meta: Meta) -> None:
    """Put downloaded content at `rel` from the cache; the old content must be cached."""
    project.cache.restore(meta, project.prober.abspath(rel), project.hasher)


def fetch_pinned(project, rel: str, entry: dict) -> Meta:
    """The pinned version of an import, from its origin; an OriginError when it is gone."""
    url = entry["url"]
    meta = download(project, url, rel, entry.get("version_id"))
    if meta.hash != entry.get("hash"):
        raise OriginError(
            f"{redact(url)} no longer has the version pinned for {rel} "
            f"(hash {str(entry.get('hash'))[:12]}); `reprobuild update {rel}` takes the new one"
        )
    install(project, rel, meta)
    return meta
