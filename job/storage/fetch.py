"""Reading remote folders and files: inputs into a per-node cache, and manifest-marked folders (checkpoints)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from job import manifest
from job.jsonfiles import write_atomic
from job.locks import file_lock
from job.outputs.files import CHECKPOINT_PATTERN, CHECKPOINTS
from job.storage.errors import ChecksumMismatch, IncompleteFolder, ObjectNotFound, StorageError, UnsafeKey
from job.storage.stores import FILE_WORKERS, MB, Obj, _Location
from job.storage.uris import cache_root, is_remote, parse_uri, unsafe_key

log = logging.getLogger("job.storage")

CHECKPOINT = re.compile(rf"^(?:{CHECKPOINTS}/)?({CHECKPOINT_PATTERN})/")


def localize(value: str, *, cache_dir: str | Path | None, what: str) -> str:
    """``value`` itself unless it is an s3:// / gs:// URI, which is fetched to a local path (a string)."""
    return str(fetch(value, cache_dir=cache_root(cache_dir), what=what)) if is_remote(value) else value


def fetch(uri: str, *, cache_dir: Path, what: str) -> Path:
    """A local path for ``uri``: local paths as they are; a remote file or prefix downloaded into ``cache_dir``.

    Files whose ETag and size match the previous download are reused. Processes of one node queue on a file
    lock, so the first one downloads and the others reuse. A remote folder that holds a ``manifest.json`` is
    fetched as exactly the files it lists, checksums verified; ``what="model"`` requires that manifest.
    """
    if not is_remote(uri):
        return Path(uri).expanduser()
    parsed = parse_uri(uri, what=what)
    target = cache_dir / parsed.scheme / parsed.bucket / parsed.key.strip("/")
    if not target.resolve().is_relative_to(cache_dir.resolve()):  # parse_uri refuses '..'; links are checked here
        raise UnsafeKey(f"{what} {uri}: would be downloaded outside {cache_dir}; rename the key")
    digest = hashlib.sha256(str(parsed).rstrip("/").encode()).hexdigest()[:20]
    locks, index_file = cache_dir / ".locks", cache_dir / ".index" / f"{digest}.json"
    locks.mkdir(parents=True, exist_ok=True)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(locks / f"{digest}.lock", waiting=f"Waiting for another process on this node to download {uri}"):
        return _Fetch(_Location(uri, what=what), target=target, index_file=index_file).run()


