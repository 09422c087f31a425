"""Test helper: ``python -m job …`` as a real process whose log is read line by line while it runs.

Used by the preemption, resume, bad-input and secret tests to send real signals at chosen moments (after a
given log line, or when a checkpoint appears) and to check exit codes and everything the job printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This test's environment (HF offline, S3 settings from fixtures) without SEQ2SEQ_* leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SEQ2SEQ_")}
    # One torch thread per job: on a busy 2-core machine the default (one per core, spinning) made tiny-model
    # steps ~30x slower (16 steps: 13.7 s instead of 0.4 s).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def tiny_train_args(data: Path, model: Path, out: Path, *extra: str, max_samples: int = 32) -> list[str]:
    """``train`` on a tiny model for a few seconds: batch 8, 2 epochs, short sequences; ``extra`` flags win."""
    return [
        "train",
        "--data-path",
        str(data),
        "--model",
        str(model),
        "--project-name",
        str(out),
        "--max-samples",
        str(max_samples),
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--max-seq-length",
        "32",
        "--max-target-length",
        "8",
        *extra,
    ]


class JobProcess:
    """One run of the job; stdout and stderr are merged and collected by a reader thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        self.args = args
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "job", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=job_env(env),
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, *, timeout: float = 180.0) -> re.Match[str]:
        """Block until a log line matches ``pattern`` (a regex); fail if the job ends or time runs out first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if not self._reader.is_alive():
                    raise AssertionError(f"job ended (rc={self.process.poll()}) before /{pattern}/:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no /{pattern}/ within {timeout:.0f} s:\n{self.tail()}")
                self._changed.wait(timeout=0.5)

    def poll_until(
        self, condition: Callable[[], bool], *, what: str, timeout: float = 180.0, interval: float = 0.005
    ) -> None:
        """Call ``condition`` until it is true (the job must still be running)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"job ended (rc={self.process.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(interval)

    def wait_blocked_on_fifo(self, *, timeout: float = 180.0) -> None:
        """Until the job's main thread waits in open() for a named pipe's reader (Linux /proc/PID/wchan)."""
        wchan = Path(f"/proc/{self.process.pid}/wchan")
        self.poll_until(
            lambda: wchan.read_text() == "wait_for_partner", what="blocked on a named pipe", timeout=timeout
        )

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def finish(self, *, timeout: float = 300.0) -> int:
        """Wait for the exit code (the process is killed if it overruns ``timeout``)."""
        try:
            rc = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"job did not end within {timeout:.0f} s:\n{self.tail()}") from None
        self._reader.join(timeout=10)
        self.elapsed = time.monotonic() - self.started
        return rc

    def tail(self, count: int = 60) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])


def run_job(*args: str, env: dict[str, str] | None = None, timeout: float = 300.0) -> tuple[int, JobProcess]:
    """Run the job to the end: (exit code, the process with its log)."""
    job = JobProcess(*args, env=env)
    return job.finish(timeout=timeout), job


def kill(job: JobProcess, sig: signal.Signals = signal.SIGKILL) -> int:
    job.send(sig)
    return job.finish(timeout=60)
