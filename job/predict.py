"""Generate with a trained output folder: ``seq2seq-job predict --model-dir OUT --input-file data.csv``.

transformers 5 removed the ``summarization`` / ``text2text-generation`` pipelines; this is the small,
batched replacement for a job's own outputs. It reads ``source_prefix`` from the folder's
``training_params.json`` so inputs are prepared exactly as in training, generates with the folder's
``generation_config.json`` (the settings the run was evaluated with, :mod:`job.generation`) unless flags
override them, loads an adapter folder through peft, batches inputs by length and returns predictions in the
input order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from job.errors import UserError
from job.jsonfiles import read_object_or_empty
from job.outputs.files import PARAMS

log = logging.getLogger(__name__)


def load_for_inference(model_dir: Path) -> tuple[Any, Any]:
    """Tokenizer and model (full model, or base + adapter when the folder holds a LoRA adapter)."""
    from job.context import name_deepspeed_accelerator

    name_deepspeed_accelerator()
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise UserError(f"--model-dir {model_dir} holds no model (no config.json or adapter_config.json)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSeq2SeqLM

        model = AutoPeftModelForSeq2SeqLM.from_pretrained(model_dir)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    return tokenizer, model


def training_params(model_dir: Path) -> dict[str, Any]:
    """The folder's training_params.json ({} when missing or unreadable)."""
    return read_object_or_empty(model_dir / PARAMS)


def predict(
    texts: Sequence[str],
    *,
    model_dir: Path,
    batch_size: int = 16,
    source_prefix: str | None = None,
    generation_overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """Predictions for ``texts``, in order.

    ``source_prefix`` (default: the training run's) goes before every input; ``generation_overrides`` (e.g.
    ``{"num_beams": 4}``; None values ignored) go over the folder's generation settings.
    """
    from job import generation

    trained = training_params(model_dir)
    prefix = trained.get("source_prefix", "") if source_prefix is None else source_prefix
    max_len = trained.get("max_seq_length")
    tokenizer, model = load_for_inference(model_dir)
    settings = generation.for_inference(model, model_dir, overrides=generation_overrides or {}, trained=trained)
    log.info("Generating with %s", ", ".join(f"{k}={v}" for k, v in settings.items()))
    return generate_texts(
        texts, model=model, tokenizer=tokenizer, prefix=prefix, batch_size=batch_size, max_len=max_len
    )


def generate_texts(
    texts: Sequence[str], *, model: Any, tokenizer: Any, prefix: str, batch_size: int, max_len: int | None
) -> list[str]:
    """``model.generate`` (with its generation config) for ``prefix + text`` of every text, in batches."""
    # Longest first: batches of near-equal length pad little, and an out-of-memory shows up at once.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    results: list[str] = [""] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer(
                [prefix + texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_len,
            )
            enc = enc.to(model.device)
            ids = model.generate(**enc)
            for i, text in zip(batch, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                results[i] = text.strip()
            log.info("predicted %d/%d", min(start + batch_size, len(order)), len(order))
    return results


def read_inputs(path: Path, column: str) -> list[str]:
    """Texts from a .txt (one per line), .csv/.tsv/.jsonl/.json/.parquet file (its ``column``)."""
    if not path.is_file():
        raise UserError(f"--input-file {path} does not exist")
    if path.suffix == ".txt":
        return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    import datasets

    kinds = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    if path.suffix not in kinds:
        raise UserError(f"--input-file {path}: use a .txt, .csv, .tsv, .jsonl, .json or .parquet file")
    extra = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    try:
        rows = datasets.load_dataset(kinds[path.suffix], data_files=str(path), split="train", **extra)
    except Exception as exc:  # datasets raises many types for unreadable files
        raise UserError(f"--input-file {path} could not be read: {str(exc).splitlines()[0]}") from None
    if column not in rows.column_names:
        raise UserError(f"--input-file {path} has no column {column!r} (--text-column); columns: {rows.column_names}")
    return ["" if v is None else str(v) for v in rows[column]]


def write_outputs(path: Path | None, texts: Sequence[str], predictions: Sequence[str]) -> None:
    """JSON lines ``{"text": …, "prediction": …}`` to ``path``, or to stdout."""
    pairs = zip(texts, predictions, strict=True)
    lines = [json.dumps({"text": t, "prediction": p}, ensure_ascii=False) for t, p in pairs]
    if path is None:
        print("\n".join(lines))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    log.info("wrote %d predictions to %s", len(lines), path)
