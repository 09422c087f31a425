"""Error classes and the exit codes they map to.

Only ``job.__main__``/``job.cli`` turns exceptions into exit codes. Everything else raises:

* :class:`UserError` — bad parameters, data, paths or URIs. Retrying cannot help, so it gets its
  own exit code (``EXIT_USER_ERROR``) that a Kubernetes ``podFailurePolicy`` or a SageMaker retry
  rule can match to stop retrying. Its message is one line that names the culprit and the fix.
* anything else — a framework or infrastructure failure; exit code ``EXIT_FAILURE`` (retryable).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM: stopped by the platform after saving a checkpoint; retry resumes


class UserError(Exception):
    """A mistake the user can fix: bad parameter, data file, column, row, path or URI."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())
