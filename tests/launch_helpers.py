"""Test helper: ``python -m job.launch …`` as a real process (torchrun and its workers under it).

Used by the multi-process, multi-node, failure and DeepSpeed tests. The log (launcher, torchrun and every
worker, merged) goes to a file that tests can wait on while the job runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")

# A run small enough for a busy 2-core machine: with 64 rows and 8 per device × 2 processes, 4 steps per epoch.
TINY_PARAMS = dict(
    valid_split="validation",
    epochs=2,
    max_seq_length=32,
    max_target_length=8,
    group_by_length=False,
    lr=1e-3,
    logging_steps=1,
    seed=0,
    warmup_ratio=0.0,
    early_stopping_patience=0,
)


def flags(**params: object) -> list[str]:
    """Parameters as job CLI flags: ``batch_size=8`` → ``--batch-size 8``, ``x=False`` → ``--no-x``."""
    out: list[str] = []
    for name, value in params.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            out.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            out += [f"--{flag}", str(value)]
    return out


TINY_RUN = tuple(flags(**TINY_PARAMS))


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without SEQ2SEQ_* or launcher variables; offline; one torch thread per process;
    CPU only (GPU tests pass CUDA_VISIBLE_DEVICES and DS_ACCELERATOR=cuda in ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SEQ2SEQ_") and k not in LAUNCHER_VARS}
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES=""
    )
    env.update(extra or {})
    return env


class Launch:
    """One ``python -m job.launch`` process; its merged output goes to ``log``."""

    def __init__(self, *args: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.started = time.monotonic()
        self.elapsed = 0.0
        with log.open("w") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "job.launch", *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=launch_env(env),
            )

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, *, timeout: float = 240.0) -> None:
        """Block until the log matches ``pattern``; fail if the job ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if self.process.poll() is not None:
                raise AssertionError(f"job ended (rc={self.process.returncode}) before /{pattern}/:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def finish(self, *, timeout: float = 300.0) -> int:
        try:
            rc = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
            raise AssertionError(f"job did not end within {timeout:.0f} s:\n{self.tail()}") from None
        self.elapsed = time.monotonic() - self.started
        return rc

    def tail(self, count: int = 80) -> str:
        return "\n".join(self.text.splitlines()[-count:])


def run_launch(*args: str, log: Path, env: dict[str, str] | None = None, timeout: float = 300.0) -> Launch:
    """Run to the end; the returned Launch has ``.rc``."""
    job = Launch(*args, log=log, env=env)
    job.rc = job.finish(timeout=timeout)  # type: ignore[attr-defined]
    return job


def step_losses(out: Path) -> list[float]:
    """Training loss of every logged step, from the newest checkpoint's trainer_state.json."""
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def without_dropout(model_dir: Path, dest: Path) -> Path:
    """A copy of a model folder with dropout off, so runs differing only in how a batch is split match."""
    import shutil

    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    for key in ("dropout_rate", "dropout", "attention_dropout", "activation_dropout"):
        if key in config:
            config[key] = 0.0
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