class _Fetch:
    """One download of a remote file or folder into the cache, reusing files that did not change."""

    def __init__(self, loc: _Location, *, target: Path, index_file: Path) -> None:
        self.loc, self.target, self.index_file = loc, target, index_file
        try:
            self.index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.index = {}
        self.current: set[str] = set()  # what the remote side holds now (relative paths; "" = the file itself)
        self.fresh: list[str] = []
        self.bytes = 0
        self.lock = threading.Lock()

    def run(self) -> Path:
        started = time.monotonic()
        loc = self.loc
        single = None
        if not loc.folder_only and loc.base:
            with loc.errors():
                single = loc.store.head(loc.base.rstrip("/"))
        if single is not None:  # one object
            self.current = {""}
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._get("", single, self.target)
            result = self.target
        else:  # a prefix (listing a missing bucket raises NoSuchBucket here)
            result = self._folder(loc.list())
        self._forget_stale()
        if self.fresh:
            log.info(
                "Downloaded %s: %d file(s), %.1f MB in %.1f s to %s",
                loc.uri,
                len(self.fresh),
                self.bytes / MB,
                time.monotonic() - started,
                result,
            )
        else:
            log.info("%s is unchanged; using the cached copy in %s", loc.uri, result)
        return result

    def _folder(self, objects: dict[str, Obj]) -> Path:
        loc = self.loc
        if not objects:
            raise ObjectNotFound(f"{loc.what} {loc.uri}: no such object or prefix; check the key")
        listed, raw = None, b""
        if manifest.MANIFEST in objects:
            with loc.errors():
                raw = loc.store.read(loc.key(manifest.MANIFEST))
            listed = _parse_manifest(raw, loc.sub(manifest.MANIFEST))
        elif loc.what == "model":
            raise IncompleteFolder(
                f"model {loc.uri} has no manifest.json, so it is not known to be complete (still being "
                "uploaded, or not written by seq2seq-job); point model at a folder published with "
                "output_uri, or add a manifest as docs/storage.md shows"
            )
        wanted = _wanted(objects, listed, loc)
        self.current = set(wanted) | ({manifest.MANIFEST} if listed is not None else set())
        self.target.mkdir(parents=True, exist_ok=True)
        work = [(rel, obj) for rel, obj in wanted.items() if not self._cached(rel, obj)]
        if listed is not None and work:
            manifest.clear_manifest(self.target)  # the local copy is complete only once every file is in place
            self.index.pop(manifest.MANIFEST, None)
            work = [(rel, obj) for rel, obj in work if rel != manifest.MANIFEST]
        _parallel(lambda item: self._get(item[0], item[1], self.target / item[0], listed=listed), work)
        if listed is not None and not self._cached(manifest.MANIFEST, objects[manifest.MANIFEST]):
            _write_atomic(self.target / manifest.MANIFEST, raw)  # the very manifest the files were checked against
            with self.lock:
                self.index[manifest.MANIFEST] = {"etag": objects[manifest.MANIFEST].etag, "size": len(raw)}
                self._save_index()
        return self.target

    def _cached(self, rel: str, obj: Obj) -> bool:
        """Whether the cache holds this object as last downloaded (same ETag and size, file still there)."""
        dest = self.target / rel if rel else self.target
        known = self.index.get(rel) == {"etag": obj.etag, "size": obj.size}
        return known and dest.is_file() and dest.stat().st_size == obj.size

    def _get(self, rel: str, obj: Obj, dest: Path, *, listed: dict[str, Any] | None = None) -> None:
        if self._cached(rel, obj):
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with self.loc.errors(self.loc.sub(rel)):
            self.loc.store.download(obj.key, part)
        if part.stat().st_size != obj.size:
            part.unlink(missing_ok=True)
            raise StorageError(f"{self.loc.what} {self.loc.sub(rel)}: the download ended early; retry")
        expected = (listed or {}).get(rel, {}).get("sha256")
        if expected and manifest.sha256(part) != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{self.loc.what} {self.loc.sub(rel)}: checksum differs from its manifest; retry")
        os.replace(part, dest)
        with self.lock:
            self.index[rel] = {"etag": obj.etag, "size": obj.size}
            self.fresh.append(rel)
            self.bytes += obj.size
            self._save_index()

    def _forget_stale(self) -> None:
        """Delete local files of an earlier download that the remote side no longer has."""
        for rel in [r for r in self.index if r not in self.current]:
            if rel:
                (self.target / rel).unlink(missing_ok=True)
            del self.index[rel]
        self._save_index()

    def _save_index(self) -> None:
        write_atomic(self.index_file, {"uri": self.loc.uri, "files": self.index})


def _write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    files = parsed.get("files") if isinstance(parsed, dict) and parsed.get("complete") is True else None
    if not isinstance(files, dict):
        raise IncompleteFolder(f"{where} is not a valid manifest (no 'complete'/'files'); publish the folder again")
    return files


def _wanted(objects: dict[str, Obj], listed: dict[str, Any] | None, loc: _Location) -> dict[str, Obj]:
    """The objects to download: those the manifest lists (checked present with their sizes), else all."""
    for rel in objects:
        if rel.startswith("/") or unsafe_key(rel):
            raise UnsafeKey(f"{loc.what} {loc.sub(rel)}: unsafe object name; rename it")
    if listed is None:
        return objects
    wanted = {}
    for rel, info in listed.items():
        obj = objects.get(rel)
        if obj is None or obj.size != info.get("size"):
            state = "is missing" if obj is None else f"has {obj.size} bytes, not {info.get('size')}"
            raise IncompleteFolder(
                f"{loc.what} {loc.uri}: manifest.json lists {rel} but the remote file {state}; the "
                "folder is being rewritten or damaged: publish it again"
            )
        wanted[rel] = obj
    return wanted


