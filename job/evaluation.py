"""Score a model on a split that has references: the test split after training, and ``seq2seq-job evaluate``.

The model generates for every row with its own generation config (:mod:`job.generation`), longest inputs first.
The predictions are scored against the references *as written in the data* (not their tokenized labels, which
are truncated at ``max_target_length``), so scoring ``predictions.jsonl`` again with :func:`job.metrics.score`
gives the same numbers. ``loss`` is the model's loss on the tokenized labels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from job.data import SOURCE, TARGET
from job.metrics import GEN_LEN, decode, mean_generated_length, score
from job.preprocess import LENGTH

log = logging.getLogger(__name__)


def score_split(
    trainer: Any,
    tokens: Any,
    raw: Any,
    *,
    metrics: Sequence[str],
    target_language: str | None,
    prefix: str = "test",
) -> tuple[dict[str, float], list[str]]:
    """``{prefix}_<metric>`` scores, ``{prefix}_loss``, ``{prefix}_gen_len`` and speed, and the predictions in order.

    ``tokens``: the tokenized split (``input_ids``, ``labels``, ``length``); ``raw``: the same rows as text
    (``SOURCE``, ``TARGET``). Every process of a distributed run calls this (the Trainer shards generation).
    """
    order = np.argsort(-np.asarray(tokens[LENGTH]), kind="stable")  # batches of near-equal length pad little
    compute, trainer.compute_metrics = trainer.compute_metrics, None  # scored below, against the data's texts
    try:
        output = trainer.predict(tokens.select(order), metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = compute
    tokenizer = trainer.processing_class
    predictions = [""] * len(order)
    for position, text in zip(order, decode(tokenizer, output.predictions), strict=True):
        predictions[int(position)] = text
    references = list(raw[TARGET])
    scores = score(predictions, references, metrics=metrics, target_lang=target_language)
    result = {f"{prefix}_{name}": value for name, value in scores.items()}
    result[f"{prefix}_{GEN_LEN}"] = mean_generated_length(tokenizer, output.predictions)
    result.update({k: v for k, v in output.metrics.items() if not k.endswith("model_preparation_time")})
    return result, predictions


def write_predictions(path: Path, raw: Any, predictions: Sequence[str]) -> None:
    """``predictions.jsonl``: one ``{"input", "reference", "prediction"}`` object per row, in the data's order."""
    rows = zip(raw[SOURCE], raw[TARGET], predictions, strict=True)
    lines = [json.dumps({"input": i, "reference": r, "prediction": p}, ensure_ascii=False) for i, r, p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    log.info("Wrote %d predictions to %s", len(lines), path)


def log_scores(what: str, scores: dict[str, Any]) -> None:
    shown = " ".join(f"{k}={v:.4g}" for k, v in scores.items() if isinstance(v, float) and "per_second" not in k)
    log.info("%s: %s", what, shown)
