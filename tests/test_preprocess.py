"""Tokenization: one pass, the tokenizer's own truncation, statistics from histograms, a cache reruns reuse."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from job import token_stats
from job.data import load_data
from job.preprocess import FULL_IN, FULL_OUT, LENGTH, Encoder, special_tail, tokenize_data
from job.token_stats import LengthStats

ROOT = Path(__file__).resolve().parents[1]


def _texts(sentences: list[str], count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, rng.randint(1, 8))) for _ in range(count)]


@pytest.mark.parametrize("fixture", ["tiny_t5_dir", "tiny_bart_dir", "tiny_mbart_dir", "tiny_marian_dir"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_one_pass_gives_the_tokenizers_own_truncation(fixture, side, request, tiny_model_sentences) -> None:
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    tokenizer.truncation_side = side  # left: the cut-from-the-same-tokens shortcut fails its check and falls back
    texts = _texts(tiny_model_sentences, 40)
    targets = _texts(tiny_model_sentences, 40, seed=1)
    out = Encoder(tokenizer, source_prefix="summarize: ", limits=(24, 12))({"source": texts, "target": targets})
    prefixed = ["summarize: " + t for t in texts]
    exact_in = tokenizer(prefixed, max_length=24, truncation=True)
    exact_out = tokenizer(text_target=targets, max_length=12, truncation=True)
    assert out["input_ids"] == exact_in["input_ids"] and out["attention_mask"] == exact_in["attention_mask"]
    assert out["labels"] == exact_out["input_ids"]
    assert out[FULL_IN] == [len(ids) for ids in tokenizer(prefixed)["input_ids"]]
    assert out[FULL_OUT] == [len(ids) for ids in tokenizer(text_target=targets)["input_ids"]]
    assert out[LENGTH] == [len(ids) for ids in exact_in["input_ids"]]
    assert max(out[FULL_IN]) > 24 and min(out[FULL_IN]) <= 24  # both kinds of rows were there


def test_special_tail_is_what_the_tokenizer_appends(tiny_t5_dir, tiny_bart_dir) -> None:
    assert special_tail(AutoTokenizer.from_pretrained(tiny_t5_dir), target=False) == 1  # </s>
    assert special_tail(AutoTokenizer.from_pretrained(tiny_bart_dir), target=True) == 1  # <s> … </s>


def test_length_stats_from_histograms_equal_numpys(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 1000):
        lengths = rng.integers(1, 300, size=size)
        stats = LengthStats.of(lengths, max_length=128)
        assert [stats.p50, stats.p90, stats.p95, stats.p99] == [
            round(float(np.percentile(lengths, q)), 2) for q in (50, 90, 95, 99)
        ]
        assert stats.mean == round(float(lengths.mean()), 2) and stats.max == lengths.max()
        assert stats.truncated_share == round(float(np.mean(lengths > 128)), 4)
    assert LengthStats.of(np.zeros(0, dtype=int), 5).max == 0


def test_statistics_are_read_in_chunks_and_come_out_the_same(monkeypatch) -> None:
    import datasets

    rng = np.random.default_rng(1)
    table = {"a": rng.integers(0, 50, 1000).tolist(), "b": rng.integers(0, 9, 1000).tolist()}
    dataset = datasets.Dataset.from_dict(table)
    whole = token_stats.histograms(dataset, ["a", "b"])
    monkeypatch.setattr(token_stats, "CHUNK_ROWS", 64)
    chunked = token_stats.histograms(dataset, ["a", "b"])
    for name in ("a", "b"):
        assert chunked[name].tolist() == whole[name].tolist() == np.bincount(table[name]).tolist()


def test_tokenized_splits_are_cached_and_reused_by_another_process(keywords_task_dir, tiny_t5_dir, tmp_path) -> None:
    """A second process (a rerun, or another rank of the node) loads the cache file instead of tokenizing."""
    cache = tmp_path / "tokens"
    script = f"""
import json, sys
from transformers import AutoTokenizer
from job.data import load_data
from job.preprocess import Encoder, tokenize_data
calls = []
original = Encoder.__call__
Encoder.__call__ = lambda self, batch: calls.append(1) or original(self, batch)
data = load_data(data_path={str(keywords_task_dir)!r}, valid_split="validation")
tokens = tokenize_data(data, AutoTokenizer.from_pretrained({str(tiny_t5_dir)!r}), max_seq_length=int(sys.argv[1]),
                       max_target_length=8, cache_dir=__import__("pathlib").Path({str(cache)!r}))
print(json.dumps({{"calls": len(calls), "rows": len(tokens.train), "first": tokens.train[0]["input_ids"],
                   "stats": tokens.as_dict()}}))
"""

    def run(max_seq_length: int) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", script, str(max_seq_length)], capture_output=True, text=True, cwd=ROOT, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, again, other = run(16), run(16), run(9)
    assert first["calls"] > 0 and again["calls"] == 0  # the rerun tokenized nothing
    assert again["first"] == first["first"] and again["stats"] == first["stats"] and again["rows"] == 400
    assert other["calls"] > 0 and len(other["first"]) <= 9  # other arguments: another cache file
    assert len(list(cache.glob("tokens-*.arrow"))) == 4  # train and validation, for each max_seq_length


def test_in_memory_splits_stay_in_memory(tiny_t5_dir, tmp_path) -> None:
    import datasets

    from job.data import DataBundle, SplitReport

    train = datasets.Dataset.from_dict({"source": ["a red cat", "the dog"], "target": ["red cat", "dog"]})
    report = SplitReport(name="train", rows_read=2, dropped_empty=0, rows=2)
    data = DataBundle(train=train, valid=None, reports={"train": report})
    tokens = tokenize_data(
        data, AutoTokenizer.from_pretrained(tiny_t5_dir), max_seq_length=8, max_target_length=4, cache_dir=tmp_path
    )
    assert len(tokens.train) == 2 and not list(tmp_path.iterdir())


def test_validate_statistics_match_a_plain_untruncated_count(keywords_task_dir, tiny_t5_dir, tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    data = load_data(data_path=str(keywords_task_dir), valid_split="validation")
    tokens = tokenize_data(data, tokenizer, max_seq_length=6, max_target_length=3, cache_dir=tmp_path)
    full = np.array([len(ids) for ids in tokenizer(list(data.train["source"]))["input_ids"]])
    stats = tokens.stats["train"].inputs
    assert stats.p95 == round(float(np.percentile(full, 95)), 2) and stats.max == full.max()
    assert stats.truncated_share == round(float(np.mean(full > 6)), 4) > 0
    assert max(len(ids) for ids in tokens.train["input_ids"]) == 6


@pytest.mark.parametrize("fixture", ["tiny_t5_dir", "tiny_marian_dir"])
def test_cache_key_depends_on_the_tokenizer_and_arguments_not_on_its_calls(fixture, request) -> None:
    from job.preprocess import cache_key

    folder = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    key = cache_key(tokenizer, "", 32, 8)
    tokenizer(["a b c"] * 2, max_length=2, truncation=True, padding="max_length")  # leaves state behind
    assert cache_key(tokenizer, "", 32, 8) == key == cache_key(AutoTokenizer.from_pretrained(folder), "", 32, 8)
    assert len({key, cache_key(tokenizer, "x: ", 32, 8), cache_key(tokenizer, "", 16, 8)}) == 3
