"""Trainer callbacks: a progress line per log step, evaluation and checkpoint hooks, a quieter load-best log."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from job.outputs.files import checkpoint_name
from job.training.collectives import barrier

log = logging.getLogger(__name__)


class ProgressLog(TrainerCallback):
    """One readable line per logging step: step/total, percent, elapsed, ETA and the logged values."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.started = time.monotonic()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not state.max_steps:
            return
        elapsed = time.monotonic() - self.started
        done = state.global_step / state.max_steps
        eta = elapsed / done - elapsed if done > 0 else 0.0
        values = " ".join(f"{k}={_short(v)}" for k, v in (kwargs.get("logs") or {}).items() if k != "epoch")
        log.info(
            "step %d/%d (%.0f%%) epoch %.2f elapsed %s eta %s %s",
            state.global_step,
            state.max_steps,
            100 * done,
            state.epoch or 0.0,
            _duration(elapsed),
            _duration(eta),
            values,
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class OnEvaluate(TrainerCallback):
    """Calls ``fn(metrics, state)`` on the main process after each evaluation (e.g. to rewrite metrics.json)."""

    def __init__(self, fn: Callable[[dict[str, float], TrainerState], None]) -> None:
        self.fn = fn

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.fn(dict(kwargs.get("metrics") or {}), state)


class EvaluateAtEnd(TrainerCallback):
    """With a validation split but eval_strategy=no: one evaluation after the last step, inside training.

    Inside, not after ``train()`` returns: by then the loggers have closed their runs (TensorBoard's writer, the
    MLflow run) and a later evaluation opened a second event file and an orphan run.
    """

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True


class OnCheckpoint(TrainerCallback):
    """Calls ``fn(checkpoint_dir)`` on the main process once the Trainer has fully written a checkpoint."""

    def __init__(self, fn: Callable[[Path], None]) -> None:
        self.fn = fn

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        barrier()  # every rank has written its part (its RNG state, its ZeRO shards) before rank 0 marks it complete
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / checkpoint_name(state.global_step)
            if checkpoint.is_dir():
                self.fn(checkpoint)


class _TiedKeysFilter(logging.Filter):
    """Drops the Trainer's "missing keys in the checkpoint" warning when every missing key is a tied weight.

    T5 and BART tie their embeddings and ``lm_head`` to ``shared.weight``; checkpoints hold ``shared.weight`` only,
    and loading it restores the tied ones too. transformers 5.24 checks the missing keys against
    ``_keys_to_ignore_on_save`` (empty in v5) instead of the tied keys, so it warned on every
    ``load_best_model_at_end`` although nothing was missing. Any other missing key still warns.
    """

    PREFIX = "There were missing keys in the checkpoint model loaded:"

    def __init__(self, tied: set[str]) -> None:
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        missing = set(re.findall(r"'([^']+)'", message[len(self.PREFIX) :]))
        return not (missing and missing <= self.tied)


def hide_tied_keys_warning(model: PreTrainedModel) -> None:
    trainer_log = logging.getLogger("transformers.trainer")
    for old in [f for f in trainer_log.filters if isinstance(f, _TiedKeysFilter)]:
        trainer_log.removeFilter(old)
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    trainer_log.addFilter(_TiedKeysFilter(set(tied)))
