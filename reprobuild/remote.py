"""The remote cache: `push`, `pull` and `build --pull` over any fsspec filesystem.

Where: `--remote URL` > `REPROBUILD_REMOTE` > `remote:` in reprobuild.yaml (a
relative folder there is relative to the pipeline file's folder; on the
command line or in the environment, to the current folder). Any fsspec URL:
a folder, `s3://bucket/prefix` (s3fs), `gs://...`, `ssh://host/path`, ...
Credentials and endpoints come from the filesystem's usual sources
(environment, ~/.aws/config, ...); they are never written anywhere, and URLs
are shown without their `user:password@`.

Layout (the local cache's, see cache.py), under the URL:

    objects/ab/cdef...      a file's bytes, named by their XXH3-128
    objects/ab/cdef....dir  a folder manifest (hashing.manifest_bytes), named by its hash
    runs/9b/2c...           run records (cache.py's JSON), named by stage key
    tmp/                    uploads land here first where the filesystem can rename

Upload protocol (push). A reader must never find a run record whose objects
are not all there, even after a push was killed at any point, so:
  1. one listing per `objects/ab`, `runs/9b` folder that holds a wanted name
     tells what the remote has (a check per name when only a few are wanted);
  2. the missing files' objects are uploaded in parallel, each re-hashed
     first so a locally corrupt object never reaches the remote;
  3. then the `.dir` manifests whose every file is on the remote;
  4. then the run records whose every object is on the remote.
Each upload is atomic: an object store (s3, gs, azure) publishes a PUT whole
or not at all; elsewhere (folders, ssh, ...) it goes to `tmp/<random>` and is
renamed into place. A killed push leaves at most stray files in `tmp/`.
On S3 an object of transfer.THRESHOLD (64 MiB) or more goes up as a
multipart upload, several parts at once (transfer.py): S3 publishes it whole,
on completion, and it is completed only when the bytes sent hash to the
object's name; a failed or interrupted one is aborted; one whose process was
killed stays invisible (an incomplete upload, for a bucket lifecycle rule).

Download protocol (pull, build --pull). A remote is shared, so it is not
trusted: every object lands in the local cache's tmp/, is hashed, and is
renamed into objects/ only when its hash is its name. A wrong or truncated
object is a miss (reported, never stored). On S3 an object of 64 MiB or more
comes down as several ranged GETs at once, written at their offsets into the
temp file, which is hashed whole before the rename. Downloaded objects are not
fsynced: a copy lives on the remote, and an object a crash truncated is
caught by the hash check of every restore (quarantined, the stage runs or
the object is pulled again), so no byte that exists nowhere else is at
stake. A run record is validated (schema,
key, safe relative paths, 32-hex hashes; decision.cached_record then checks
its outs are the stage's) and stored locally only once every object it names
has arrived.

Trust (signature.py). Object bytes are checked by their hash, but a run
record says "this key gave those objects", and anyone who can write to the
remote could say it. With trusted keys configured (`trusted_keys:` in the
pipeline file and REPROBUILD_TRUSTED_KEYS), a remote record is used only
when one of those keys signed it; an unsigned, untrusted or tampered record
is a miss (the stage runs), named in `Remote.untrusted`, never stored
locally. A push with a signing key (`--sign-key`, REPROBUILD_SIGNING_KEY)
signs each record it uploads, and replaces a remote copy that is not
byte-identical to its signed one (an earlier unsigned push, or a forgery).
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import hashing, sources
from .cache import (
    SMALL,
    TMP_PREFIX,
    CorruptObject,
    MissingObject,
    check_manifest,
    parse_run_doc,
)
from .errors import CacheError, ReprobuildError, UsageError, warn
from .fsutil import atomic_write, on_threads, read_all, write_all
from .fsutil import unlink_quiet as _unlink_quiet
from .hashing import Meta

JOBS = 16  # transfers at once: latency-bound on object stores, so more than the CPUs
# A folder remote's small objects are copied with plain fds, a few threads each on a
# slice: their cost is syscalls, so more threads only contend for the GIL, and a
# future per file costs more than its copy.
LOCAL_THREADS = 4
ELSEWHERE = object()  # a fast path's answer: this one takes the general path
FEW = 16  # up to this many names are checked one by one; more are listed
LIST_PAGE = 1000  # keys per listing request on S3 (and GCS, Azure: about as many)
HEX = re.compile(r"[0-9a-f]{32}\Z")
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"}
EXTRAS = {"s3": "reprobuild[s3]", "s3a": "reprobuild[s3]"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


# -- where the remote is ------------------------------------------------------


def redact(text: str) -> str:
    """`scheme://user:password@host/...` -> `scheme://host/...`, anywhere in text."""
    return _USERINFO.sub("", text)


def resolve_url(project, cli_url: str | None = None) -> str | None:
    """The remote URL by precedence: --remote, REPROBUILD_REMOTE, then `remote:`."""
    if cli_url:
        return _absolute(cli_url, Path.cwd())
    if os.environ.get("REPROBUILD_REMOTE"):
        return _absolute(os.environ["REPROBUILD_REMOTE"], Path.cwd())
    if project.pipeline.remote:
        return _absolute(str(project.pipeline.remote), project.ws.dir)
    return None


def _absolute(url: str, base: Path) -> str:
    if "://" in url or "::" in url:
        return url
    return os.path.normpath(os.path.join(base, os.path.expanduser(url)))


def open_remote(
    project, url: str | None = None, *, jobs: int = JOBS, create: bool = False
) -> Remote:
    """The project's remote; a UsageError when none is configured or it cannot be opened."""
    raw = resolve_url(project, url)
    if raw is None:
        raise UsageError(
            "no remote configured",
            hint="give --remote URL, set REPROBUILD_REMOTE, or add `remote:` to reprobuild.yaml",
        )
    fs, root = _filesystem(raw)
    remote = Remote(fs, root, redact(raw), project.cache, jobs)
    remote.check(create)
    remote.trust = project.cache.trust  # Project.open: `trusted_keys:` + REPROBUILD_TRUSTED_KEYS
    return remote


