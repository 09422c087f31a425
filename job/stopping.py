"""SIGTERM/SIGINT in every phase of a run: what the job promises when the signal arrives, and keeps.

Platforms send SIGTERM and kill the container a grace period later (Kubernetes 30 s by default, SageMaker spot
120 s, torchrun 30 s). The handler is installed for the whole run (:func:`handle_signals`, main thread only) and
does what the phase it arrives in allows; its log line says which, and every promise ends in exit code 143:

============================  ============================================================================
phase                         on the first SIGTERM/SIGINT
============================  ============================================================================
``before training``           nothing to save yet: stop at once (:class:`~job.errors.SignalStop`), exit 143
(lease, data, tokenizer,      — the retry starts over; nothing was marked complete.
model)
``training`` (steps, saves,   only record it (:func:`requested`); :mod:`job.training.preemption` stops at the
evaluations)                  next step boundary, right after a save in progress, or cuts an evaluation in
                              progress short, then saves a checkpoint and uploads it; exit 143.
``after training`` (final     stop at once: the checkpoint of the last step is complete; uploads of
evaluation, export, upload)   checkpoints still in flight finish first (:func:`after_training`); exit 143 —
                              the retry resumes there and only redoes evaluation and export.
============================  ============================================================================

A second signal of the same kind means "now": SIGINT raises KeyboardInterrupt (exit 130), SIGTERM kills the
process with its default action.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from job import manifest
from job.errors import EXIT_PREEMPTED, Preempted, SignalStop
from job.outputs.files import checkpoint_step

log = logging.getLogger("job.training.preemption")  # one name for every line about signals

SIGNALS = (signal.SIGTERM, signal.SIGINT)
BEFORE, TRAINING, AFTER = "before training", "training", "after training"
_PROMISES = {
    BEFORE: "nothing to save yet; stopping now",
    TRAINING: "saving a checkpoint at the next step boundary (an evaluation in progress is cut short)",
    AFTER: "stopping the final evaluation/export/upload now; the retry resumes from the last checkpoint",
}


@dataclass
class _State:
    """What the handler records (a signal handler must not do more than this) and the phase it is in."""

    phase: str = BEFORE
    signals: list[int] = field(default_factory=list)
    stopped_at: int | None = None  # global step at which training stopped on the signal
    checkpoint: str | None = None  # the checkpoint saved there
    on_stop: Callable[[], None] | None = None  # after training: wait for the uploads the retry needs
    checkpoints: Path | None = None  # after training: where the retry's checkpoint is
    step: int = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


state = _State()


def requested() -> bool:
    """True once SIGTERM/SIGINT arrived in this process (while the handlers were installed)."""
    return bool(state.signals)


def signal_name() -> str:
    """The first signal received here; another rank's when this one got none (torchrun signals all)."""
    return signal.Signals(state.signals[0]).name if state.signals else "a signal to another rank"


def enter(phase: str) -> None:
    """The run moves to ``phase`` (BEFORE → TRAINING → AFTER)."""
    state.phase = phase


def after_training(*, on_stop: Callable[[], None], checkpoints: Path, step: int) -> None:
    """Enter the last phase: a signal now stops at once; ``on_stop`` waits for checkpoint uploads first."""
    state.on_stop, state.checkpoints, state.step = on_stop, checkpoints, step
    enter(AFTER)
    if requested():  # it arrived while the Trainer was finishing (loading the best model): stop now
        raise SignalStop(f"stopped by {signal_name()} after training")


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if signum in state.signals:  # the second one: stop now
        log.warning("Second %s: stopping immediately without a checkpoint", name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    state.signals.append(signum)
    # Logging here is safe: the handler runs in the main thread between bytecodes and logging's lock is an RLock.
    log.warning("Received %s %s: %s, then exiting with code %d", name, _where(), _PROMISES[state.phase], EXIT_PREEMPTED)
    if state.phase != TRAINING:
        raise SignalStop(f"stopped by {name} {state.phase}" + (": nothing was saved" if state.phase == BEFORE else ""))


def _where() -> str:
    return "during training" if state.phase == TRAINING else state.phase


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGTERM/SIGINT handlers for the block (main thread only), starting in the BEFORE phase."""
    state.reset()
    if threading.current_thread() is not threading.main_thread():
        log.debug("Not the main thread: SIGTERM/SIGINT keep their default handlers")
        yield
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    except SignalStop:
        if state.phase != AFTER:
            raise
        raise _stopped_after_training() from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped_after_training() -> Preempted:
    if state.on_stop is not None:
        log.info("Waiting for checkpoint uploads in flight before exiting")
        try:
            state.on_stop()
        except Exception as exc:  # the local checkpoint is complete; the retry on this machine resumes from it
            log.warning("A checkpoint upload failed while stopping: %s", exc)
    newest = newest_complete(state.checkpoints) if state.checkpoints else None
    return Preempted(signal_name=signal_name(), step=state.step, checkpoint=str(newest) if newest else None)


def newest_complete(folder: Path) -> Path | None:
    """The complete checkpoint-N folder with the highest N in ``folder`` (the one a retry resumes from)."""
    if not folder.is_dir():
        return None
    found = [(checkpoint_step(p.name), p) for p in folder.iterdir() if p.is_dir()]
    complete = [(n, p) for n, p in found if n is not None and manifest.read_manifest(p) is not None]
    return max(complete)[1] if complete else None
