"""Vertex AI's path contract: ``gs://`` folders (``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``…) and the FUSE mount.

Vertex mounts Cloud Storage at ``/gcs`` (Cloud Storage FUSE), so ``gs://bucket/path`` is the local folder
``/gcs/bucket/path`` wherever that mount exists. ``GCS_FUSE_ROOT`` moves the mount point (tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

GCS_ROOT_ENV = "GCS_FUSE_ROOT"
DEFAULT_GCS_ROOT = Path("/gcs")
FOLDER_ENV = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR")


def gcs_local_path(uri: str, env: Mapping[str, str]) -> str | None:
    """``gs://bucket/path`` → ``/gcs/bucket/path`` when the Cloud Storage FUSE mount exists, else ``None``."""
    if not uri.startswith("gs://"):
        return uri.rstrip("/") or uri
    root = Path(env.get(GCS_ROOT_ENV) or DEFAULT_GCS_ROOT)
    bucket_and_path = uri[len("gs://") :].strip("/")
    return str(root / bucket_and_path) if root.is_dir() and bucket_and_path else None


def folder(value: str | None, env: Mapping[str, str]) -> str | None:
    """A Vertex folder variable as a local path where the FUSE mount has it, else the gs:// URI itself."""
    if not value:
        return None
    local = gcs_local_path(value, env)
    return local if local is not None else value.rstrip("/")


def is_vertex(env: Mapping[str, str]) -> bool:
    return bool(env.get("CLUSTER_SPEC") or env.get("CLOUD_ML_JOB_ID") or any(env.get(k) for k in FOLDER_ENV))