def _filesystem(url: str):
    """(fsspec filesystem, root path); fsspec and its backends imported only now."""
    try:
        import fsspec.core
    except ImportError:
        raise UsageError("a remote needs fsspec: pip install 'reprobuild[remote]'") from None
    try:
        # a fresh instance: fsspec's instance cache would share listings between remotes
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as exc:
        raise UsageError(_missing_backend(url, exc)) from None
    except Exception as exc:  # unknown protocol, bad URL: fsspec raises ValueError or its own
        raise UsageError(f"remote {redact(url)}: {_one_line(exc, url)}") from None
    return fs, root.rstrip("/")


def _missing_backend(url: str, exc: ImportError) -> str:
    proto = url.split("::")[-1].split("://")[0]
    extra = EXTRAS.get(proto)
    if extra:
        return f"{proto}:// remotes need s3fs: pip install '{extra}'"
    return f"{proto}:// remotes need another package: {_one_line(exc, url)}"


def _one_line(exc: BaseException, url: str = "") -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    if url:
        text = text.replace(url, redact(url))
    return redact(text)


# -- what crosses the wire ------------------------------------------------------


@dataclass
class TransferResult:
    objects: int = 0  # objects moved
    bytes: int = 0  # their bytes
    present: int = 0  # objects the destination already had
    runs: int = 0  # run records moved
    runs_present: int = 0
    missing: list[str] = field(
        default_factory=list
    )  # what the source lacks (stage: path, or object)
    refused: list[str] = field(
        default_factory=list
    )  # remote objects whose bytes are not their name
    corrupt: list[str] = field(default_factory=list)  # local objects found corrupt (quarantined)
    untrusted: list[str] = field(default_factory=list)  # "stage (why): run record KEY", not used


