"""Typed storage errors: callers decide by type (``except ObjectNotFound``), never by message text.

Two families, by who can fix them:

* :class:`StorageUserError` (a :class:`~job.errors.UserError`, exit code 2): the URI, the bucket, the
  credentials or a published folder is wrong; retrying the job cannot help.
* :class:`StorageError` (exit code 1): a transfer failed after the client library's retries, or a download
  did not match its manifest; a retry of the job may succeed.
"""

from __future__ import annotations

from job.errors import UserError


class StorageUserError(UserError):
    """A storage problem the user must fix (exit code 2)."""


class BucketNotFound(StorageUserError):
    """The bucket does not exist at the endpoint."""


class ObjectNotFound(StorageUserError):
    """No object (or no prefix) at the URI."""


class AccessDenied(StorageUserError):
    """The credentials work but may not read or write there."""


class CredentialsRejected(StorageUserError):
    """No credentials, or credentials the service rejects."""


class IncompleteFolder(StorageUserError):
    """A published folder without a (valid) manifest, or whose files disagree with it."""


class UnsafeKey(StorageUserError):
    """An object key that would land outside the local target folder (``..``, absolute)."""


class StorageError(RuntimeError):
    """A transfer that failed after retries (network, throttling, 5xx): not the user's fault, retry the job."""


class ChecksumMismatch(StorageError):
    """A downloaded file's SHA-256 differs from the one its folder's manifest lists."""
