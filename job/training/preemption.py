"""Stop cleanly during training: SIGTERM/SIGINT → checkpoint at a consistent point → exit 143.

The handler (:mod:`job.stopping`, installed for the whole run) only records the signal while the Trainer runs;
:class:`StopOnSignal` does the work at the first point where model, optimizer, scheduler, RNG and data position
are consistent:

* at the next **optimizer-step boundary** (``on_step_end``): save a checkpoint there and stop;
* right after a **checkpoint save in progress** (``on_save``): that checkpoint is the one, no extra step and no
  second save;
* during a scheduled **evaluation** (``on_prediction_step``): the evaluation is cut short — with generation it can
  take longer than the grace period — and the step's checkpoint is saved at once (:func:`train`).

Every rank agrees first (an all-reduce of the flag when torch.distributed is up), so no rank waits in a
collective that the others skipped. ``job.pipeline`` then waits for the uploads in flight and raises
:class:`~job.errors.Preempted` (:func:`raise_if_stopped`); ``job.exits`` turns that into exit code 143, which
the platform retries, and the retry resumes from that checkpoint (``job.resume``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from job import stopping
from job.errors import Preempted
from job.stopping import requested, signal_name, state
from job.training.collectives import any_rank

log = logging.getLogger(__name__)

__all__ = ["StopOnSignal", "raise_if_stopped", "requested", "signal_name", "train"]


class EvaluationCut(BaseException):
    """Raised out of an evaluation cut short by a signal (caught by :func:`train`, which saves the checkpoint)."""


class StopOnSignal(TrainerCallback):
    """At the first consistent point after a signal: save a checkpoint and stop training, on every rank together.

    The all-reduce costs one int per optimizer step (and per evaluation batch); the Trainer already synchronises
    on the loss every step (its NaN filter), so it adds no extra stall.
    """

    def __init__(self, *, is_requested: Callable[[], bool] = requested) -> None:
        self.is_requested = is_requested
        self.stopping = False
        self.batches = 0  # evaluation batches since the last optimizer step

    def on_step_end(self, args: TrainingArguments, state_: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.batches = 0
        if self.stopping or not any_rank(self.is_requested(), args.device):
            return
        self._stop(state_, control, what=f"saving checkpoint-{state_.global_step}")
        control.should_save = True  # even with save_strategy=no: the checkpoint is what lets the retry resume
        control.should_evaluate = False  # the grace period is for saving, not for a (possibly long) evaluation

    def on_prediction_step(
        self, args: TrainingArguments, state_: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.batches += 1
        total = len(kw["eval_dataloader"]) if kw.get("eval_dataloader") is not None else "?"
        if self.batches == 1 and state_.is_world_process_zero:
            log.info("Evaluation at step %d: %s batches", state_.global_step, total)
        if stopping.state.phase != stopping.TRAINING:  # the final evaluation: job.stopping stops it at once
            return
        if self.stopping or not any_rank(self.is_requested(), args.device):
            return
        if state_.is_world_process_zero:
            log.warning(
                "Cutting the evaluation at step %d short at batch %d/%s", state_.global_step, self.batches, total
            )
        self._stop(state_, control, what=f"saving checkpoint-{state_.global_step}")
        raise EvaluationCut

    def on_evaluate(self, args: TrainingArguments, state_: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.batches = 0  # the next evaluation (e.g. the final one, right after the last scheduled one) counts anew

    def on_epoch_end(self, args: TrainingArguments, state_: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.stopping:  # an epoch-end save/eval would write the same checkpoint twice, or evaluate
            control.should_save = False
            control.should_evaluate = False

    def on_save(self, args: TrainingArguments, state_: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not self.stopping and any_rank(self.is_requested(), args.device):
            self._stop(state_, control, what=f"checkpoint-{state_.global_step} was just saved")  # during this save
        if not self.stopping:
            return
        state.checkpoint = os.path.join(args.output_dir, f"checkpoint-{state_.global_step}")
        # With save_total_limit=1 the Trainer's end-of-training clean-up deletes every checkpoint that is not the
        # best one — here, the checkpoint just saved for the retry — and would then load the best model, which
        # wastes grace time. The saved trainer_state.json keeps the real best checkpoint for the resumed run.
        state_.best_model_checkpoint = None

    def _stop(self, state_: TrainerState, control: TrainerControl, *, what: str) -> None:
        self.stopping = True
        state.stopped_at = state_.global_step
        control.should_training_stop = True
        if state_.is_world_process_zero:
            log.warning("Stopping at step %d/%d: %s", state_.global_step, state_.max_steps, what)


def train(trainer: Any, **kwargs: Any) -> Any:
    """``trainer.train(**kwargs)``; after an evaluation cut short by a signal, save the step's checkpoint."""
    try:
        return trainer.train(**kwargs)
    except EvaluationCut:
        # What the Trainer does after an evaluation (_maybe_log_save_evaluate), collectively on every rank; the
        # weights are those of the step just taken, so the checkpoint is as consistent as a scheduled one.
        trainer.control.should_evaluate = trainer.control.should_save = False
        trainer._save_checkpoint(trainer.model_wrapped, trial=None)
        trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
        return None


def raise_if_stopped(*, wait: Callable[[], None] | None = None) -> None:
    """After ``trainer.train()``: if it stopped on a signal, wait for uploads (``wait``) and raise Preempted."""
    if state.stopped_at is None:  # no stop in the loop; a signal after the last step: job.stopping.after_training
        return
    if wait is not None:
        log.info("Waiting for checkpoint uploads in flight before exiting")
        wait()
    raise Preempted(signal_name=signal_name(), step=state.stopped_at or 0, checkpoint=state.checkpoint)
