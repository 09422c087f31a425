"""The whole job as one story: data → tokenizer → tokenize → model → train → evaluate → outputs.

Python API::

    from job.params import Seq2SeqParams
    from job.train import train

    metrics = train(Seq2SeqParams(data_path="data.csv", model="google/flan-t5-small", valid_split=None))
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from job import distributed, ranks, resume, storage
from job.data import DataBundle, load_data
from job.export import Outputs, peak_memory
from job.hub import check_push, push_outputs
from job.params import Seq2SeqParams
from job.preprocess import TokenizedData, tokenize_data

log = logging.getLogger(__name__)


def train(params: Seq2SeqParams) -> dict[str, Any]:
    """Run a whole fine-tuning job and return the final metrics (also written to metrics.json)."""
    distributed.check_launch(params)  # DeepSpeed without torchrun: say how to start it
    storage.configure(s3_endpoint_url=params.s3_endpoint_url)
    start = resume.plan(params)  # before anything is loaded or written: a finished job returns at once (exit 0)
    if start.finished is not None:
        return start.finished
    if params.push_to_hub and ranks.is_main_process():
        check_push(params)  # no token, or HF_HUB_OFFLINE=1: say so now, not after training
    outputs = Outputs(params)
    outputs.evaluations = resume.previous_evaluations(start.checkpoint)  # metrics.json keeps the whole history
    outputs.summary["resumed_from_step"] = start.step  # train_loss/runtime then cover only the steps after it
    if ranks.is_main_process():
        outputs.begin()
    data = _load_data(params)
    # The training stack (transformers' Trainer, peft, bitsandbytes) takes ~6 s to import: only now, after the
    # data checks, so bad input fails in a second or two.
    distributed.name_deepspeed_accelerator()
    from job import preemption
    from job.modeling import load_model, load_tokenizer
    from job.trainer import OnCheckpoint, OnEvaluate, build_trainer

    source = _model_source(params, data, work_dir=params.output_dir)
    tokenizer = load_tokenizer(source, params)
    tokens = _tokenize(params, data, tokenizer)
    outputs.summary["data"] = {"splits": data.as_dict(), "tokens": tokens.as_dict()}
    outputs.summary["effective_batch_size"] = params.effective_batch_size
    outputs.summary["distributed"] = distributed.describe(params)  # world size, nodes, DDP or DeepSpeed

    model = load_model(source, params, tokenizer)
    trainer = build_trainer(
        params=params,
        model=model,
        tokenizer=tokenizer,
        data=tokens,
        callbacks=[
            OnEvaluate(lambda m, state: outputs.evaluation_done(m, step=state.global_step, epoch=state.epoch)),
            OnCheckpoint(outputs.checkpoint_saved),
        ],
    )
    with preemption.handle_signals():  # SIGTERM/SIGINT: checkpoint at the next step, then Preempted (exit 143)
        result = trainer.train(resume_from_checkpoint=start.checkpoint)
    preemption.raise_if_stopped(wait=outputs.publisher.wait)  # uploads in flight finish first
    trainer.remove_callback(OnEvaluate)  # the final evaluation below is reported once, as the final metrics

    final: dict[str, Any] = dict(result.metrics)
    # Every row is seen once per epoch, so tokens processed = tokens per epoch × epochs run (by this process:
    # a resumed run counts only the steps after its checkpoint).
    epochs_run = (trainer.state.epoch or params.epochs) * (1 - start.step / max(trainer.state.global_step, 1))
    runtime = final.get("train_runtime") or 0.0
    if runtime > 0:
        final["train_tokens_per_second"] = round(tokens.stats["train"].non_padding_tokens * epochs_run / runtime, 2)
    final["global_step"] = trainer.state.global_step
    if tokens.valid is not None:
        final.update(trainer.evaluate())
    final.update(peak_memory())
    # Every rank takes part: under ZeRO-3 saving gathers the sharded weights; only rank 0 writes files.
    trainer.save_model(str(outputs.root))
    if not trainer.is_world_process_zero():
        return final
    metrics = outputs.finish(final=final, trainer=trainer, tokenizer=tokenizer, base_model=source, model_saved=True)
    if params.push_to_hub:
        push_outputs(params)
    return metrics


def validate(params: Seq2SeqParams) -> dict[str, Any]:
    """Load params and data, tokenize, and report statistics, without loading the model or training."""
    storage.configure(s3_endpoint_url=params.s3_endpoint_url)
    data = _load_data(params)
    from job.modeling import load_tokenizer  # after the data checks (see train)

    with tempfile.TemporaryDirectory(prefix="seq2seq-validate-") as tmp:
        source = _model_source(params, data, work_dir=Path(tmp))
        tokenizer = load_tokenizer(source, params)
        tokens = _tokenize(params, data, tokenizer)
    return {"splits": data.as_dict(), "tokens": tokens.as_dict(), "table": tokens.describe()}


def _load_data(params: Seq2SeqParams) -> DataBundle:
    return load_data(
        data_path=storage.localize(params.data_path, cache_dir=params.cache_dir, what="data_path"),
        train_split=params.train_split,
        valid_split=params.valid_split,
        text_column=params.text_column,
        target_column=params.target_column,
        max_samples=params.max_samples,
        token=params.token_value(),
        num_proc=params.preprocessing_num_workers,
    )


def _model_source(params: Seq2SeqParams, data: DataBundle, *, work_dir: Path) -> str:
    """A local folder or Hub id to load from: s3:// / gs:// models are downloaded first (manifest required)."""
    from job.modeling import resolve_model_source

    source = resolve_model_source(params, data, work_dir=work_dir)
    return storage.localize(source, cache_dir=params.cache_dir, what="model")


def _tokenize(params: Seq2SeqParams, data: DataBundle, tokenizer: Any) -> TokenizedData:
    return tokenize_data(
        data,
        tokenizer,
        source_prefix=params.source_prefix,
        max_seq_length=params.max_seq_length,
        max_target_length=params.max_target_length,
        num_proc=params.preprocessing_num_workers,
        sort_valid_by_length=params.sort_eval_by_length,
    )
