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
from job.cpu import apply_threads
from job.data import DataBundle, load_data
from job.generation import generation_settings
from job.hub import check_push, push_outputs
from job.lease import Held, hold_outputs
from job.model_checks import check_hub_model, check_model_source, check_tokenizer
from job.outputs.folder import Outputs
from job.outputs.report import Machine, distributed_facts, final_evaluation, final_figures, peak_memory
from job.params import Seq2SeqParams
from job.preflight import check, check_launched
from job.preprocess import TokenizedData, tokenize_data
from job.reporters import Reporters
from job.tracking import log_outputs, track
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
    apply_threads(ctx.cpu.threads_per_process(ctx.processes_per_node))  # quota/affinity, not the host's cores
    from job.modeling import load_model, load_tokenizer

    source = _model_source(params, data, work_dir=params.output_dir)
    tokenizer = load_tokenizer(source, params)
    tokens = _tokenize(params, data, tokenizer, ctx)
    outputs.record(data={"splits": data.as_dict(), "tokens": tokens.as_dict()}, **_setup_facts(params, ctx))
    outputs.record_evaluation(params.resolved_metrics, params.resolved_target_language, generation_settings(params))
    model = load_model(source, params, tokenizer, local_rank=ctx.process.local_rank)
    reporters = Reporters.for_run(params, ctx)  # TrainJob progress, the tuning objective
    with track(params, ctx.tracking, main_process=ctx.process.is_main) as tracker:  # one run, closed either way
        trainer = _build_trainer(
            params,
            ctx,
            model=model,
            tokenizer=tokenizer,
            tokens=tokens,
            outputs=outputs,
            reporters=reporters,
            held=held,
        )
        if tracker is not None:
            trainer.add_callback(tracker)
        final = _fit_and_evaluate(trainer, params, ctx, start=start, tokens=tokens, outputs=outputs)
        # Every rank takes part: under ZeRO-3 saving gathers the sharded weights; only rank 0 writes files.
        trainer.save_model(str(outputs.root))
        if tokens.test is not None:  # every rank generates its share of the test split with the final model
            final.update(_score_test(trainer, params, tokens=tokens, data=data, outputs=outputs))
        if not trainer.is_world_process_zero():
            return final
        held.check(verify=True)  # still this output's one writer: only then mark it complete
        objective = reporters.finish(final, step=trainer.state.global_step, epoch=trainer.state.epoch)
        metrics = outputs.finish(
            final={**final, **({"objective": objective} if objective else {})},
            tokenizer=tokenizer,
            base_model=source,
            model=trainer.model,
            log_history=trainer.state.log_history,
        )
        log_outputs(tracker, metrics, root=outputs.root, step=trainer.state.global_step)
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
        tokens = _tokenize(params, data, tokenizer, ctx)
    return {"splits": data.as_dict(), "tokens": tokens.as_dict(), "table": tokens.describe()}


def prepare(params: Seq2SeqParams, ctx: RunContext | None) -> RunContext:
    """The run context (this process's when none is given), checked against the params and put in force."""
    if ctx is None:
        ctx = read_context()
        check(params, ctx)  # preflight() already ran these checks for a context it built
    apply_process_env(ctx, tracker=params.log)
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
    reporters: Reporters,
    held: Held,
) -> Any:
    from job.training.args import steps_per_epoch
    from job.training.build import build_trainer
    from job.training.callbacks import OnCheckpoint, OnEvaluate
    from job.training.watchdog import LeaseGuard, NonFiniteWatch, check_schedule

    check_schedule(
        steps_per_epoch=steps_per_epoch(params, len(tokens.train), ctx.process.world_size), epochs=params.epochs
    )

    trainer = build_trainer(
        params=params,
        model=model,
        tokenizer=tokenizer,
        data=tokens,
        process=ctx.process,
        cpus_per_process=ctx.cpu.threads_per_process(ctx.processes_per_node).threads,
        callbacks=[
            NonFiniteWatch(),  # first: a diverged step raises before its checkpoint is marked complete
            LeaseGuard(held.check),  # and so does a lost lease (another job took this output over)
            OnEvaluate(lambda m, state: outputs.evaluation_done(m, step=state.global_step, epoch=state.epoch)),
            OnCheckpoint(outputs.checkpoint_saved),
            *reporters.callbacks(),
        ],
    )
    reporters.attach(trainer)
    return trainer


