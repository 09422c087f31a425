"""The one exit path of every entry point: exception → exit code → failure reason → teardown.

``seq2seq-job`` (:func:`job.cli.main`), ``python -m job`` and ``python -m job.launch`` all end here, so a
failure reads the same everywhere: one log line, the reason where the platform shows it (SageMaker's
``/opt/ml/output/failure``, the Kubernetes termination log), and the exit code that tells the platform what
to do next:

* 0 — done; 2 — bad input (:class:`~job.errors.UserError`): don't retry; 1 — any other failure: retryable;
  143 — stopped by SIGTERM after saving a checkpoint (:class:`~job.errors.Preempted`): the retry resumes;
  130 — a second Ctrl-C.

Under :mod:`job.launch` each worker also records its exit code in ``JOB_EXIT_CODE_DIR``
(:func:`report_exit_code`), because torchrun exits 1 whatever its workers exited with; the launcher then
exits with :func:`resolve_exit_code`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from job.context import EXIT_CODE_DIR_ENV
from job.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    Preempted,
    SignalStop,
    UserError,
    disk_full,
)
from job.platforms.failure import write_failure
from job.storage.errors import StorageError

log = logging.getLogger("job")
EXIT_INTERRUPTED = 130


def run(
    command: Callable[[], int],
    *,
    name: str,
    env: Mapping[str, str],
    volumes: Callable[[], Iterable[Path]] = tuple,
) -> int:
    """Run ``command`` and turn whatever it raises into an exit code; tear down and record the code.

    ``volumes`` names the folders the job writes: a failure while one of them is full is reported as disk full.
    """
    try:
        code = command()
    except BaseException as exc:
        code = _failed(exc, name=name, env=env, volumes=volumes)
    if code == EXIT_OK:
        shutdown_process_group()  # after a failure, exit at once: a dead peer could make the teardown wait
        exit_after_deepspeed()
    return report_exit_code(code, env)


def _failed(exc: BaseException, *, name: str, env: Mapping[str, str], volumes: Callable[[], Iterable[Path]]) -> int:
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, UserError):
        return _report(str(exc), EXIT_USER_ERROR, env)
    if isinstance(exc, Preempted | SignalStop):  # checkpoint saved and uploaded (or nothing yet): the retry resumes
        log.warning("%s", exc)
        return EXIT_PREEMPTED
    if isinstance(exc, KeyboardInterrupt):
        log.error("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(exc, StorageError):  # storage still failing after the client's retries: retryable
        return _report(str(exc), EXIT_FAILURE, env)
    if not isinstance(exc, Exception):
        raise exc
    if full := disk_full(exc, list(volumes())):  # retryable: a retry may get a node with space
        return _report(full, EXIT_FAILURE, env)
    log.error("%s failed", name, exc_info=exc)
    write_failure(f"{name} failed: {type(exc).__name__}: {exc}", env)
    return EXIT_FAILURE


def _report(reason: str, code: int, env: Mapping[str, str]) -> int:
    log.error("%s", reason)
    write_failure(reason, env)
    return code


def shutdown_process_group() -> None:
    """Tear torch.distributed down before the interpreter exits (DeepSpeed's CPU workers abort otherwise)."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to find nothing to shut down
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_after_deepspeed() -> None:
    """After a successful DeepSpeed run, end the process without C++ static destructors (exit code 0).

    DeepSpeed's JIT-built CPU extensions can abort in their destructors when the interpreter exits ("terminate
    called without an active exception", seen once in about fifteen 2-process zero3_offload runs on CPU), which
    turned a finished job into a failed one. Everything is written and the process group is down by now, and
    the Trainer closed its loggers at the end of training; only Python's own exit-time clean-up is skipped.
    Without DeepSpeed this returns and the process exits normally.
    """
    comm = sys.modules.get("deepspeed.comm.comm")
    if comm is None or getattr(comm, "cdb", None) is None:  # DeepSpeed's communication backend was never set up
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


# ------------------------------------------------------------------------------------ exit codes for job.launch
def report_exit_code(code: int, env: Mapping[str, str]) -> int:
    """Record this worker's exit code for job.launch (only when it set ``JOB_EXIT_CODE_DIR``); return ``code``."""

    folder = env.get(EXIT_CODE_DIR_ENV)
    if folder and code != EXIT_OK:
        try:
            path = Path(folder) / f"rank-{env.get('RANK', '0')}"
            path.write_text(str(code), encoding="utf-8")
        except OSError:
            pass  # the launcher then falls back to torchrun's own exit code
    return code


def read_exit_codes(folder: Path) -> dict[int, int]:
    """Non-zero exit codes the workers of this node recorded, by global rank, in the order they were written."""
    codes = []
    for path in folder.glob("rank-*"):
        try:
            codes.append((path.stat().st_mtime_ns, int(path.name.removeprefix("rank-")), int(path.read_text())))
        except (OSError, ValueError):
            continue
    return {rank: code for _, rank, code in sorted(codes)}


def resolve_exit_code(launcher_code: int, worker_codes: Mapping[int, int], *, signalled: int | None = None) -> int:
    """The exit code the platform should see when torchrun exited with ``launcher_code``.

    A user error on any rank wins (2: retrying cannot help); a job stopped by SIGTERM/SIGINT exits 128 + signal
    (143 = preempted, retry resumes); otherwise the first worker failure's code, else torchrun's (1).
    """
    if launcher_code == EXIT_OK:
        return EXIT_OK
    codes = list(worker_codes.values())
    if EXIT_USER_ERROR in codes:
        return EXIT_USER_ERROR
    if signalled is not None:
        return 128 + signalled
    if codes:
        return codes[0]
    if launcher_code < 0:  # torchrun itself was killed by a signal
        return 128 - launcher_code
    return launcher_code or EXIT_FAILURE
