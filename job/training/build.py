"""The Seq2SeqTrainer of a run: arguments, collator, callbacks, loss and metrics put together."""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    TrainerCallback,
)

from job import generation
from job.context import ProcessInfo
from job.metrics import build_compute_metrics
from job.params import Seq2SeqParams
from job.preprocess import LENGTH, TokenizedData
from job.training.args import build_training_args, dataloader_workers, steps_per_epoch
from job.training.callbacks import EvaluateAtEnd, ProgressLog, hide_tied_keys_warning
from job.training.deepspeed import patch_cpu_deepspeed_state
from job.training.eval_batching import auto_eval_batch_size, ensure_eos, eval_subset, longest_row, subset_rows
from job.training.loss import token_mean_loss
from job.training.microbatches import GroupCost
from job.training.preemption import StopOnSignal
from job.training.sampling import EpochSeededLengthGrouping
from job.training.trainer import JobTrainer

log = logging.getLogger(__name__)


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
    process: ProcessInfo | None = None,
    cpus_per_process: int = 1,
) -> JobTrainer:
    """The Seq2SeqTrainer for these params and data; ``callbacks`` come first, then ours."""
    process = process or ProcessInfo()
    cuda = torch.cuda.is_available()
    eval_rows = eval_subset(data.valid, params.eval_max_samples, seed=params.seed)
    args = build_training_args(
        params,
        train_rows=len(data.train),
        has_eval=data.valid is not None,
        world_size=process.world_size,
        eval_batch_size=_eval_batch_size(params, model, data.valid, process=process, cuda=cuda),  # final: all rows
        num_workers=dataloader_workers(params, cuda=cuda, cpus_per_process=cpus_per_process),
    )
    patch_cpu_deepspeed_state(args, local_rank=process.local_rank)  # DeepSpeed on CPU: count every process
    _log_plan(params, args, data=data, process=process)
    ensure_eos(model, tokenizer)  # generation stops as soon as every row of a batch has finished
    generation.apply(model, generation.generation_settings(params))  # evaluation, checkpoints and the saved model
    trainer = JobTrainer(
        model=model,
        args=args,
        data_collator=build_collator(tokenizer, model, params),
        train_dataset=data.train,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        compute_metrics=compute_metrics(params, tokenizer, data, during_training=True),
        # exact loss under DDP, gradient accumulation and micro-batches (job.training.loss)
        compute_loss_func=functools.partial(token_mean_loss, label_smoothing=params.label_smoothing),
        group_cost=group_cost(params, cuda=cuda),
        pad_to_multiple_of=8 if params.mixed_precision else None,
        # StopOnSignal: save + stop on SIGTERM; EpochSeededLengthGrouping: a resumed run sees the same batches
        callbacks=[
            *(callbacks or []),
            *_early_stopping(params, args),
            *_evaluate_at_end(data, args),
            ProgressLog(),
            StopOnSignal(),
            EpochSeededLengthGrouping(),
        ],
    )
    hide_tied_keys_warning(model)
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # ProgressLog already prints each log step as one line
    for callback in trainer.callback_handler.callbacks:
        # TensorBoard events go to project_name/logs unless TENSORBOARD_LOGGING_DIR says otherwise (e.g. Vertex).
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "logging_dir", 1) is None:
            callback.logging_dir = str(params.output_dir / "logs")
    return trainer


def compute_metrics(params: Seq2SeqParams, tokenizer: Any, data: TokenizedData, *, during_training: bool) -> Any:
    """The params' metrics, scored against the validation targets as written (not the truncated labels).

    ``during_training``: the references of the rows evaluated during training (eval_max_samples' subset).
    """
    references = data.valid_references
    keep = subset_rows(len(data.valid), params.eval_max_samples, seed=params.seed) if data.valid is not None else None
    if during_training and references is not None and keep is not None:
        references = [references[i] for i in keep]
    return build_compute_metrics(
        tokenizer, metrics=params.resolved_metrics, target_lang=params.resolved_target_language, references=references
    )


def _evaluate_at_end(data: TokenizedData, args: Any) -> list[TrainerCallback]:
    if data.valid is None:
        log.info("No valid_split: training without evaluation; metrics.json will hold training figures only")
        return []
    if args.eval_strategy == "no":
        log.info("eval_strategy=no: the validation split is evaluated once, after the last step")
        return [EvaluateAtEnd()]
    return []


def _eval_batch_size(
    params: Seq2SeqParams, model: PreTrainedModel, valid: Any, *, process: ProcessInfo, cuda: bool
) -> int | None:
    """eval_batch_size, or one sized by job.training.eval_batching (logged)."""
    if valid is None or params.eval_batch_size:
        return params.eval_batch_size
    free = torch.cuda.mem_get_info(process.local_rank)[0] if cuda else None
    size, why = auto_eval_batch_size(
        longest_input=longest_row(valid, LENGTH),
        generated_tokens=params.resolved_generation_max_length,
        num_beams=params.num_beams,
        rows=-(-len(valid) // process.world_size),
        config=model.config,
        free_bytes=free,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        dtype_bytes=2 if params.mixed_precision else 4,
    )
    log.info("Evaluation batch size %d per device (%s); set eval_batch_size to choose", size, why)
    return size


def _early_stopping(params: Seq2SeqParams, args: Any) -> list[TrainerCallback]:
    if args.eval_strategy != "no" and params.early_stopping_patience > 0:
        return [
            EarlyStoppingCallback(
                early_stopping_patience=params.early_stopping_patience,
                early_stopping_threshold=params.early_stopping_threshold,
            )
        ]
    if params.early_stopping_patience > 0:
        log.info("Early stopping is off: it needs evaluation (valid_split and eval_strategy != no)")
    return []


def _log_plan(params: Seq2SeqParams, args: Any, *, data: TokenizedData, process: ProcessInfo) -> None:
    """What the run will do, in the log: evaluation, batches, steps."""
    log.info(
        "Effective batch size %d = %d per device × %d accumulation × %d processes; %d steps per epoch",
        params.effective_batch_size(process.world_size),
        params.batch_size,
        params.gradient_accumulation,
        process.world_size,
        steps_per_epoch(params, len(data.train), process.world_size),
    )
    batches = "length-grouped (group_by_length)" if params.group_by_length else "random"
    if params.microbatch_by_length:
        batches += ", each run as length-sorted micro-batches (microbatch_by_length)"
    log.info("Training batches: %s", batches)
    if params.max_steps:
        log.info("max_steps=%d: training stops there, whatever epochs says (%g)", params.max_steps, params.epochs)


def group_cost(params: Seq2SeqParams, *, cuda: bool) -> GroupCost | None:
    """How micro-batches are cut (job.training.microbatches), or None when each step runs as one batch.

    DeepSpeed ZeRO reduces gradients in every backward pass (it has no ``no_sync``), so every rank would have to
    cut its rows into the same number of groups, and each extra group would cost a gradient exchange.
    """
    if not params.microbatch_by_length:
        return None
    if params.deepspeed:
        log.info("microbatch_by_length is off under DeepSpeed (ZeRO reduces gradients at every backward pass)")
        return None
    return GroupCost.for_device("cuda" if cuda else "cpu")
