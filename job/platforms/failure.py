"""The one-line failure reason, masked and cut, written where the platform shows it.

* SageMaker: ``/opt/ml/output/failure`` (its first 1024 characters become the job's FailureReason).
* Kubernetes: the termination-message file (``/dev/termination-log``, or ``TERMINATION_MESSAGE_PATH``), which
  the kubelet creates; elsewhere it does not exist and is not created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from job.platforms import sagemaker
from job.secrets import mask

log = logging.getLogger(__name__)

TERMINATION_LOG_ENV = "TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
FAILURE_MAX_CHARS = 1024  # SageMaker keeps the first 1024 characters of /opt/ml/output/failure


def failure_reason(reason: str, env: Mapping[str, str]) -> str:
    """One line of at most FAILURE_MAX_CHARS characters, with secret values and token patterns masked."""
    return mask(" ".join(str(reason).split()), env)[:FAILURE_MAX_CHARS]


def write_failure(reason: str, env: Mapping[str, str], *, sm_root: Path | None = None) -> list[Path]:
    """Append the reason to the platform's failure files; never raises. Returns the files written."""
    line = failure_reason(reason, env) + "\n"
    try:
        targets = _failure_files(env, sm_root)
    except Exception as exc:  # a broken platform config must not hide the original failure
        log.warning("Could not tell where to write the failure reason: %s", exc)
        return []
    written = []
    for path in targets:
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)
            written.append(path)
        except OSError as exc:
            log.warning("Could not write the failure reason to %s: %s", path, exc)
    return written


def _failure_files(env: Mapping[str, str], sm_root: Path | None) -> list[Path]:
    files = list(termination_log(env))
    root = sagemaker.root(env, sm_root)
    if (root / "input" / "config").is_dir():
        (root / "output").mkdir(parents=True, exist_ok=True)
        files.insert(0, root / "output" / "failure")
    return files


def termination_log(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The Kubernetes termination-message file, when the kubelet created it and it is writable."""
    path = Path(env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    return (path,) if path.is_file() and os.access(path, os.W_OK) else ()
