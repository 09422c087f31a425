"""Buckets behind one small interface: S3 (boto3), GCS (google-cloud-storage) and local folders.

The only place that holds boto3 and google-cloud-storage transfer code, and where their exceptions become
one-line :class:`~job.errors.UserError` s (the user's to fix: missing bucket/key, access denied, bad credentials)
or :class:`StorageError` s (failed after the client's retries: the job may be retried).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from job.errors import UserError, exception_chain, first_line
from job.storage.errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsRejected,
    ObjectNotFound,
    StorageError,
)
from job.storage.uris import is_remote, parse_uri

MB = 1024 * 1024
FILE_WORKERS = 4  # files of one folder uploaded/downloaded at once (each S3 file also goes multipart)


@dataclass(frozen=True)
class StorageSettings:
    """How to reach object storage: the run context reads these from params and environment (job.context)."""

    s3_endpoint_url: str | None = None  # s3_endpoint_url param > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL
    retry_mode: str = "standard"  # AWS_RETRY_MODE: backoff on throttling, 5xx, dropped links
    max_attempts: int = 8  # AWS_MAX_ATTEMPTS
    request_checksum_calculation: str | None = None  # AWS_REQUEST_CHECKSUM_CALCULATION (None: by endpoint)
    response_checksum_validation: str | None = None  # AWS_RESPONSE_CHECKSUM_VALIDATION
    gcp_project: str | None = None  # GOOGLE_CLOUD_PROJECT


_settings = [StorageSettings()]


def configure(settings: StorageSettings) -> None:
    """Process-wide storage settings (set once by the run context, before any transfer)."""
    _settings[0] = settings


def settings() -> StorageSettings:
    return _settings[0]


@dataclass(frozen=True)
class Obj:
    key: str
    size: int
    etag: str


class _Store(Protocol):
    """What the rest of this module needs from a bucket (or a local folder). Keys are relative to the root."""

    def head(self, key: str) -> Obj | None: ...
    def list(self, prefix: str) -> list[Obj]: ...
    def read(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> None: ...
    def upload(self, src: Path, key: str) -> None: ...
    def write(self, data: bytes, key: str) -> None: ...
    def delete(self, keys: list[str]) -> None: ...


class _S3Store:
    """One bucket through boto3: multipart transfers (TransferConfig), adaptive/standard retries with backoff."""

    def __init__(self, bucket: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        conf = settings()
        # boto3 >= 1.36 adds CRC checksums to every upload; several S3-compatible stores (older MinIO, Ceph, R2)
        # reject them, so with a custom endpoint they are sent only where the API requires them.
        checksums = "when_required" if conf.s3_endpoint_url else "when_supported"
        config = Config(
            request_checksum_calculation=conf.request_checksum_calculation or checksums,
            response_checksum_validation=conf.response_checksum_validation or checksums,
            retries={"mode": conf.retry_mode, "max_attempts": conf.max_attempts},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=FILE_WORKERS * 10,
            user_agent_extra="seq2seq-job",
        )
        # endpoint_url=None: AWS itself, or what botocore's own config files say.
        logging.getLogger("botocore.credentials").setLevel(logging.WARNING)  # "Found credentials in ..." per client
        session = boto3.session.Session()  # clients from the default session are not safe to create in threads
        self.client = session.client("s3", endpoint_url=conf.s3_endpoint_url, config=config)
        self.endpoint = self.client.meta.endpoint_url
        # 16 MB parts, 8 in flight per file: a 1 GB safetensors file moves as 64 parts, 8 at a time.
        self.transfer = TransferConfig(multipart_threshold=16 * MB, multipart_chunksize=16 * MB, max_concurrency=8)

    def head(self, key: str) -> Obj | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _s3_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _s3_code(exc) == "403":  # HEAD answers have no body: ask again with a GET to learn why
                self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")
            raise
        return Obj(key, int(out["ContentLength"]), out.get("ETag", "").strip('"'))

    def list(self, prefix: str) -> list[Obj]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [
            Obj(o["Key"], int(o["Size"]), o.get("ETag", "").strip('"')) for p in pages for o in p.get("Contents", [])
        ]

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def download(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, key, str(dest), Config=self.transfer)

    def upload(self, src: Path, key: str) -> None:
        self.client.upload_file(str(src), self.bucket, key, Config=self.transfer)

    def write(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            out = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if out.get("Errors"):  # per-key failures come in the answer: raise them like any other S3 error
                from botocore.exceptions import ClientError

                first = out["Errors"][0]
                raise ClientError(
                    {"Error": {"Code": first.get("Code"), "Message": first.get("Message")}}, "DeleteObjects"
                )


class _GCSStore:
    """One bucket through google-cloud-storage (Application Default Credentials; the library retries)."""

    def __init__(self, bucket: str) -> None:
        from google.cloud import storage  # the optional [gcs] extra

        self.client = storage.Client(project=settings().gcp_project)
        self.bucket = self.client.bucket(bucket)
        self.endpoint = "https://storage.googleapis.com"

    def head(self, key: str) -> Obj | None:
        blob = self.bucket.get_blob(key)
        return None if blob is None else Obj(key, int(blob.size or 0), blob.etag or blob.md5_hash or "")

    def list(self, prefix: str) -> list[Obj]:
        return [Obj(b.name, int(b.size or 0), b.etag or "") for b in self.client.list_blobs(self.bucket, prefix=prefix)]

    def read(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()

    def download(self, key: str, dest: Path) -> None:
        self.bucket.blob(key).download_to_filename(str(dest))

    def upload(self, src: Path, key: str) -> None:
        blob = self.bucket.blob(key)
        blob.chunk_size = 32 * MB  # resumable upload in 32 MB chunks: a dropped connection resumes, not restarts
        blob.upload_from_filename(str(src))

    def write(self, data: bytes, key: str) -> None:
        self.bucket.blob(key).upload_from_string(data, content_type="application/json")

    def delete(self, keys: list[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            with contextlib.suppress(NotFound):
                self.bucket.delete_blob(key)


class _LocalStore:
    """A local folder (output_uri=/mnt/share/run): the same operations as a bucket, by copying."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.endpoint = str(root)

    def head(self, key: str) -> Obj | None:
        path = self.root / key
        if not path.is_file():
            return None
        stat = path.stat()
        return Obj(key, stat.st_size, f"{stat.st_mtime_ns}-{stat.st_size}")

    def list(self, prefix: str) -> list[Obj]:
        if not self.root.is_dir():
            return []
        found = (self.head(p.relative_to(self.root).as_posix()) for p in sorted(self.root.rglob("*")) if p.is_file())
        return [o for o in found if o is not None and o.key.startswith(prefix)]

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self.root / key, dest)

    def upload(self, src: Path, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    def write(self, data: bytes, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)
        for folder in sorted({(self.root / k).parent for k in keys}, key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


class _Location:
    """A folder in a store (``base`` is a key prefix) plus the URI and parameter name used in messages."""

    def __init__(self, uri: str, *, what: str) -> None:
        self.uri, self.what = uri.rstrip("/"), what
        self.folder_only = uri.endswith("/")  # s3://bucket/prefix/ names a folder, never an object
        if is_remote(uri):
            parsed = parse_uri(uri, what=what)
            self.base = parsed.prefix
            with self.errors():
                self.store: _Store = _S3Store(parsed.bucket) if parsed.scheme == "s3" else _GCSStore(parsed.bucket)
        else:
            self.base = ""
            self.store = _LocalStore(Path(uri).expanduser())

    def key(self, rel: str = "") -> str:
        return self.base + rel

    def sub(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def list(self, rel: str = "") -> dict[str, Obj]:
        """Objects under ``rel/``, keyed by their path relative to this folder (directory markers skipped)."""
        prefix = self.key(rel.rstrip("/") + "/" if rel else "")
        with self.errors():
            found = self.store.list(prefix)
        return {o.key[len(self.base) :]: o for o in found if not o.key.endswith("/")}

    @contextlib.contextmanager
    def errors(self, uri: str | None = None) -> Iterator[None]:
        """Turn the client libraries' exceptions into UserError / StorageError lines naming the URI."""
        try:
            yield
        except (UserError, StorageError):
            raise
        except Exception as exc:
            mapped = _translate(exc, uri=uri or self.uri, what=self.what, endpoint=self._endpoint())
            if mapped is None:
                raise
            raise mapped from exc

    def _endpoint(self) -> str:
        store = getattr(self, "store", None)
        return str(getattr(store, "endpoint", None) or settings().s3_endpoint_url or "the default endpoint")


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "ExpiredTokenException",
}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}


def _translate(exc: Exception, *, uri: str, what: str, endpoint: str) -> Exception | None:
    """A one-line UserError for the user's mistakes, a StorageError for failures that outlived the retries."""
    from botocore.exceptions import ClientError

    where = f"{what} {uri}"
    for err in exception_chain(exc):
        name = type(err).__name__
        if isinstance(err, ClientError):  # botocore also raises modeled subclasses (NoSuchBucket, ...)
            code = _s3_code(err)  # type: ignore[arg-type]
            if code == "NoSuchBucket":
                return BucketNotFound(
                    f"{where}: the bucket does not exist at {endpoint}; check the bucket name and "
                    "the endpoint/region it lives in"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(f"{where}: no such object or prefix; check the key")
            if code in _CREDENTIALS:
                return CredentialsRejected(
                    f"{where}: the S3 credentials were rejected ({code}); check AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the job's IAM role"
                )
            if code in _DENIED:
                return AccessDenied(
                    f"{where}: access denied; grant the job's credentials s3:ListBucket and "
                    "s3:GetObject (and s3:PutObject, s3:DeleteObject for output_uri)"
                )
            return StorageError(f"{where}: S3 request failed after retries ({code}: {first_line(err, 300)})")
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return CredentialsRejected(
                f"{where}: no usable AWS credentials ({first_line(err, 300)}); set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an IAM role"
            )
        if name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"):
            return StorageError(
                f"{where}: cannot reach the storage endpoint {endpoint} after retries "
                f"({first_line(err, 300)}); check s3_endpoint_url/AWS_ENDPOINT_URL and the network"
            )
        if name == "NoRegionError":
            return UserError(f"{where}: no AWS region configured; set AWS_DEFAULT_REGION (or AWS_REGION)")
        if name == "DefaultCredentialsError":
            return CredentialsRejected(
                f"{where}: no Google credentials; set GOOGLE_APPLICATION_CREDENTIALS or run with a "
                "service account (gcloud auth application-default login locally)"
            )
        if name == "NotFound" and type(err).__module__.startswith("google"):
            return ObjectNotFound(f"{where}: bucket or object not found ({first_line(err, 300)}); check the URI")
        if name in ("Forbidden", "Unauthorized") and type(err).__module__.startswith("google"):
            return AccessDenied(
                f"{where}: access denied ({first_line(err, 300)}); grant the service account "
                "storage.objects.get/list (and create/delete for output_uri)"
            )
        if type(err).__module__.startswith("google.api_core"):
            return StorageError(f"{where}: GCS request failed after retries ({first_line(err, 300)})")
    return None
