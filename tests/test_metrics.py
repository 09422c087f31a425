"""Our ROUGE equals rouge_score's own scorer, and needs no downloads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from rouge_score import rouge_scorer

from job.metrics import ROUGE_TYPES, build_compute_metrics, rouge, split_sentences

PREDS = [
    "The cat sat on the mat. It was happy.",
    "red fox jumped river monday",
    "Completely unrelated words here!",
    "",
]
REFS = [
    "A cat was sitting on the mat. The cat seemed happy. Dr. Smith agreed.",
    "red fox jumped over river on monday",
    "Nothing in common at all.",
    "empty prediction reference",
]


def test_rouge_matches_rouge_score_scorer() -> None:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    expected = {t: 0.0 for t in ROUGE_TYPES}
    for pred, ref in zip(PREDS, REFS, strict=True):
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for t in ROUGE_TYPES:
            expected[t] += 100 * scores[t].fmeasure / len(PREDS)
    ours = rouge(PREDS, REFS)
    for t in ROUGE_TYPES:
        assert ours[t] == pytest.approx(expected[t], abs=1e-3)
    # single-sentence pairs: rouge1/2/L are the scorer's plain numbers
    plain = scorer.score(REFS[1], PREDS[1])
    assert rouge([PREDS[1]], [REFS[1]])["rouge1"] == pytest.approx(100 * plain["rouge1"].fmeasure, abs=1e-3)


def test_identical_texts_score_100_and_disjoint_score_0() -> None:
    assert rouge(["a b c. d e f."], ["a b c. d e f."]) == {t: 100.0 for t in ROUGE_TYPES}
    assert rouge(["x y z"], ["a b c"]) == {t: 0.0 for t in ROUGE_TYPES}


def test_rouge_lsum_uses_sentence_splits() -> None:
    # Same sentences in another order: rougeL punishes the order, rougeLsum (per-sentence LCS) does not.
    scores = rouge(["Birds fly high. Fish swim deep."], ["Fish swim deep. Birds fly high."])
    assert scores["rougeLsum"] == pytest.approx(100.0)
    assert scores["rougeL"] < 100.0


def test_split_sentences_without_nltk() -> None:
    expected = ["Hello there.", "How are you?", "Fine!", "Thanks."]
    assert split_sentences("Hello there. How are you? Fine! Thanks.") == expected
    assert split_sentences("Dr. Smith met Mr. Jones at 5 p.m. today. Then left.") == [
        "Dr. Smith met Mr. Jones at 5 p.m. today.",
        "Then left.",
    ]
    assert split_sentences("no punctuation at all") == ["no punctuation at all"]
    assert split_sentences("") == []


def test_compute_metrics_decodes_and_counts_gen_len() -> None:
    vocab = {0: "<pad>", 1: "</s>", 5: "red", 6: "fox", 7: "river"}

    class Tok:
        pad_token_id = 0

        def batch_decode(self, rows, skip_special_tokens=True):
            return [" ".join(vocab[int(i)] for i in row if int(i) > 1) for row in rows]

    compute = build_compute_metrics(Tok())
    preds = np.array([[0, 5, 6, 1], [0, 7, 1, 0]])
    labels = np.array([[5, 6, 1, -100], [7, 1, -100, -100]])
    result = compute(SimpleNamespace(predictions=preds, label_ids=labels))
    assert result["rouge1"] == pytest.approx(100.0)
    assert result["gen_len"] == pytest.approx(2.5)  # non-pad ids: 3 and 2
