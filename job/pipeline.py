"""The whole job as one story: data → tokenizer → tokenize → model → train → evaluate → outputs.

Python API::

    from job.params import Seq2SeqParams
    from job.pipeline import train

    metrics = train(Seq2SeqParams(data_path="data.csv", model="google/flan-t5-small", valid_split=None))

``train`` and ``validate`` take a run context (:mod:`job.context`); without one they read this process's.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from job import resume, stopping, storage
from job.context import RunContext, apply_process_env, name_deepspeed_accelerator, read_context, storage_settings
from job.data import DataBundle, load_data
from job.hub import check_push, push_outputs
from job.lease import Held, hold_outputs
from job.model_checks import check_hub_model, check_model_source, check_tokenizer
from job.outputs.folder import Outputs
from job.outputs.report import Machine, distributed_facts, final_figures, peak_memory
from job.params import Seq2SeqParams
from job.preflight import check, check_launched
from job.preprocess import TokenizedData, tokenize_data
from job.training.deepspeed import zero_stage

log = logging.getLogger(__name__)


def train(params: Seq2SeqParams, ctx: RunContext | None = None) -> dict[str, Any]:
    """Run a whole fine-tuning job and return the final metrics (also written to metrics.json)."""
    ctx = prepare(params, ctx)
    check_launched(params, ctx)  # DeepSpeed without torchrun: say how to start it
    with (
        stopping.handle_signals(),
        hold_outputs(  # SIGTERM/SIGINT in every phase; one writer per output
            output_dir=str(params.output_dir),
            output_uri=params.output_uri,
            job_id=params.job_id or ctx.platform.job_id,
            lease_seconds=params.lease_seconds,
            main_process=ctx.process.is_main,
        ) as held,
    ):
        return _train(params, ctx, held)


def _train(params: Seq2SeqParams, ctx: RunContext, held: Held) -> dict[str, Any]:
    start = resume.plan(params, main_process=ctx.process.is_main, kept_dirs=tuple(ctx.kept_checkpoint_dirs))
    if start.finished_metrics is not None:  # before anything is loaded or written: a finished job exits 0 at once
        return start.finished_metrics
    if params.push_to_hub and ctx.process.is_main:
        check_push(params)  # no token, or HF_HUB_OFFLINE=1: say so now, not after training
    outputs = begin_outputs(params, ctx, start)
    data = _load_data(params)
    # The training stack (transformers' Trainer, peft, bitsandbytes) takes ~6 s to import: only now, after the
    # data checks, so bad input fails in a second or two.
    name_deepspeed_accelerator()
    from job.modeling import load_model, load_tokenizer

    source = _model_source(params, data, work_dir=params.output_dir)
    tokenizer = load_tokenizer(source, params)
    tokens = _tokenize(params, data, tokenizer)
    outputs.record(data={"splits": data.as_dict(), "tokens": tokens.as_dict()}, **_setup_facts(params, ctx))
    model = load_model(source, params, tokenizer, local_rank=ctx.process.local_rank)
    trainer = _build_trainer(params, ctx, model=model, tokenizer=tokenizer, tokens=tokens, outputs=outputs, held=held)
    final = _fit_and_evaluate(trainer, params, ctx, start=start, tokens=tokens, outputs=outputs)
    # Every rank takes part: under ZeRO-3 saving gathers the sharded weights; only rank 0 writes files.
    trainer.save_model(str(outputs.root))
    if not trainer.is_world_process_zero():
        return final
    held.check(verify=True)  # still this output's one writer: only then mark it complete
    metrics = outputs.finish(final=final, tokenizer=tokenizer, base_model=source)
    if params.push_to_hub:
        push_outputs(params)
    return metrics


def validate(params: Seq2SeqParams, ctx: RunContext | None = None) -> dict[str, Any]:
    """Load params and data, tokenize, and report statistics, without loading the model or training."""
    prepare(params, ctx)
    data = _load_data(params)
    from job.modeling import load_tokenizer  # after the data checks (see train)

    with tempfile.TemporaryDirectory(prefix="seq2seq-validate-") as tmp:
        source = _model_source(params, data, work_dir=Path(tmp))
        tokenizer = load_tokenizer(source, params)
        tokens = _tokenize(params, data, tokenizer)
    return {"splits": data.as_dict(), "tokens": tokens.as_dict(), "table": tokens.describe()}


def prepare(params: Seq2SeqParams, ctx: RunContext | None) -> RunContext:
    """The run context (this process's when none is given), checked against the params and put in force."""
    if ctx is None:
        ctx = read_context()
        check(params, ctx)  # preflight() already ran these checks for a context it built
    apply_process_env(ctx)
    storage.configure(_storage_settings(params, ctx))
    if ctx.process.is_local_main:
        check_hub_model(params, offline=ctx.hub_offline)  # unreachable Hub: one line now (job.model_checks)
    return ctx


def begin_outputs(params: Seq2SeqParams, ctx: RunContext, start: resume.Plan) -> Outputs:
    outputs = Outputs(
        params,
        main_process=ctx.process.is_main,
        machine=Machine(world_size=ctx.process.world_size, device=ctx.device, gpus=ctx.gpu_names),
        evaluations=resume.previous_evaluations(start.checkpoint),  # metrics.json keeps the whole history
        resumed_from_step=start.step,  # train_loss/runtime then cover only the steps after it
    )
    if ctx.process.is_main:
        outputs.begin()
    return outputs


def _setup_facts(params: Seq2SeqParams, ctx: RunContext) -> dict[str, Any]:
    world = ctx.process.world_size
    effective = params.effective_batch_size(world)
    distributed = distributed_facts(
        world_size=world,
        nnodes=ctx.process.nnodes,
        effective_batch_size=effective,
        deepspeed=params.deepspeed,
        zero_stage=zero_stage(params),
    )
    return {"effective_batch_size": effective, "distributed": distributed}


def _build_trainer(
    params: Seq2SeqParams,
    ctx: RunContext,
    *,
    model: Any,
    tokenizer: Any,
    tokens: TokenizedData,
    outputs: Outputs,
    held: Held,
) -> Any:
    from job.training.args import steps_per_epoch
    from job.training.build import build_trainer
    from job.training.callbacks import OnCheckpoint, OnEvaluate
    from job.training.watchdog import LeaseGuard, NonFiniteWatch, check_schedule

    check_schedule(
        steps_per_epoch=steps_per_epoch(params, len(tokens.train), ctx.process.world_size), epochs=params.epochs
    )
    return build_trainer(
        params=params,
        model=model,
        tokenizer=tokenizer,
        data=tokens,
        process=ctx.process,
        callbacks=[
            NonFiniteWatch(),  # first: a diverged step raises before its checkpoint is marked complete
            LeaseGuard(held.check),  # and so does a lost lease (another job took this output over)
            OnEvaluate(lambda m, state: outputs.evaluation_done(m, step=state.global_step, epoch=state.epoch)),
            OnCheckpoint(outputs.checkpoint_saved),
        ],
    )


def _fit_and_evaluate(
    trainer: Any, params: Seq2SeqParams, ctx: RunContext, *, start: resume.Plan, tokens: TokenizedData, outputs: Outputs
) -> dict[str, Any]:
    """Train (stopping cleanly on SIGTERM), then the final figures and the one final evaluation."""
    from job.training import preemption
    from job.training.callbacks import OnEvaluate

    stopping.enter(stopping.TRAINING)  # SIGTERM/SIGINT: checkpoint at the next consistent point, then exit 143
    result = preemption.train(trainer, resume_from_checkpoint=start.checkpoint)
    preemption.raise_if_stopped(wait=outputs.publisher.wait)  # uploads in flight finish first
    stopping.after_training(  # from here a signal stops at once: the retry resumes from the last checkpoint
        on_stop=outputs.publisher.wait, checkpoints=params.resolved_checkpoint_dir, step=trainer.state.global_step
    )
    trainer.remove_callback(OnEvaluate)  # the final evaluation below is reported once, as the final metrics
    final = final_figures(
        dict(result.metrics),
        global_step=trainer.state.global_step,
        epochs_run=trainer.state.epoch or params.epochs,
        resumed_from_step=start.step,
        train_tokens_per_epoch=tokens.stats["train"].non_padding_tokens,
    )
    if tokens.valid is not None:
        final.update(trainer.evaluate())
    final.update(peak_memory(cuda=bool(ctx.cuda_devices)))
    return final


def _storage_settings(params: Seq2SeqParams, ctx: RunContext) -> storage.StorageSettings:
    return storage_settings(ctx.env, s3_endpoint_url=params.s3_endpoint_url)


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
    local = storage.localize(source, cache_dir=params.cache_dir, what="model")
    check_model_source(local, params, downloaded_from=source if local != source else None)
    return local


def _tokenize(params: Seq2SeqParams, data: DataBundle, tokenizer: Any) -> TokenizedData:
    check_tokenizer(tokenizer, data, model=params.model)  # an empty tokenizer would train on <unk> only
    return tokenize_data(
        data,
        tokenizer,
        source_prefix=params.source_prefix,
        max_seq_length=params.max_seq_length,
        max_target_length=params.max_target_length,
        num_proc=params.preprocessing_num_workers,
        sort_valid_by_length=params.sort_eval_by_length,
    )
