"""``seq2seq-job evaluate``: score a model folder on any split that has a target column.

The folder is one of ours (its ``training_params.json`` gives the defaults: columns, source prefix, lengths,
metrics, the targets' language) or any transformers seq2seq folder trained elsewhere (``config.json`` and
tokenizer files; a LoRA adapter folder works too). The model generates with the folder's generation settings,
flags over them, and is scored by :mod:`job.evaluation` exactly as the test split after training: the metrics
JSON (:func:`job.outputs.report.evaluation_report`) is printed, and with ``--output DIR`` written to
``DIR/evaluation.json`` next to ``DIR/predictions.jsonl``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from job import manifest, metric_sets
from job.data import SOURCE, TARGET
from job.errors import UserError
from job.jsonfiles import read_object_or_empty, write_atomic
from job.outputs.files import EVALUATION, PARAMS, PREDICTIONS
from job.outputs.report import Machine, evaluation_report

log = logging.getLogger(__name__)
_MAX_INPUT_TOKENS = 1024  # a foreign folder's input length when its tokenizer declares none (or 1e30)


@dataclass(frozen=True)
class EvaluateRequest:
    """The evaluate command's options (unset ones come from the folder's training_params.json)."""

    model_dir: Path
    data_path: str
    split: str = "test"
    text_column: str | None = None
    target_column: str | None = None
    output: Path | None = None
    batch_size: int = 16
    max_samples: int | None = None
    source_prefix: str | None = None
    max_seq_length: int | None = None
    metrics: str | None = None
    task: str | None = None
    target_language: str | None = None
    generation: Mapping[str, Any] = field(default_factory=dict)
    token: str | None = None


def evaluate_folder(request: EvaluateRequest) -> dict[str, Any]:
    """Score ``request.model_dir`` on the split; return the report (and write it with ``request.output``)."""
    _check_output(request.output)
    trained = read_object_or_empty(request.model_dir / PARAMS)  # ours: the training run's settings; else {}
    settings = _settings(request, trained)
    raw, split_report = _load(request, trained, settings)
    from job.predict import load_for_inference

    tokenizer, model = load_for_inference(request.model_dir)
    from job import generation

    generation_used = generation.for_inference(model, request.model_dir, overrides=request.generation, trained=trained)
    max_len = settings["max_seq_length"] or min(getattr(tokenizer, "model_max_length", 0) or 0, _MAX_INPUT_TOKENS)
    settings["max_seq_length"] = max_len or _MAX_INPUT_TOKENS
    tokens = _encode(raw, tokenizer, settings)
    scores, predictions = _score(model, tokenizer, tokens, raw, request=request, settings=settings)
    report = evaluation_report(
        model_dir=str(request.model_dir),
        data_path=request.data_path,
        split=asdict(split_report),
        scores=scores,
        generation=generation_used,
        settings=settings,
        machine=Machine(device=str(model.device)),
    )
    if request.output is not None:
        from job.evaluation import write_predictions

        write_predictions(request.output / PREDICTIONS, raw, predictions)
        write_atomic(request.output / EVALUATION, report)
    return report


def _check_output(output: Path | None) -> None:
    if output is not None and (output / manifest.MANIFEST).is_file():
        raise UserError(
            f"--output {output} is a finished output folder (it has {manifest.MANIFEST}): writing there would "
            "change files its manifest lists; choose another folder"
        )


def _settings(request: EvaluateRequest, trained: Mapping[str, Any]) -> dict[str, Any]:
    """Source prefix, lengths, metrics and the targets' language: the flags, else the training run's."""
    text = request.text_column or trained.get("text_column") or "text"
    target = request.target_column or trained.get("target_column") or "target"
    task = request.task or trained.get("task") or "auto"
    metrics = request.metrics or trained.get("metrics")
    names = [name.strip() for name in metrics.split(",") if name.strip()] if metrics else None
    languages = (trained.get("src_lang"), trained.get("tgt_lang"))
    try:
        resolved_task = metric_sets.resolve_task(task, languages=languages, columns=(text, target))
        chosen = metric_sets.resolve_metrics(names, resolved_task)
    except ValueError as exc:
        raise UserError(f"--metrics/--task: {exc}") from None
    language = request.target_language or trained.get("target_language") or trained.get("tgt_lang")
    return {
        "text_column": text,
        "target_column": target,
        "source_prefix": trained.get("source_prefix", "") if request.source_prefix is None else request.source_prefix,
        "max_seq_length": request.max_seq_length or trained.get("max_seq_length"),
        "max_target_length": trained.get("max_target_length") or _MAX_INPUT_TOKENS,
        "metrics": list(chosen),
        "target_language": language or metric_sets.column_language(target),
    }


def _load(request: EvaluateRequest, trained: Mapping[str, Any], settings: dict[str, Any]) -> tuple[Any, Any]:
    from job import storage
    from job.data.load import load_split

    src, tgt = trained.get("src_lang"), trained.get("tgt_lang")
    named = request.text_column or request.target_column
    return load_split(
        data_path=storage.localize(request.data_path, cache_dir=None, what="data_path"),
        split=request.split,
        text_column=settings["text_column"],
        target_column=settings["target_column"],
        max_samples=request.max_samples,
        token=request.token,
        languages=(src, tgt) if src and tgt and not named else None,
        role="evaluation",
    )


def _encode(raw: Any, tokenizer: Any, settings: Mapping[str, Any]) -> Any:
    """Inputs and labels as job.preprocess makes them (prefix, truncation; labels only feed the loss)."""
    from job.preprocess import LENGTH

    prefix, max_len, max_target = settings["source_prefix"], settings["max_seq_length"], settings["max_target_length"]

    def encode(batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        enc = tokenizer([prefix + text for text in batch[SOURCE]], max_length=max_len, truncation=True)
        enc["labels"] = tokenizer(text_target=batch[TARGET], max_length=max_target, truncation=True)["input_ids"]
        enc[LENGTH] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return raw.map(encode, batched=True, remove_columns=raw.column_names, keep_in_memory=True, desc="Tokenizing")


def _score(
    model: Any, tokenizer: Any, tokens: Any, raw: Any, *, request: EvaluateRequest, settings: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    from job.evaluation import score_split
    from job.training.trainer import JobTrainer

    with tempfile.TemporaryDirectory(prefix="seq2seq-evaluate-") as tmp:
        args = Seq2SeqTrainingArguments(
            output_dir=tmp,
            per_device_eval_batch_size=request.batch_size,
            predict_with_generate=True,
            report_to="none",
            disable_tqdm=not sys.stderr.isatty(),
            dataloader_pin_memory=model.device.type == "cuda",
        )
        trainer = JobTrainer(
            model=model,
            args=args,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
            processing_class=tokenizer,
        )
        scores, predictions = score_split(
            trainer, tokens, raw, metrics=settings["metrics"], target_language=settings["target_language"]
        )
    return {key.removeprefix("test_"): value for key, value in scores.items()}, predictions


def print_report(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2, ensure_ascii=False))
