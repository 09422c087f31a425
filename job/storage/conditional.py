"""Compare-and-swap on one small object: the storage half of the single-writer lease (:mod:`job.lease`).

Each store writes an object only if it is still the version the caller read, atomically on the server:

* S3: ``PutObject`` with ``If-None-Match: *`` (create only if absent) or ``If-Match: <ETag>`` (replace only that
  version), ``DeleteObject`` with ``If-Match`` (AWS S3 since 2024; moto, MinIO and R2 support them; an
  S3-compatible store that ignores the headers gives no protection, docs/reliability.md);
* GCS: ``ifGenerationMatch`` (0 = absent);
* a local folder (``project_name``, or ``output_uri`` on a shared mount): the same under a file lock
  (:mod:`job.locks`), the version being the content's SHA-256.

A lost race is ``None``/``False``, never an exception; transfer failures raise like every storage call.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from job.locks import file_lock
from job.storage.stores import _GCSStore, _LocalStore, _Location, _s3_code, _S3Store

_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class VersionedObject:
    """One object (``name`` in the folder ``uri``) read with its version and written only over that version."""

    def __init__(self, uri: str, name: str, *, what: str = "output") -> None:
        self.loc = _Location(uri, what=what)
        self.key = self.loc.key(name)
        self.uri = self.loc.sub(name)

    def read(self) -> tuple[bytes, str] | None:
        """The content and its version, or None when there is no such object."""
        store = self.loc.store
        with self.loc.errors(self.uri):
            if isinstance(store, _S3Store):
                return _s3_read(store, self.key)
            if isinstance(store, _GCSStore):
                blob = store.bucket.get_blob(self.key)
                return None if blob is None else (blob.download_as_bytes(), str(blob.generation))
            return _local_read(store.root / self.key)

    def write(self, data: bytes, *, version: str | None) -> str | None:
        """Write ``data`` if the object is still at ``version`` (None: only if absent); its new version, or None."""
        store = self.loc.store
        with self.loc.errors(self.uri):
            if isinstance(store, _S3Store):
                return _s3_write(store, self.key, data, version)
            if isinstance(store, _GCSStore):
                return _gcs_write(store, self.key, data, version)
            return _local_write(_as_local(store).root / self.key, data, version)

    def delete(self, *, version: str) -> bool:
        """Delete the object if it is still at ``version``; False when someone else's version is there."""
        store = self.loc.store
        with self.loc.errors(self.uri):
            if isinstance(store, _S3Store):
                return _s3_delete(store, self.key, version)
            if isinstance(store, _GCSStore):
                return _gcs_delete(store, self.key, version)
            return _local_delete(_as_local(store).root / self.key, version)


def _as_local(store: object) -> _LocalStore:
    if not isinstance(store, _LocalStore):  # pragma: no cover - _Location builds only these three
        raise TypeError(f"unsupported store {type(store).__name__}")
    return store


# ------------------------------------------------------------------------------------------------------ S3
def _s3_read(store: _S3Store, key: str) -> tuple[bytes, str] | None:
    from botocore.exceptions import ClientError

    try:
        out = store.client.get_object(Bucket=store.bucket, Key=key)
    except ClientError as exc:
        if _s3_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return out["Body"].read(), str(out.get("ETag", "")).strip('"')


def _s3_write(store: _S3Store, key: str, data: bytes, version: str | None) -> str | None:
    from botocore.exceptions import ClientError

    condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": f'"{version}"'}
    try:
        out = store.client.put_object(Bucket=store.bucket, Key=key, Body=data, **condition)
    except ClientError as exc:
        if _s3_code(exc) in _CONFLICT or (version is not None and _s3_code(exc) in ("NoSuchKey", "404")):
            return None
        raise
    return str(out.get("ETag", "")).strip('"')


def _s3_delete(store: _S3Store, key: str, version: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        store.client.delete_object(Bucket=store.bucket, Key=key, IfMatch=f'"{version}"')
    except ClientError as exc:
        if _s3_code(exc) in (*_CONFLICT, "NoSuchKey", "404"):
            return False
        raise
    return True


# ----------------------------------------------------------------------------------------------------- GCS
def _gcs_write(store: _GCSStore, key: str, data: bytes, version: str | None) -> str | None:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = store.bucket.blob(key)
    try:
        blob.upload_from_string(data, content_type="application/json", if_generation_match=int(version or 0))
    except (PreconditionFailed, NotFound):
        return None
    return str(blob.generation)


def _gcs_delete(store: _GCSStore, key: str, version: str) -> bool:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        store.bucket.delete_blob(key, if_generation_match=int(version))
    except (PreconditionFailed, NotFound):
        return False
    return True


# --------------------------------------------------------------------------------------------------- local
def _local_read(path: Path) -> tuple[bytes, str] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data, hashlib.sha256(data).hexdigest()


def _local_write(path: Path, data: bytes, version: str | None) -> str | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        current = _local_read(path)
        if (current[1] if current else None) != version:
            return None
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers see the old record or the new one, never half of one
    return hashlib.sha256(data).hexdigest()


def _local_delete(path: Path, version: str) -> bool:
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock):
        current = _local_read(path)
        if current is None or current[1] != version:
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # No litter in the output folder. A writer already waiting on this lock file then holds a lock on a name
        # that is gone while a newcomer locks a new file: both may create the record, one os.replace wins, and the
        # other learns it at its first checkpoint (job.lease verifies before every save) — three jobs racing at
        # the instant of a release, on one folder.
        lock.unlink(missing_ok=True)
    return True