def _parallel(fn: Any, items: list[Any]) -> None:
    """Run ``fn`` over ``items`` with FILE_WORKERS threads; the first failure is raised."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=FILE_WORKERS, thread_name_prefix="transfer")
    try:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()
    finally:  # after a failure (or a SIGTERM, job.stopping) the queued transfers are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def list_complete_checkpoints(uri: str) -> list[str]:
    """URIs of the ``checkpoint-N`` folders under ``uri`` whose manifest exists, sorted by N.

    ``uri`` is either an output_uri (checkpoints are looked for in ``<uri>/checkpoints/``) or the checkpoints
    folder itself. Works for local folders too.
    """
    loc = _Location(uri, what="output_uri")
    found: dict[int, str] = {}
    for rel in loc.list():
        match = CHECKPOINT.match(rel)
        if match and rel == f"{match.group(0)}{manifest.MANIFEST}":
            found[int(match.group(2))] = loc.sub(match.group(0).rstrip("/"))
    return [found[n] for n in sorted(found)]


def download_folder(uri: str, local_dir: Path) -> Path:
    """Download a complete remote folder (its manifest must exist) into ``local_dir``, manifest last.

    Files already in ``local_dir`` with the manifest's size and checksum are kept. Raises UserError when the
    folder has no manifest (incomplete, or not published by this job).
    """
    loc = _Location(uri, what="checkpoint")
    objects = loc.list()
    if manifest.MANIFEST not in objects:
        raise IncompleteFolder(
            f"{uri} has no manifest.json: it is incomplete (an upload was cut off) or was not "
            "published by seq2seq-job; use a folder that list_complete_checkpoints returns"
        )
    with loc.errors():
        raw = loc.store.read(loc.key(manifest.MANIFEST))
    listed = _parse_manifest(raw, loc.sub(manifest.MANIFEST))
    wanted = _wanted(objects, listed, loc)
    local_dir.mkdir(parents=True, exist_ok=True)
    manifest.clear_manifest(local_dir)

    def get(rel: str) -> None:
        dest = local_dir / rel
        info = listed[rel]
        if dest.is_file() and dest.stat().st_size == info.get("size") and manifest.sha256(dest) == info.get("sha256"):
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with loc.errors(loc.sub(rel)):
            loc.store.download(wanted[rel].key, part)
        if manifest.sha256(part) != info.get("sha256"):
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{loc.sub(rel)}: checksum differs from its manifest after download; retry")
        os.replace(part, dest)

    _parallel(get, [rel for rel in wanted if rel != manifest.MANIFEST])
    _write_atomic(local_dir / manifest.MANIFEST, raw)  # last, and the very manifest the files were checked against
    log.info("Downloaded %s (%d files) to %s", uri, len(wanted), local_dir)
    return local_dir


def delete_folder(uri: str) -> int:
    """Delete every object under the folder ``uri``, manifests first (so it reads as incomplete at once).

    Returns the number of objects deleted. Call it on rank 0 only, as every write.
    """
    loc = _Location(uri, what="output_uri")
    found = sorted(loc.list())
    manifests = [rel for rel in found if rel.rsplit("/", 1)[-1] == manifest.MANIFEST]
    with loc.errors():
        for batch in (manifests, [rel for rel in found if rel not in manifests]):
            if batch:
                loc.store.delete([loc.key(rel) for rel in batch])
    if found:
        log.info("Deleted %s (%d objects)", loc.uri, len(found))
    return len(found)
