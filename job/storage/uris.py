"""``s3://`` and ``gs://`` URIs: parsing, validation (for the params), and where downloads are cached."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from job.errors import UserError
from job.storage.errors import UnsafeKey

SCHEMES = ("s3", "gs")
UNSAFE_KEY_HINT = "a '..' segment in the key would reach outside the local folder it is downloaded to; remove it"
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,221}$")


@dataclass(frozen=True)
class Uri:
    """``scheme://bucket/key``; ``key`` has no leading slash and may be empty (the bucket's root)."""

    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def prefix(self) -> str:
        """The key as a folder prefix: ``a/b/`` (or ``""`` at the bucket root)."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""

    def child(self, rel: str) -> Uri:
        return Uri(self.scheme, self.bucket, self.prefix + rel)


def is_remote(uri: str | None) -> bool:
    """True for ``s3://`` and ``gs://`` URIs (``/gcs/...`` FUSE paths are local)."""
    return isinstance(uri, str) and uri.split("://", 1)[0].lower() in SCHEMES and "://" in uri


def parse_uri(uri: str, *, what: str = "uri") -> Uri:
    """Split ``s3://bucket/key`` into its parts; a malformed URI is a UserError naming ``what``."""
    problem = uri_problem(uri, what, check_extras=False)
    if problem:
        raise UnsafeKey(problem) if problem.endswith(UNSAFE_KEY_HINT) else UserError(problem)
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    return Uri(scheme.lower(), bucket, key.lstrip("/"))


def unsafe_key(key: str) -> bool:
    """A key with a ``..`` segment would land outside the folder it is downloaded into (``cache_dir``)."""
    return ".." in key.replace("\\", "/").split("/")


def uri_problem(value: str | None, what: str, *, check_extras: bool = True) -> str | None:
    """Why ``value`` is not a usable local path or s3:// / gs:// URI (None when it is), for params validation."""
    if not value or "://" not in value:
        return None
    scheme, rest = value.split("://", 1)
    if scheme.lower() not in SCHEMES:
        return (
            f"{what}={value}: unsupported scheme {scheme}://; use s3://bucket/key, gs://bucket/key, a local "
            "path or (data_path/model) a Hub id without a scheme"
        )
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        return f"{what}={value}: '{bucket}' is not a bucket name; write {scheme}://BUCKET/KEY"
    if unsafe_key(key):
        return f"{what}={value}: {UNSAFE_KEY_HINT}"
    if check_extras and scheme.lower() == "gs" and not _has_gcs():
        return f"{what}={value} needs google-cloud-storage: pip install 'seq2seq-job[gcs]'"
    return None


def cache_root(cache_dir: str | Path | None) -> Path:
    """Where remote inputs are downloaded: ``cache_dir``, else ``$HF_HOME/seq2seq-job/remote``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "seq2seq-job" / "remote"


def _has_gcs() -> bool:
    try:
        importlib.import_module("google.cloud.storage")
    except ImportError:
        return False
    return True