class Progress:
    """What a transfer tells as it goes (from any thread); this one shows nothing."""

    def add_total(self, files: int, nbytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def file_done(self) -> None: ...


def parse_run(data: bytes, key: str) -> tuple[str, dict[str, Meta]] | None:
    """(stage, outs) of a run record's bytes, or None when it is not one we can trust."""
    parsed = _parse_run(data, key)
    return None if parsed is None else parsed[1:]


def _parse_run(data: bytes, key: str) -> tuple[dict, str, dict[str, Meta]] | None:
    """(document, stage, outs), or None when malformed (deep JSON, 1e999 and NaN included)."""
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    parsed = parse_run_doc(doc, key)
    return None if parsed is None else (doc, *parsed)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a run record holds")


def record_outs(outs: dict[str, Meta]) -> dict[str, dict]:
    """Outs as a run record stores them: what a signature covers (signature.message)."""
    return {p: m.to_record() for p, m in outs.items()}


def parse_manifest(data: bytes) -> list[dict]:
    """A folder manifest's entries; ValueError when one could escape the folder or the cache."""
    try:
        return check_manifest(json.loads(data))
    except RecursionError:
        raise ValueError("a manifest nested too deep") from None


# -- the remote -----------------------------------------------------------------


class Remote:
    def __init__(self, fs, root: str, url: str, cache, jobs: int = JOBS):
        self.fs = fs
        self.root = root
        self.url = url  # as shown: no credentials
        self.cache = cache
        self.jobs = max(1, jobs)
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.atomic_put = bool(ATOMIC_PUT & set(protocols))
        self.is_local = bool({"file", "local"} & set(protocols))
        self.on_warning = lambda message: warn(f"warning: {message}")
        self.trust = None  # signature.Trust: when set, only records its keys signed are used
        self.signer = None  # signature.SigningKey: a push signs the records it uploads
        self.untrusted: dict[str, str] = {}  # key -> "stage (why)": remote records not used
        self._made: set[str] = set()
        self._made_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    def check(self, create: bool) -> None:
        """A local folder remote must exist to be read (a typo should not look like an empty remote)."""
        if not self.is_local:
            return
        with self._talking():
            if create:
                self._makedirs(self.root)
            elif not self.fs.isdir(self.root):
                raise UsageError(f"remote {self.url} does not exist")

    # -- names ------------------------------------------------------------------

    def object_path(self, digest: str, is_dir: bool = False) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest[2:]}" + (".dir" if is_dir else "")

    def run_path(self, key: str) -> str:
        return f"{self.root}/runs/{key[:2]}/{key[2:]}"

    # -- build --pull -------------------------------------------------------------

    def fetch_run(self, key: str) -> bool:
        """Bring the run record for `key` and every object it names into the local cache.

        True only when all of them arrived (verified); the record is stored last.
        """
        if not HEX.match(key or ""):
            return False
        with self._talking():
            record = self.read_run(key)
            if record is None:
                return False
            stage, outs, signature = record
            self.fetch(list(outs.values()))
            if not all(self.cache.has(m) for m in outs.values()):
                return False
            self.cache.write_run(key, stage, outs, signature, pulled=True)
            return True

    def read_run(self, key: str) -> tuple[str, dict[str, Meta], dict | None] | None:
        """(stage, outs, signature) of the remote's record for `key`, when valid and trusted."""
        try:
            data = self.fs.cat_file(self.run_path(key))
        except FileNotFoundError:
            return None
        parsed = _parse_run(data, key)
        if parsed is None:
            self.on_warning(f"run record {key} on the remote is not valid; not used")
            return None
        doc, stage, outs = parsed
        signature = doc.get("signature")
        if self.trust:
            why = self.trust.check(doc, key, stage, record_outs(outs))
            if why is not None:
                self.untrusted[key] = f"{stage} ({why})"
                self.on_warning(
                    f"run record {key} of stage '{stage}' on the remote is {why}: "
                    "not trusted, not used"
                )
                return None
        return stage, outs, signature if isinstance(signature, dict) else None

    def fetch_runs(self, keys: list[str]) -> int:
        """Store the remote's run records for `keys` whose objects are all cached; how many."""
        wanted = [k for k in dict.fromkeys(keys) if HEX.match(k) and self.cache.read_run(k) is None]
        stored = 0
        with self._talking():
            for key, record in self._map(self.read_run, wanted).items():
                if record and all(self.cache.has(m) for m in record[1].values()):
                    self.cache.write_run(key, *record, pulled=True)
                    stored += 1
        return stored

    # -- download -------------------------------------------------------------------

    def fetch(self, metas: list[Meta], progress: Progress | None = None) -> TransferResult:
        """Download the objects of these files and folders that the local cache lacks."""
        progress = progress or Progress()
        result = TransferResult()
        with self._talking():
            dirs = {m.hash for m in metas if m.is_dir}
            files = {m.hash: m.size for m in metas if not m.is_dir}
            need_dirs = []
            for digest in sorted(dirs):
                try:
                    files.update((e["hash"], e["size"]) for e in self.cache.read_manifest(digest))
                    result.present += 1
                except (MissingObject, CorruptObject):
                    need_dirs.append(digest)
            # manifests first: they say which files a folder needs
            got = self._download(need_dirs, True, result, progress)
            for digest in need_dirs:
                if got.get(digest):
                    files.update((e["hash"], e["size"]) for e in self.cache.read_manifest(digest))
            need = [d for d in sorted(files) if not self.cache.object_path(d).is_file()]
            result.present += len(files) - len(need)
            self._download(need, False, result, progress, files)
        return result

    def _download(self, digests, is_dir, result, progress, sizes=None) -> dict[str, bool]:
        progress.add_total(len(digests), sum((sizes or {}).get(d, 0) for d in digests))
        fetch = self._fetch_manifest if is_dir else self._fetch_file
        outcome = {}
        if self.is_local and not is_dir:
            small = [d for d in digests if (sizes or {}).get(d, SMALL + 1) <= SMALL]
            outcome = self._map_local(lambda d: self._fetch_local_small(d, progress), small)
            digests = [d for d in digests if d not in outcome]
        outcome.update(self._map(lambda d: fetch(d, progress), digests))
        for digest, status in outcome.items():
            name = digest + (".dir" if is_dir else "")
            if status == "missing":
                result.missing.append(name)
            elif status == "refused":
                result.refused.append(name)
                self.on_warning(
                    f"remote object {name} does not match its hash (corrupt or truncated); refused"
                )
            else:
                result.objects += 1
                result.bytes += status
        return {d: not isinstance(s, str) for d, s in outcome.items()}

    def _fetch_file(self, digest: str, progress: Progress):
        """'missing', 'refused', or the size stored: the object verified into the local cache.

        One pass: the bytes are hashed as they are written to the temp file."""
        self.cache.make_dirs(self.cache.tmp)
        fd, tmp = tempfile.mkstemp(dir=self.cache.tmp, prefix=TMP_PREFIX + "pull-")
        try:
            with os.fdopen(fd, "wb") as dst:
                try:
                    src = self.fs.open(self.object_path(digest), "rb")
                except FileNotFoundError:
                    return "missing"
                with src:
                    if self._ranged(src):
                        got, size = self._fetch_ranged(digest, src.size, dst, tmp, progress)
                    else:
                        got, size = hashing.hash_stream(src, copy_to=dst, on_chunk=progress.advance)
            if got != digest:
                return "refused"
            os.chmod(tmp, 0o444)
            target = self.cache.object_path(digest)
            self.cache.make_dirs(target.parent)
            os.replace(tmp, target)  # not synced: see the module docstring
            progress.file_done()
            return size
        finally:
            _unlink_quiet(tmp)

    def _fetch_local_small(self, digest: str, progress: Progress):
        """_fetch_file for a small object of a folder remote: one read, one write."""
        try:
            fd = os.open(self.object_path(digest), os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return "missing"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return "missing"
            if st.st_size > SMALL:  # not what its size said: stream it like any other
                return ELSEWHERE
            data = read_all(fd, st.st_size)
        finally:
            os.close(fd)
        if hashing.hash_bytes(data) != digest:
            return "refused"
        self.cache.write_object(digest, data, 0o444)  # not synced: see the module docstring
        progress.advance(len(data))
        progress.file_done()
        return len(data)

    def _ranged(self, src) -> bool:
        """A big object on an S3 remote: it comes down in ranges, several at once (transfer.py)."""
        from . import transfer

        return transfer.applies(self.fs) and (getattr(src, "size", 0) or 0) >= transfer.THRESHOLD

    def _fetch_ranged(self, digest: str, size: int, dst, tmp: str, progress: Progress):
        """(hash, size) of the object written into `dst` by ranged GETs, hashed once whole
        (from the page cache); (None, size) when the remote object is shorter than its size."""
        from . import transfer

        try:
            transfer.download(
                self.fs, self.object_path(digest), size, dst.fileno(), progress.advance
            )
        except transfer.Short:
            return None, size
        return hashing.hash_file_raw(tmp)

    def _fetch_manifest(self, digest: str, progress: Progress):
        try:
            data = self.fs.cat_file(self.object_path(digest, True))
        except FileNotFoundError:
            return "missing"
        progress.advance(len(data))
        if hashing.hash_bytes(data) != digest:
            return "refused"
        try:
            parse_manifest(data)
        except (ValueError, KeyError, TypeError):
            return "refused"  # hashes right but unsafe: someone built it to attack readers
        target = self.cache.object_path(digest, is_dir=True)
        self.cache.make_dirs(target.parent)
        atomic_write(target, data, mode=0o444, tmp_dir=self.cache.tmp)
        progress.file_done()
        return len(data)

    # -- upload ---------------------------------------------------------------------

    def push(
        self, metas: list[Meta], keys: list[str], progress: Progress | None = None
    ) -> TransferResult:
        """Upload these files' and folders' objects and these run records, in the safe order."""
        progress = progress or Progress()
        result = TransferResult()
        with self._talking():
            records = self._local_records(keys)
            metas = list(metas) + [m for _, outs in records.values() for m in outs.values()]
            files, dirs, missing = self._local_objects(metas)
            result.missing = sorted(missing)
            have = self._remote_has(files, dirs, records)
            result.present = sum(1 for d in files if d in have["files"]) + sum(
                1 for d in dirs if d in have["dirs"]
            )
            if self.signer is not None:  # a copy there that is not our signed one is replaced
                have["runs"] = self._signed_there(have["runs"], records)
            result.runs_present = len(have["runs"])
            on_remote = (
                self._upload_files(
                    [d for d in files if d not in have["files"]], files, result, progress
                )
                | have["files"]
            )
            for digest, inner in list(dirs.items()):
                if not set(inner) <= on_remote:
                    del dirs[digest]  # a manifest goes up only after all its files
            on_remote_dirs = self._upload_bytes(
                [d for d in dirs if d not in have["dirs"]], True, result, progress
            ) | (have["dirs"] & set(dirs))
            ready = [
                k
                for k, (_, outs) in records.items()
                if k not in have["runs"]
                and all(
                    (m.hash in on_remote_dirs) if m.is_dir else (m.hash in on_remote)
                    for m in outs.values()
                )
            ]
            result.runs = len(self._upload_bytes(ready, None, result, progress, records))
        return result

    def _local_records(self, keys) -> dict[str, tuple[bytes, dict[str, Meta]]]:
        """{key: (bytes to upload, outs)}: the local record, signed when pushing with a key."""
        records = {}
        for key in dict.fromkeys(keys):
            outs = self.cache.read_run(key) if HEX.match(key) else None
            if outs is None:
                continue
            data = self.cache.run_path(key).read_bytes()
            if self.signer is not None:
                doc, stage, outs = _parse_run(data, key)
                doc.pop("pulled", None)  # each reader marks what it pulled itself
                doc["signature"] = self.signer.sign(key, stage, record_outs(outs))
                data = json.dumps(doc, sort_keys=True, indent=1).encode()
            records[key] = (data, outs)
        return records

    def _signed_there(self, present: set[str], records) -> set[str]:
        """Of the records the remote has, those byte-identical to our signed copy."""

        def same(key):
            try:
                return self.fs.cat_file(self.run_path(key)) == records[key][0]
            except FileNotFoundError:
                return False

        return {k for k, ok in self._map(same, sorted(present)).items() if ok}

    def _local_objects(self, metas):
        """({file digest: size}, {dir digest: [file digests]}, names missing locally)."""
        files: dict[str, int] = {}
        dirs: dict[str, list[str]] = {}
        missing = set()
        for m in metas:
            if not m.is_dir:
                files[m.hash] = m.size
                continue
            if m.hash in dirs:
                continue
            try:
                entries = self.cache.read_manifest(m.hash)
            except (MissingObject, CorruptObject):
                missing.add(m.hash + ".dir")
                continue
            dirs[m.hash] = [e["hash"] for e in entries]
            files.update((e["hash"], e["size"]) for e in entries)
        for digest in list(files):
            try:  # the local size: run records and --all do not carry it
                files[digest] = self.cache.object_path(digest).stat().st_size
            except FileNotFoundError:
                missing.add(digest)
                del files[digest]
        for digest, inner in list(dirs.items()):
            if not all(d in files for d in inner):
                del dirs[digest]
        return files, dirs, missing

    def _remote_has(self, files, dirs, records) -> dict[str, set[str]]:
        paths = {self.object_path(d): ("files", d) for d in files}
        paths.update({self.object_path(d, True): ("dirs", d) for d in dirs})
        paths.update({self.run_path(k): ("runs", k) for k in records})
        have = {"files": set(), "dirs": set(), "runs": set()}
        for path in self.existing(list(paths)):
            kind, name = paths[path]
            have[kind].add(name)
        return have

    def existing(self, paths: list[str]) -> set[str]:
        """Which of these remote paths exist, in as few requests as we can guess.

        A few names: one check each. Else, per tree (objects/, runs/): a listing
        of each `ab/` folder that holds a wanted name, or one recursive listing
        of the whole tree when the remote looks small enough for that to take
        fewer requests (object stores page listings by 1,000 keys; the tree's
        size is guessed from the first folder's listing, as DVC does).
        """
        if len(paths) <= FEW:
            found = self._map(self.fs.exists, paths)
            return {p for p, ok in found.items() if ok}
        trees: dict[str, dict[str, list[str]]] = {}
        for p in paths:
            folder = p.rsplit("/", 1)[0]
            trees.setdefault(folder.rsplit("/", 1)[0], {}).setdefault(folder, []).append(p)
        listed: dict[str, set[str]] = {}
        for tree, folders in trees.items():
            listed.update(self._list_tree(tree, list(folders)))
        return {
            p
            for folders in trees.values()
            for folder, ps in folders.items()
            for p in ps
            if p.rsplit("/", 1)[1] in listed[folder]
        }

    def _list_tree(self, tree: str, folders: list[str]) -> dict[str, set[str]]:
        """{folder: names in it} for these folders of one tree."""
        first = self._list_names(folders[0])
        guessed_pages = len(first) * 256 // LIST_PAGE + 1
        if len(folders) - 1 <= guessed_pages:
            listed = self._map(self._list_names, folders[1:])
            listed[folders[0]] = first
            return listed
        listed = {f: set() for f in folders}
        try:
            found = self.fs.find(tree)
        except FileNotFoundError:
            found = []
        for p in found:
            folder, name = str(p).rsplit("/", 1)
            if folder in listed:
                listed[folder].add(name)
        return listed

    def _list_names(self, folder: str) -> set[str]:
        try:
            return {str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)}
        except FileNotFoundError:
            return set()

    def _upload_files(self, digests, sizes, result, progress) -> set[str]:
        progress.add_total(len(digests), sum(sizes[d] for d in digests))
        done = {}
        if self.is_local:
            small = [d for d in digests if sizes[d] <= SMALL]
            done = self._map_local(lambda d: self._upload_local_small(d, progress), small)
            digests = [d for d in digests if d not in done]
        done.update(self._map(lambda d: self._upload_file(d, progress), digests))
        uploaded = set()
        for digest, size in done.items():
            if size is None:
                result.corrupt.append(digest)
                continue
            uploaded.add(digest)
            result.objects += 1
            result.bytes += size
        return uploaded

    def _upload_file(self, digest: str, progress: Progress) -> int | None:
        local = self.cache.object_path(digest)
        if self._multipart(local):
            return self._upload_multipart(digest, local, progress)
        got, size = hashing.hash_file_raw(local)
        if got != digest:  # bit rot or a hand edit here must not spread to every reader
            self.cache.quarantine(local)
            return None
        counter = _callback(progress)
        self._publish(
            self.object_path(digest),
            lambda dest: self.fs.put_file(str(local), dest, callback=counter),
        )
        progress.advance(max(0, size - counter.value))
        progress.file_done()
        return size

    def _upload_local_small(self, digest: str, progress: Progress) -> int | None:
        """_upload_file for a small object to a folder remote: read once (hashed, so a
        locally corrupt object stays here), written to tmp/, renamed into place."""
        local = self.cache.object_str(digest)
        fd = os.open(local, os.O_RDONLY)
        try:
            data = read_all(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if hashing.hash_bytes(data) != digest:
            self.cache.quarantine(Path(local))
            return None

        def put(dest: str) -> None:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                write_all(out, data)
            finally:
                os.close(out)

        self._publish(self.object_path(digest), put)
        progress.advance(len(data))
        progress.file_done()
        return len(data)

    def _multipart(self, local: Path) -> bool:
        """A big object to an S3 remote: it goes up in parts, several at once (transfer.py)."""
        from . import transfer

        return transfer.applies(self.fs) and local.stat().st_size >= transfer.THRESHOLD

    def _upload_multipart(self, digest: str, local: Path, progress: Progress) -> int | None:
        """The size sent, or None when the local object does not hash to its name (then it
        is quarantined and the upload aborted: nothing appears on the remote)."""
        from . import transfer

        size = transfer.upload(self.fs, local, self.object_path(digest), digest, progress.advance)
        if size is None:
            self.cache.quarantine(local)
            return None
        progress.file_done()
        return size

    def _upload_bytes(self, names, is_dir, result, progress, records=None) -> set[str]:
        """Upload manifests (is_dir True) or run records (is_dir None, their bytes in
        `records`) by name; the names sent."""

        def paths(name):
            if is_dir:
                return self.cache.object_path(name, True), self.object_path(name, True)
            return self.cache.run_path(name), self.run_path(name)

        def data_of(name) -> bytes:
            return records[name][0] if records is not None else paths(name)[0].read_bytes()

        def one(name):
            data = data_of(name)
            self._publish(paths(name)[1], lambda dest: self.fs.pipe_file(dest, data))
            progress.advance(len(data))
            progress.file_done()
            return len(data)

        progress.add_total(len(names), sum(len(data_of(n)) for n in names))
        sent = self._map(one, names)
        if is_dir:
            result.objects += len(sent)
            result.bytes += sum(sent.values())
        return set(sent)

    def _publish(self, path: str, put) -> None:
        """`put(dest)` uploads; make it appear at `path` whole or not at all."""
        if self.atomic_put:
            put(path)
            return
        self._makedirs(path.rsplit("/", 1)[0])
        self._makedirs(f"{self.root}/tmp")
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        try:
            put(tmp)
            if self.is_local:
                os.rename(tmp, path)  # fsspec's mv adds 20 us a file to the same rename
            else:
                self.fs.mv(tmp, path)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except Exception:
                pass
            raise

    def _makedirs(self, folder: str) -> None:
        with self._made_lock:
            if folder in self._made:
                return
        self.fs.makedirs(folder, exist_ok=True)
        with self._made_lock:
            self._made.add(folder)

    # -- plumbing ---------------------------------------------------------------------

    def _map(self, fn, items) -> dict:
        """{item: fn(item)} on up to `jobs` threads; the first error stops the rest and is raised."""
        items = list(items)
        if len(items) <= 1 or self.jobs == 1:
            return {it: fn(it) for it in items}
        pool = ThreadPoolExecutor(
            max_workers=min(self.jobs, len(items)), thread_name_prefix="remote"
        )
        try:
            futures = {pool.submit(fn, it): it for it in items}
            return {futures[f]: f.result() for f in as_completed(futures)}
        finally:
            # Ctrl-C or an error: start nothing more; what is in flight finishes (each is atomic)
            pool.shutdown(wait=True, cancel_futures=True)

    def _map_local(self, fn, items) -> dict:
        """{item: fn(item)} with a few threads each on a slice (see LOCAL_THREADS); an item
        whose fn returns ELSEWHERE is left out (the general path takes it). The first error
        stops the rest and is raised."""
        results: dict = {}

        def one(it) -> None:
            got = fn(it)
            if got is not ELSEWHERE:
                results[it] = got

        on_threads(one, list(items), min(LOCAL_THREADS, self.jobs))
        return results

    @contextmanager
    def _talking(self):
        """Any failure of the remote becomes one line naming it, without credentials."""
        try:
            yield
        except ReprobuildError:
            raise
        except Exception as exc:
            detail = _one_line(exc)
            if not detail.startswith(type(exc).__name__) and not isinstance(exc, OSError):
                detail = f"{type(exc).__name__}: {detail}"
            raise CacheError(f"remote {self.url}: {detail}") from exc


def _callback(progress: Progress):
    """An fsspec callback that counts the bytes a transfer moves into `progress`."""
    return _counter_class()(progress)


@functools.cache
def _counter_class():
    from fsspec.callbacks import Callback  # fsspec only once a remote is used

    class Counter(Callback):
        def __init__(self, progress):
            super().__init__()
            self.progress = progress

        def relative_update(self, inc=1):
            self.value += inc
            self.progress.advance(inc)

        def absolute_update(self, value):
            self.relative_update(value - self.value)

    return Counter


# -- push and pull of what a lockfile names ---------------------------------------------


def lock_outs(
    project,
    names: list[str] | None,
    source_paths: list[str] | None = None,
    locked: tuple[dict, dict] | None = None,
) -> tuple[list[tuple[str, str, Meta]], list[str], dict]:
    """(stage, path, meta) of every cached out the lockfile records for these stages
    (all when None) and of the tracked sources in `source_paths` (all when None;
    stage sources.OWNER), the keys of their run records, and the lockfile's entries.
    `locked`: (stages, sources) of the lockfile at another revision, instead of today's;
    its sources are the ones declared then."""
    if locked is None:
        entries, problem = project.read_lock()
        if problem:
            raise UsageError(problem)
        pins = project.read_sources()
        declared = {s.path for s in project.pipeline.sources}
    else:
        entries, pins = locked
        declared = set(pins)
    outs = [
        (sources.OWNER, path, meta)
        for path, meta in sources.metas(pins, source_paths)
        if path in declared and HEX.match(meta.hash)
    ]
    keys = []
    for name in names if names is not None else list(project.pipeline.stages):
        entry, stage = entries.get(name), project.pipeline.stages.get(name)
        if not entry or stage is None:
            continue
        cached = {o.path for o in stage.outs if o.cache}
        for path, d in sorted((entry.get("outs") or {}).items()):
            meta = Meta.from_lock(d)
            if meta is not None and path.rstrip("/") in cached and HEX.match(meta.hash):
                outs.append((name, path.rstrip("/"), meta))
        if cached and len(cached) == len(stage.outs) and isinstance(entry.get("key"), str):
            keys.append(entry["key"])
    return outs, keys, entries


def push(
    project,
    remote: Remote,
    names: list[str] | None = None,
    everything: bool = False,
    progress: Progress | None = None,
    source_paths: list[str] | None = None,
) -> TransferResult:
    """Upload what the lockfile names for `names` (all stages when None) and the sources in
    `source_paths` (all when None), or the whole cache."""
    with project.cache.using():
        if everything:
            metas = [
                Meta(d, 0, 0 if is_dir else None) for _, d, is_dir in project.cache.iter_objects()
            ]
            keys = [k for _, k in project.cache.iter_runs()]
            result = remote.push(metas, keys, progress)
            return result
        outs, keys, _ = lock_outs(project, names, source_paths)
        result = remote.push([m for _, _, m in outs], keys, progress)
        result.missing = [f"{stage}: {path}" for stage, path, m in outs if not project.cache.has(m)]
        return result


def pull(
    project,
    remote: Remote | None,
    names: list[str] | None = None,
    progress: Progress | None = None,
    source_paths: list[str] | None = None,
    locked: tuple[dict, dict] | None = None,
) -> tuple[TransferResult, dict]:
    """Download what the lockfile (or `locked`, as lock_outs) names for `names` and
    `source_paths` into the local cache; (result, lock entries). Imports neither cache
    has come from their origins; with no remote (None) that is all that is fetched."""
    project.cache.ensure()
    with project.cache.using():
        outs, keys, entries = lock_outs(project, names, source_paths, locked)
        result = TransferResult()
        if remote is not None:
            result = remote.fetch([m for _, _, m in outs], progress)
            result.runs = remote.fetch_runs(keys)
            result.untrusted = [
                f"{why}: run record {k}" for k, why in sorted(remote.untrusted.items())
            ]
        pins = project.read_sources() if locked is None else locked[1]
        _from_origins(project, pins, [(p, m) for owner, p, m in outs if owner == sources.OWNER])
        result.missing = [f"{stage}: {path}" for stage, path, m in outs if not project.cache.has(m)]
    return result, entries


def _from_origins(project, pins: dict, wanted: list[tuple[str, Meta]]) -> None:
    """Imported sources neither cache has: their pinned version from the origin itself."""
    for path, meta in wanted:
        entry = pins.get(path) or {}
        if entry.get("url") and not project.cache.has(meta):
            from . import origin

            origin.fetch_pinned(project, path, entry)
