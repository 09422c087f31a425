"""ROUGE-1/2/L/Lsum (×100) and generation length, computed locally with ``rouge-score``.

No ``evaluate.load("rouge")`` (downloads a script from the Hub) and no nltk ``punkt`` data (downloads too):
both fail on air-gapped clusters. ROUGE-Lsum needs one sentence per line; :func:`split_sentences` does that
with a regular expression instead of nltk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and whitespace, unless the word before
# the dot is a short abbreviation or an initial ("e.g.", "Dr.", "U.S.").
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:\b[A-Za-z]\.|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|No|Inc|Ltd|Co))\.?$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences without nltk data (good enough for ROUGE-Lsum on English-like text)."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].strip()
        if _ABBREVIATION.search(candidate):
            continue
        if candidate:
            pieces.append(candidate)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def rouge(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE F-measures ×100 over the pairs, as transformers' summarization example reports them."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {name: 0.0 for name in ROUGE_TYPES}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        # rougeLsum treats newlines as sentence boundaries.
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: round(100 * total / len(predictions), 4) for name, total in totals.items()}


def build_compute_metrics(tokenizer: Any) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for Seq2SeqTrainer with ``predict_with_generate=True``."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        preds, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        # -100 marks padding in labels (and in predictions gathered across processes); decode needs real ids.
        preds = np.where(preds < 0, pad_id, preds)
        labels = np.where(labels < 0, pad_id, labels)
        decoded_preds = [p.strip() for p in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        decoded_labels = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        result: dict[str, float] = rouge(decoded_preds, decoded_labels)
        result["gen_len"] = round(float(np.mean(np.count_nonzero(preds != pad_id, axis=1))), 4)
        return result

    return compute_metrics
