"""Stop cleanly when the platform says so: SIGTERM/SIGINT → checkpoint at the next step boundary → exit 143.

Kubernetes, SageMaker (spot) and Vertex AI send SIGTERM before they kill a container; torchrun forwards it to
every worker and kills them about 30 s later. So the handler does the least possible — it records the signal —
and :class:`StopOnSignal` does the work at the next optimizer-step boundary, where the model, optimizer,
scheduler, RNG and data position are consistent:

1. every rank agrees to stop (an all-reduce of the flag when torch.distributed is up, so no rank waits in a
   collective that the others skipped),
2. the Trainer saves a checkpoint (our ``OnCheckpoint`` marks it complete and hands it to the uploader),
3. training stops; ``job.pipeline`` waits for the uploads in flight and raises :class:`Preempted`,
4. ``job.exits`` turns that into exit code 143 (``EXIT_PREEMPTED``), which the platform retries; the retry
   resumes from that checkpoint (``job.resume``).

A second signal of the same kind means "now": SIGINT raises KeyboardInterrupt, SIGTERM kills the process.
Handlers are installed only while ``trainer.train()`` runs: before it there is nothing to save, and after it
the job is only writing outputs that a retry rewrites anyway (they are marked complete last).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from job.errors import EXIT_PREEMPTED, Preempted
from job.training.collectives import any_rank

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Flag:
    """What the signal handler records (a signal handler must not do more than this)."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.stopped_at: int | None = None  # global step at which StopOnSignal stopped training
        self.checkpoint: str | None = None  # the checkpoint it saved there

    def reset(self) -> None:
        self.signals.clear()
        self.stopped_at = self.checkpoint = None


_flag = _Flag()


def requested() -> bool:
    """True once SIGTERM/SIGINT arrived in this process (while the handlers were installed)."""
    return bool(_flag.signals)


def signal_name() -> str:
    """The first signal received here; another rank's when this one got none (torchrun signals all)."""
    return signal.Signals(_flag.signals[0]).name if _flag.signals else "a signal to another rank"


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum in _flag.signals:  # the second one: stop now
        log.warning("Second %s: stopping immediately without a checkpoint", signal.Signals(signum).name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _flag.signals.append(signum)
    # Logging here is safe: the handler runs in the main thread between bytecodes and logging's lock is an RLock.
    log.warning(
        "Received %s: saving a checkpoint at the next step boundary, then exiting with code %d",
        signal.Signals(signum).name,
        EXIT_PREEMPTED,
    )


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGTERM/SIGINT flag handlers for the duration of the block (main thread only)."""
    _flag.reset()
    if threading.current_thread() is not threading.main_thread():
        log.debug("Not the main thread: SIGTERM/SIGINT keep their default handlers")
        yield
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopOnSignal(TrainerCallback):
    """At the first step boundary after a signal: save a checkpoint and stop training, on every rank together.

    The all-reduce costs one int per optimizer step; the Trainer already synchronises on the loss every step
    (its NaN filter), so it adds no extra stall.
    """

    def __init__(self, *, is_requested: Callable[[], bool] = requested) -> None:
        self.is_requested = is_requested
        self.stopping = False

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.stopping or not any_rank(self.is_requested(), args.device):
            return
        self.stopping = True
        _flag.stopped_at = state.global_step
        if state.is_world_process_zero:
            log.warning(
                "Stopping at step %d/%d: saving checkpoint-%d", state.global_step, state.max_steps, state.global_step
            )
        control.should_save = True  # even with save_strategy=no: the checkpoint is what lets the retry resume
        control.should_evaluate = False  # the grace period is for saving, not for a (possibly long) evaluation
        control.should_training_stop = True

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.stopping:  # an epoch-end save/eval would write the same checkpoint twice, or evaluate
            control.should_save = False
            control.should_evaluate = False

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not self.stopping:
            return
        _flag.checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        # With save_total_limit=1 the Trainer's end-of-training clean-up deletes every checkpoint that is not the
        # best one — here, the checkpoint just saved for the retry — and would then load the best model, which
        # wastes grace time. The saved trainer_state.json keeps the real best checkpoint for the resumed run.
        state.best_model_checkpoint = None


def raise_if_stopped(*, wait: Callable[[], None] | None = None) -> None:
    """After ``trainer.train()``: if it stopped on a signal, wait for uploads (``wait``) and raise Preempted."""
    if _flag.stopped_at is None:
        return
    if wait is not None:
        log.info("Waiting for checkpoint uploads in flight before exiting")
        wait()
    raise Preempted(signal_name=signal_name(), step=_flag.stopped_at, checkpoint=_flag.checkpoint)