def _fit_and_evaluate(
    trainer: Any, params: Seq2SeqParams, ctx: RunContext, *, start: resume.Plan, tokens: TokenizedData, outputs: Outputs
) -> dict[str, Any]:
    """Train (stopping cleanly on SIGTERM), then the final figures and the final model's evaluation.

    The final evaluation is the one the Trainer made of the model it ends with (the best checkpoint, or the last
    step; job.training.callbacks.EvaluateAtEnd with eval_strategy=no): reported once, never run a second time.
    """
    from job.evaluation import log_scores
    from job.training import preemption

    stopping.enter(stopping.TRAINING)  # SIGTERM/SIGINT: checkpoint at the next consistent point, then exit 143
    result = preemption.train(trainer, resume_from_checkpoint=start.checkpoint)
    preemption.raise_if_stopped(wait=outputs.publisher.wait)  # uploads in flight finish first
    stopping.after_training(  # from here a signal stops at once: the retry resumes from the last checkpoint
        on_stop=outputs.publisher.wait, checkpoints=params.resolved_checkpoint_dir, step=trainer.state.global_step
    )
    final = final_figures(
        dict(result.metrics),
        global_step=trainer.state.global_step,
        epochs_run=trainer.state.epoch or params.epochs,
        resumed_from_step=start.step,
        train_tokens_per_epoch=tokens.stats["train"].non_padding_tokens,
    )
    final["train_padding_share"] = trainer.padding.share  # padding among the token slots the model was fed
    state = trainer.state
    best = trainer.args.load_best_model_at_end and state.best_model_checkpoint and state.best_global_step
    final.update(final_evaluation(outputs.evaluations, step=best or state.global_step))
    if "final_model_step" in final:
        which = f"the best by eval_{params.metric_for_best_model}" if best else "the last step"
        log_scores(f"Final model: step {final['final_model_step']} ({which})", _evals(final))
    if tokens.valid is not None and params.eval_max_samples and len(tokens.valid) > params.eval_max_samples:
        _evaluate_every_row(trainer, params, tokens=tokens, final=final)
    final.update(peak_memory(cuda=bool(ctx.cuda_devices)))
    return final


def _evaluate_every_row(trainer: Any, params: Seq2SeqParams, *, tokens: TokenizedData, final: dict[str, Any]) -> None:
    """eval_max_samples: training evaluated a fixed subset; the final model is scored on every validation row."""
    from job.evaluation import log_scores
    from job.training.build import compute_metrics
    from job.training.callbacks import OnEvaluate

    trainer.remove_callback(OnEvaluate)  # metrics.json's evaluations stay the subset's, one per evaluation
    trainer.compute_metrics = compute_metrics(params, trainer.processing_class, tokens, during_training=False)
    final.update(trainer.evaluate(eval_dataset=tokens.valid))
    log_scores(f"Final model on all {len(tokens.valid)} validation rows", _evals(final))


def _evals(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k}


def _score_test(
    trainer: Any, params: Seq2SeqParams, *, tokens: TokenizedData, data: DataBundle, outputs: Outputs
) -> dict[str, Any]:
    """The final model's test_* scores; predictions.jsonl (input, reference, prediction) on the main process."""
    from job import evaluation

    scores, predictions = evaluation.score_split(
        trainer,
        tokens.test,
        data.test,
        metrics=params.resolved_metrics,
        target_language=params.resolved_target_language,
    )
    if trainer.is_world_process_zero():
        outputs.write_predictions(data.test, predictions)
        evaluation.log_scores(f"Test split {params.test_split!r}", scores)
    return scores


def _storage_settings(params: Seq2SeqParams, ctx: RunContext) -> storage.StorageSettings:
    return storage_settings(ctx.env, s3_endpoint_url=params.s3_endpoint_url)


def _load_data(params: Seq2SeqParams) -> DataBundle:
    return load_data(
        data_path=storage.localize(params.data_path, cache_dir=params.cache_dir, what="data_path"),
        train_split=params.train_split,
        valid_split=params.valid_split,
        test_split=params.test_split,
        text_column=params.text_column,
        target_column=params.target_column,
        max_samples=params.max_samples,
        token=params.token_value(),
        num_proc=params.preprocessing_num_workers,
        languages=_languages(params),
    )


def _languages(params: Seq2SeqParams) -> tuple[str, str] | None:
    """src_lang/tgt_lang, to find a translation dict column's keys when no column names were given."""
    named = {"text_column", "target_column"} & params.model_fields_set
    return (params.src_lang, params.tgt_lang) if params.src_lang and params.tgt_lang and not named else None


def _model_source(params: Seq2SeqParams, data: DataBundle, *, work_dir: Path) -> str:
    """A local folder or Hub id to load from: s3:// / gs:// models are downloaded first (manifest required)."""
    from job.modeling import resolve_model_source

    source = resolve_model_source(params, data, work_dir=work_dir)
    local = storage.localize(source, cache_dir=params.cache_dir, what="model")
    check_model_source(local, params, downloaded_from=source if local != source else None)
    return local


def _tokenize(params: Seq2SeqParams, data: DataBundle, tokenizer: Any, ctx: RunContext) -> TokenizedData:
    check_tokenizer(tokenizer, data, model=params.model)  # an empty tokenizer would train on <unk> only
    # One process per node tokenizes (the others reuse its cache file), so it may use all the node's CPUs.
    workers = params.preprocessing_num_workers or ctx.cpu.tokenize_workers(len(data.train))
    return tokenize_data(
        data,
        tokenizer,
        source_prefix=params.source_prefix,
        max_seq_length=params.max_seq_length,
        max_target_length=params.max_target_length,
        num_proc=workers,
        sort_valid_by_length=params.sort_eval_by_length,
    )
