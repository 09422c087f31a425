"""Seq2SeqTrainingArguments, the data collator, callbacks and the Seq2SeqTrainer, built from our params."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from job.distributed import barrier, patch_cpu_deepspeed_state, token_mean_loss, training_args_overrides
from job.metrics import build_compute_metrics
from job.params import Seq2SeqParams
from job.preemption import EpochSeededLengthGrouping, StopOnSignal
from job.preprocess import LENGTH, TokenizedData

log = logging.getLogger(__name__)


def steps_per_epoch(params: Seq2SeqParams, train_rows: int) -> int:
    """Optimizer steps per epoch: rows / (per-device batch × accumulation × processes)."""
    return max(1, math.ceil(train_rows / params.effective_batch_size))


def auto_logging_steps(params: Seq2SeqParams, train_rows: int) -> int:
    """About 25 log lines per run, at least every step and at most every 500 steps."""
    if params.logging_steps > 0:
        return params.logging_steps
    total = math.ceil(steps_per_epoch(params, train_rows) * params.epochs)
    return max(1, min(500, total // 25))


def build_training_args(params: Seq2SeqParams, *, train_rows: int, has_eval: bool) -> Seq2SeqTrainingArguments:
    evaluates = has_eval and params.evaluates
    metric = "eval_" + params.metric_for_best_model
    return Seq2SeqTrainingArguments(
        output_dir=str(params.checkpoints_dir),
        learning_rate=params.lr,
        num_train_epochs=params.epochs,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size or params.batch_size,
        gradient_accumulation_steps=params.gradient_accumulation,
        optim=params.optimizer,
        lr_scheduler_type=params.scheduler,
        warmup_steps=params.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        seed=params.seed,
        bf16=params.mixed_precision == "bf16",
        fp16=params.mixed_precision == "fp16",
        auto_find_batch_size=params.auto_find_batch_size,
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        length_column_name=LENGTH,
        logging_strategy="steps",
        logging_steps=auto_logging_steps(params, train_rows),
        logging_first_step=True,
        eval_strategy=params.eval_strategy if evaluates else "no",
        eval_steps=params.eval_steps,
        save_strategy=params.resolved_save_strategy,
        save_steps=params.save_steps or params.eval_steps,
        save_total_limit=params.save_total_limit,
        load_best_model_at_end=evaluates and params.load_best_model_at_end,
        metric_for_best_model=metric if evaluates else None,
        greater_is_better=params.metric_for_best_model != "loss",
        predict_with_generate=True,
        generation_max_length=params.resolved_generation_max_length,
        generation_num_beams=params.num_beams,
        report_to=[params.log] if params.log != "none" else "none",
        run_name=params.project_name,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Progress bars are for terminals; in a cloud log viewer ProgressLog writes one plain line per log step.
        disable_tqdm=not sys.stderr.isatty(),
        **training_args_overrides(params),  # DeepSpeed config; use_cpu for gloo on CPU (job.distributed)
    )


def build_collator(tokenizer: Any, model: PreTrainedModel, params: Seq2SeqParams) -> DataCollatorForSeq2Seq:
    """Pad each batch to its own longest row (never to the max length); labels padded with -100."""
    return DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=-100,
        # Tensor cores want multiples of 8 under fp16/bf16.
        pad_to_multiple_of=8 if params.mixed_precision else None,
    )


def build_trainer(
    *,
    params: Seq2SeqParams,
    model: PreTrainedModel,
    tokenizer: Any,
    data: TokenizedData,
    callbacks: list[TrainerCallback] | None = None,
) -> Seq2SeqTrainer:
    args = build_training_args(params, train_rows=len(data.train), has_eval=data.valid is not None)
    patch_cpu_deepspeed_state(args)  # DeepSpeed without CUDA (CI): accelerate must count every process
    all_callbacks = list(callbacks or [])
    if args.eval_strategy != "no" and params.early_stopping_patience > 0:
        all_callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=params.early_stopping_patience,
                early_stopping_threshold=params.early_stopping_threshold,
            )
        )
    elif params.early_stopping_patience > 0:
        log.info("Early stopping is off: it needs evaluation (valid_split and eval_strategy != no)")
    if data.valid is None:
        log.info("No valid_split: training without evaluation; metrics.json will hold training figures only")
    elif args.eval_strategy == "no":
        log.info("eval_strategy=no: the validation split is evaluated once, after training")
    log.info(
        "Effective batch size %d = %d per device × %d accumulation × %d processes; %d steps per epoch",
        params.effective_batch_size, params.batch_size, params.gradient_accumulation,
        int(os.environ.get("WORLD_SIZE", "1")), steps_per_epoch(params, len(data.train)),
    )  # fmt: skip
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        data_collator=build_collator(tokenizer, model, params),
        train_dataset=data.train,
        eval_dataset=data.valid,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
        compute_loss_func=token_mean_loss,  # exact loss under DDP and gradient accumulation (job.distributed)
        # StopOnSignal: save + stop on SIGTERM; EpochSeededLengthGrouping: a resumed run sees the same batches
        callbacks=[*all_callbacks, ProgressLog(), StopOnSignal(), EpochSeededLengthGrouping()],
    )
    _hide_tied_keys_warning(model)
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # ProgressLog already prints each log step as one line
    for callback in trainer.callback_handler.callbacks:
        # TensorBoard events go to project_name/logs unless TENSORBOARD_LOGGING_DIR says otherwise (e.g. Vertex).
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "logging_dir", 1) is None:
            callback.logging_dir = str(params.output_dir / "logs")
    return trainer


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


def _hide_tied_keys_warning(model: PreTrainedModel) -> None:
    trainer_log = logging.getLogger("transformers.trainer")
    for old in [f for f in trainer_log.filters if isinstance(f, _TiedKeysFilter)]:
        trainer_log.removeFilter(old)
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    trainer_log.addFilter(_TiedKeysFilter(set(tied)))


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
            "step %d/%d (%.0f%%) epoch %.2f elapsed %s eta %s %s", state.global_step, state.max_steps, 100 * done,
            state.epoch or 0.0, _duration(elapsed), _duration(eta), values,
        )  # fmt: skip


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


class OnCheckpoint(TrainerCallback):
    """Calls ``fn(checkpoint_dir)`` on the main process once the Trainer has fully written a checkpoint."""

    def __init__(self, fn: Callable[[Path], None]) -> None:
        self.fn = fn

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        barrier()  # every rank has written its part (its RNG state, its ZeRO shards) before rank 0 marks it complete
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                self.fn(checkpoint)
