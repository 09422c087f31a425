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

from job import ranks
from job.data import DataBundle, load_data
from job.export import Outputs, peak_memory
from job.modeling import load_model, load_tokenizer, resolve_model_source
from job.params import Seq2SeqParams
from job.preprocess import TokenizedData, tokenize_data
from job.trainer import OnCheckpoint, OnEvaluate, build_trainer

log = logging.getLogger(__name__)


def train(params: Seq2SeqParams) -> dict[str, Any]:
    """Run a whole fine-tuning job and return the final metrics (also written to metrics.json)."""
    outputs = Outputs(params)
    if ranks.is_main_process():
        outputs.begin()
    data = _load_data(params)
    source = resolve_model_source(params, data, work_dir=params.output_dir)
    tokenizer = load_tokenizer(source, params)
    tokens = _tokenize(params, data, tokenizer)
    outputs.summary["data"] = {"splits": data.as_dict(), "tokens": tokens.as_dict()}
    outputs.summary["effective_batch_size"] = params.effective_batch_size

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
    result = trainer.train()
    trainer.remove_callback(OnEvaluate)  # the final evaluation below is reported once, as the final metrics

    final: dict[str, Any] = dict(result.metrics)
    # Every row is seen once per epoch, so tokens processed = tokens per epoch × epochs run.
    epochs_run = trainer.state.epoch or params.epochs
    runtime = final.get("train_runtime") or 0.0
    if runtime > 0:
        final["train_tokens_per_second"] = round(tokens.stats["train"].non_padding_tokens * epochs_run / runtime, 2)
    final["global_step"] = trainer.state.global_step
    if tokens.valid is not None:
        final.update(trainer.evaluate())
    final.update(peak_memory())
    if not trainer.is_world_process_zero():
        return final
    return outputs.finish(final=final, trainer=trainer, tokenizer=tokenizer, base_model=source)


def validate(params: Seq2SeqParams) -> dict[str, Any]:
    """Load params and data, tokenize, and report statistics, without loading the model or training."""
    data = _load_data(params)
    with tempfile.TemporaryDirectory(prefix="seq2seq-validate-") as tmp:
        source = resolve_model_source(params, data, work_dir=Path(tmp))
        tokenizer = load_tokenizer(source, params)
        tokens = _tokenize(params, data, tokenizer)
    return {"splits": data.as_dict(), "tokens": tokens.as_dict(), "table": tokens.describe()}


def _load_data(params: Seq2SeqParams) -> DataBundle:
    return load_data(
        data_path=params.data_path,
        train_split=params.train_split,
        valid_split=params.valid_split,
        text_column=params.text_column,
        target_column=params.target_column,
        max_samples=params.max_samples,
        token=params.token_value(),
        num_proc=params.preprocessing_num_workers,
    )


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
