"""The Seq2SeqTrainer of a run: arguments, collator, callbacks, loss and metrics put together."""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Sampler, SequentialSampler
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Seq2SeqTrainer,
    TrainerCallback,
)

from job import generation
from job.context import ProcessInfo
from job.metrics import build_compute_metrics
from job.params import Seq2SeqParams
from job.preprocess import TokenizedData
from job.training.args import build_training_args, steps_per_epoch
from job.training.callbacks import EvaluateAtEnd, ProgressLog, hide_tied_keys_warning
from job.training.deepspeed import patch_cpu_deepspeed_state
from job.training.loss import token_mean_loss
from job.training.preemption import StopOnSignal
from job.training.sampling import EpochSeededLengthGrouping

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


class Seq2SeqJobTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that evaluates rows in their order and leaves the model's generation config as it was."""

    def prediction_step(self, model: Any, inputs: Any, prediction_loss_only: bool, **kwargs: Any) -> Any:
        with generation.kept_generation_config(self.model):  # see job.generation
            return super().prediction_step(model, inputs, prediction_loss_only, **kwargs)

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        """The dataset's order (distributed: the Trainer's sharding, gathered back in order).

        Under train_sampling_strategy=group_by_length transformers 5 also batches evaluation rows in random
        length groups; the job's validation rows are sorted by length already, and predictions must come back in
        the rows' order to be scored against their references (job.metrics) and written next to their inputs.
        """
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def _compute_metrics(params: Seq2SeqParams, tokenizer: Any, data: TokenizedData) -> Any:
    """The params' metrics, scored against the validation targets as written (not the truncated labels)."""
    return build_compute_metrics(
        tokenizer,
        metrics=params.resolved_metrics,
        target_lang=params.resolved_target_language,
        references=data.valid_references,
    )


def build_trainer(
    *,
    params: Seq2SeqParams,
    model: PreTrainedModel,
    tokenizer: Any,
    data: TokenizedData,
    callbacks: list[TrainerCallback] | None = None,
    process: ProcessInfo | None = None,
) -> Seq2SeqTrainer:
    """The Seq2SeqTrainer for these params and data; ``callbacks`` come first, then ours."""
    process = process or ProcessInfo()
    args = build_training_args(
        params, train_rows=len(data.train), has_eval=data.valid is not None, world_size=process.world_size
    )
    patch_cpu_deepspeed_state(args, local_rank=process.local_rank)  # DeepSpeed on CPU: count every process
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
        log.info("eval_strategy=no: the validation split is evaluated once, after the last step")
        all_callbacks.append(EvaluateAtEnd())
    log.info(
        "Effective batch size %d = %d per device × %d accumulation × %d processes; %d steps per epoch",
        params.effective_batch_size(process.world_size),
        params.batch_size,
        params.gradient_accumulation,
        process.world_size,
        steps_per_epoch(params, len(data.train), process.world_size),
    )
    generation.apply(model, generation.generation_settings(params))  # evaluation, checkpoints and the saved model
    trainer = Seq2SeqJobTrainer(
        model=model,
        args=args,
        data_collator=build_collator(tokenizer, model, params),
        train_dataset=data.train,
        eval_dataset=data.valid,
        processing_class=tokenizer,
        compute_metrics=_compute_metrics(params, tokenizer, data),
        compute_loss_func=token_mean_loss,  # exact loss under DDP and gradient accumulation (job.training.loss)
        # StopOnSignal: save + stop on SIGTERM; EpochSeededLengthGrouping: a resumed run sees the same batches
        callbacks=[*all_callbacks, ProgressLog(), StopOnSignal(), EpochSeededLengthGrouping()],
    )
    hide_tied_keys_warning(model)
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # ProgressLog already prints each log step as one line
    return trainer
