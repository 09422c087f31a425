"""Inputs and outputs outside the machine: local folders, ``s3://`` and ``gs://``.

The only package that holds boto3 and google-cloud-storage transfer code (:mod:`job.storage.stores`).

* :func:`fetch` turns an ``s3://``/``gs://`` file or prefix into a local path (local paths, including Vertex's
  ``/gcs/bucket/...`` FUSE mounts, are returned as they are). Downloads go to a cache folder, are skipped while
  the object's ETag and size are unchanged, and run once per node: processes queue on a file lock and the
  later ones find the files already there.
* :class:`Publisher` mirrors the local output folder to ``output_uri``: checkpoints in the background as they
  are saved (old remote ones deleted beyond ``save_total_limit``), ``metrics.json`` after each evaluation, the
  final folder at the end. A folder's files go first and its ``manifest.json`` (:mod:`job.manifest`) last, so
  a remote folder is complete if and only if its manifest exists; readers (:func:`fetch` of a model,
  :func:`download_folder`, :func:`list_complete_checkpoints`) trust nothing else.

Remote layout (mirrors the local project folder)::

    <output_uri>/checkpoints/checkpoint-N/...  + manifest.json
    <output_uri>/metrics.json
    <output_uri>/<final model files>           + manifest.json

Errors: a missing bucket or key, denied access or rejected credentials are one-line :class:`UserError`\\ s that
name the URI. Throttling, 5xx and dropped connections are retried with backoff by the client library
(``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE`` tune S3); what still fails is a :class:`StorageError` (exit code 1, so
the platform may retry the job).
"""

from job.storage.errors import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    CredentialsRejected,
    IncompleteFolder,
    ObjectNotFound,
    StorageError,
    StorageUserError,
    UnsafeKey,
)
from job.storage.fetch import delete_folder, download_folder, fetch, list_complete_checkpoints, localize
from job.storage.publish import STAGING, Publisher
from job.storage.stores import StorageSettings, configure
from job.storage.uris import Uri, cache_root, is_remote, parse_uri, uri_problem

__all__ = [
    "STAGING",
    "AccessDenied",
    "BucketNotFound",
    "ChecksumMismatch",
    "CredentialsRejected",
    "IncompleteFolder",
    "ObjectNotFound",
    "Publisher",
    "StorageError",
    "StorageSettings",
    "StorageUserError",
    "UnsafeKey",
    "Uri",
    "cache_root",
    "configure",
    "delete_folder",
    "download_folder",
    "fetch",
    "is_remote",
    "list_complete_checkpoints",
    "localize",
    "parse_uri",
    "uri_problem",
]
