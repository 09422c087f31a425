"""Error classes and the exit codes they map to.

Only ``job.__main__``/``job.cli`` turns exceptions into exit codes. Everything else raises:

* :class:`UserError` — bad parameters, data, paths or URIs. Retrying cannot help, so it gets its
  own exit code (``EXIT_USER_ERROR``) that a Kubernetes ``podFailurePolicy`` or a SageMaker retry
  rule can match to stop retrying. Its message is one line that names the culprit and the fix.
* anything else — a framework or infrastructure failure; exit code ``EXIT_FAILURE`` (retryable).
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path

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


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving (and uploading) a checkpoint: exit ``EXIT_PREEMPTED``.

    Raised by :mod:`job.training.preemption`; the platform's retry resumes from that checkpoint (:mod:`job.resume`).
    """

    exit_code = EXIT_PREEMPTED

    def __init__(self, *, signal_name: str, step: int, checkpoint: str | None) -> None:
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(f"stopped by {signal_name} at step {step} after saving {where}; run again to resume")
        self.step = step
        self.checkpoint = checkpoint


class SignalStop(BaseException):
    """SIGTERM/SIGINT outside the training loop: stop now (:mod:`job.stopping`), exit ``EXIT_PREEMPTED``.

    A BaseException, like KeyboardInterrupt, so that no library's ``except Exception`` swallows it and the run
    carries on past the platform's grace period.
    """

    exit_code = EXIT_PREEMPTED


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first (libraries often hide the real error in ``__context__``)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def disk_full(exc: BaseException, folders: Iterable[Path] = ()) -> str | None:
    """A one-line "disk full" reason when ``exc`` came from a full volume, else None.

    Python I/O says so (ENOSPC anywhere in the exception chain); torch.save does not (it raises a RuntimeError
    such as "unexpected pos"), so a failure while one of the job's ``folders`` has almost no space left is
    reported as a full disk too.
    """
    for current in exception_chain(exc):
        if (isinstance(current, OSError) and current.errno == errno.ENOSPC) or "No space left on device" in str(
            current
        ):
            where = f" writing {current.filename}" if isinstance(current, OSError) and current.filename else ""
            return f"disk full{where}: no space left on device; free space or give the job a larger volume"
    for folder in folders:
        probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if probe is None:
            continue
        usage = shutil.disk_usage(probe)
        if usage.free < min(LOW_SPACE_BYTES, usage.total // 100):
            return (
                f"disk full: {type(exc).__name__} ({first_line(exc, 200)}) while {probe} has "
                f"{usage.free // 2**20} MB free; free space or give the job a larger volume"
            )
    return None


LOW_SPACE_BYTES = 256 * 2**20


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (cut to ``limit`` characters), or its type name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
