"""Prefix, tokenize and truncate the splits; measure token lengths and how much truncation cuts.

Every row is tokenized once, without truncation: its full length feeds the statistics
(:mod:`job.token_stats`), and the rows longer than the limit are cut from the same tokens, checked against the
tokenizer's own truncation (:class:`Encoder`). Tokenization runs through ``datasets.map`` (batched, optional
worker processes) into a cache file that reruns and the other processes of the node reuse. Nothing is padded
here: :func:`job.training.build.build_collator` pads each batch to its own longest row, and labels are padded
with -100 so padding never counts in the loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from job.data import SOURCE, TARGET, DataBundle
from job.errors import UserError
from job.locks import file_lock
from job.token_stats import SplitTokens, split_tokens

log = logging.getLogger(__name__)

LENGTH = "length"  # input tokens after truncation; read by length-grouped sampling and eval batch sizing
FULL_IN, FULL_OUT = "_input_tokens", "_target_tokens"  # lengths before truncation, for the statistics
TOKEN_CACHE = "seq2seq-job-tokens"  # folder under datasets' cache for tokenized splits
FORMAT_VERSION = 2  # bump when what a cached tokenized split holds changes


@dataclass
class TokenizedData:
    train: datasets.Dataset
    valid: datasets.Dataset | None
    stats: dict[str, SplitTokens]
    test: datasets.Dataset | None = None  # in the data's row order (job.evaluation sorts it for generation)
    valid_references: list[str] | None = None  # the validation targets as written, in the order of ``valid``

    def as_dict(self) -> dict[str, Any]:
        return {name: asdict(split) for name, split in self.stats.items()}

    def describe(self) -> str:
        """A small table for the log and for ``validate``."""
        lines = [
            f"{'split':<12}{'rows':>8}  {'column':<7}{'mean':>8}{'p50':>7}{'p90':>7}{'p95':>7}{'p99':>7}"
            f"{'max':>7}{'limit':>7}{'truncated':>11}"
        ]
        for name, split in self.stats.items():
            for column, s in (("input", split.inputs), ("target", split.targets)):
                lines.append(
                    f"{name:<12}{split.rows:>8}  {column:<7}{s.mean:>8.1f}{s.p50:>7.0f}{s.p90:>7.0f}{s.p95:>7.0f}"
                    f"{s.p99:>7.0f}{s.max:>7}{s.max_length:>7}{s.truncated_share:>10.1%}"
                )
        return "\n".join(lines)


class Encoder:
    """The ``datasets.map`` function: tokenize a batch once, keep full lengths, cut long rows from the same tokens.

    A row longer than the limit becomes its first ``limit - s`` tokens plus its last ``s`` (the special tokens
    the tokenizer appends, e.g. ``</s>``): what the tokenizer's own right-side truncation gives. Each batch
    checks that on its first long row against the tokenizer itself; if they differ (another truncation side or
    layout), that batch's long rows are tokenized again with the tokenizer's truncation.
    """

    def __init__(self, tokenizer: Any, *, source_prefix: str, limits: tuple[int, int]) -> None:
        self.tokenizer, self.source_prefix, self.limits = tokenizer, source_prefix, limits
        self.tails = (special_tail(tokenizer, target=False), special_tail(tokenizer, target=True))

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        inputs = [self.source_prefix + text for text in batch[SOURCE]]
        enc = dict(self.tokenizer(inputs))
        labels = dict(self.tokenizer(text_target=batch[TARGET]))
        full_in = [len(ids) for ids in enc["input_ids"]]
        full_out = [len(ids) for ids in labels["input_ids"]]
        self._truncate(enc, inputs, full_in, target=False)
        self._truncate(labels, batch[TARGET], full_out, target=True)
        enc["labels"] = labels["input_ids"]
        enc[LENGTH] = [min(n, self.limits[0]) for n in full_in]
        enc[FULL_IN], enc[FULL_OUT] = full_in, full_out
        return enc

    def _truncate(self, enc: dict[str, list[Any]], texts: list[str], lengths: list[int], *, target: bool) -> None:
        limit, tail = self.limits[target], self.tails[target]
        long = [i for i, n in enumerate(lengths) if n > limit]
        if not long:
            return
        first = long[0]
        keys = [k for k, rows in enc.items() if isinstance(rows, list) and len(rows[first]) == lengths[first]]
        exact = self._exact([texts[first]], limit, target)
        if tail is not None and all(_cut(enc[k][first], limit, tail) == exact[k][0] for k in keys):
            for i in long:
                for k in keys:
                    enc[k][i] = _cut(enc[k][i], limit, tail)
            return
        exact = self._exact([texts[i] for i in long], limit, target)
        for j, i in enumerate(long):
            for k in keys:
                enc[k][i] = exact[k][j]

    def _exact(self, texts: list[str], limit: int, target: bool) -> Any:
        if target:
            return self.tokenizer(text_target=texts, max_length=limit, truncation=True)
        return self.tokenizer(texts, max_length=limit, truncation=True)


def _cut(ids: list[Any], limit: int, tail: int) -> list[Any]:
    """The first ``limit - tail`` items and the last ``tail`` (the appended special tokens)."""
    if tail >= limit:
        return ids[:limit]
    return ids[: limit - tail] + ids[len(ids) - tail :]


def special_tail(tokenizer: Any, *, target: bool) -> int | None:
    """How many special tokens the tokenizer appends after the text (1 for ``</s>``), or None if unclear."""
    probe = "a b c"

    def call(**kwargs: Any) -> list[int]:
        encoded = tokenizer(text_target=probe, **kwargs) if target else tokenizer(probe, **kwargs)
        return list(encoded["input_ids"])

    try:
        full, bare = call(), call(add_special_tokens=False)
    except (TypeError, ValueError, KeyError):  # every long row then gets the tokenizer's own truncation
        return None
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return len(full) - start - len(bare)
    return None


def cache_key(tokenizer: Any, source_prefix: str, max_seq_length: int, max_target_length: int) -> str:
    """What a tokenized split depends on besides its rows: the tokenizer's content and these arguments."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for volatile in ("truncation", "padding"):  # set by each call, not part of what the tokenizer is
            state.pop(volatile, None)
        content = json.dumps(state, sort_keys=True)
    else:
        content = json.dumps(sorted(tokenizer.get_vocab().items()))
    described = [
        FORMAT_VERSION,
        type(tokenizer).__name__,
        str(getattr(tokenizer, "src_lang", None)),
        str(getattr(tokenizer, "tgt_lang", None)),
        tokenizer.truncation_side,
        source_prefix,
        max_seq_length,
        max_target_length,
    ]
    return hashlib.sha256(json.dumps(described).encode() + content.encode()).hexdigest()


def tokenize_data(
    data: DataBundle,
    tokenizer: Any,
    *,
    source_prefix: str = "",
    max_seq_length: int,
    max_target_length: int,
    num_proc: int | None = None,
    sort_valid_by_length: bool = True,
    cache_dir: Path | None = None,
) -> TokenizedData:
    """Tokenize train (and validation and test) once, and collect length statistics from the same pass.

    Splits backed by Arrow files are tokenized into ``cache_dir`` (default: datasets' cache) under a key made of
    the split's fingerprint, the tokenizer's content and these arguments, one process at a time: a rerun, and
    every other process of the node (or of any node sharing the folder), loads the result instead of
    tokenizing again. In-memory splits stay in memory.
    """
    if not source_prefix and _looks_like_t5_without_prefix(tokenizer):
        log.info("T5-style model and no source_prefix: consider e.g. source_prefix='summarize: '")
    encode = Encoder(tokenizer, source_prefix=source_prefix, limits=(max_seq_length, max_target_length))
    folder = cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / TOKEN_CACHE
    key = cache_key(tokenizer, source_prefix, max_seq_length, max_target_length)
    splits: dict[str, datasets.Dataset] = {}
    stats: dict[str, SplitTokens] = {}
    references: list[str] | None = None
    for name, split in (("train", data.train), ("validation", data.valid), ("test", data.test)):
        if split is None:
            continue
        tokenized = _tokenize_split(split, encode, name=name, num_proc=num_proc, folder=folder, key=key)
        stats[name] = split_tokens(
            tokenized,
            inputs=FULL_IN,
            targets=FULL_OUT,
            max_seq_length=max_seq_length,
            max_target_length=max_target_length,
        )
        tokenized = tokenized.remove_columns([FULL_IN, FULL_OUT])
        if name == "validation":
            tokenized, references = _generation_order(tokenized, split[TARGET], sort=sort_valid_by_length)
        splits[name] = tokenized
    result = TokenizedData(splits["train"], splits.get("validation"), stats, splits.get("test"), references)
    log.info("Token lengths before truncation:\n%s", result.describe())
    for name, split_stats in stats.items():
        if split_stats.inputs.truncated_share > 0.1:
            log.warning(
                "%.0f%% of %s inputs are longer than max_seq_length=%d and get cut; consider raising it",
                100 * split_stats.inputs.truncated_share,
                name,
                max_seq_length,
            )
    return result


def _generation_order(
    tokenized: datasets.Dataset, references: list[str], *, sort: bool
) -> tuple[datasets.Dataset, list[str]]:
    """The validation rows longest first (with ``sort``) and their references as written, in that order.

    Generation pads every batch to its longest input: sorted rows make batches of near-equal length.
    """
    if not sort:
        return tokenized, references
    order = np.argsort(-np.asarray(tokenized[LENGTH]), kind="stable")
    return tokenized.select(order), [references[i] for i in order]


def _tokenize_split(
    split: datasets.Dataset, encode: Encoder, *, name: str, num_proc: int | None, folder: Path, key: str
) -> datasets.Dataset:
    """``split`` tokenized: from the cache when a process already did it, else now (under the cache's lock)."""
    cached = bool(split.cache_files)  # backed by Arrow files: a stable fingerprint, worth a cache file
    fingerprint = hashlib.sha256(f"{split._fingerprint}|{key}".encode()).hexdigest()[:32]
    target = folder / f"tokens-{fingerprint}.arrow"
    workers = num_proc if num_proc and num_proc > 1 and len(split) >= 2 * num_proc else None
    options: dict[str, Any] = {
        "batched": True,
        "num_proc": workers,
        "remove_columns": split.column_names,
        "desc": f"Tokenizing {name}",
        "new_fingerprint": fingerprint,
    }
    if cached:
        options["cache_file_name"] = str(target)
    else:
        options["keep_in_memory"] = True
    lock = file_lock(target.with_suffix(".lock"), waiting=f"Waiting for another process tokenizing {name}")
    try:
        with lock if cached else contextlib.nullcontext(), _quiet_length_warning():
            return split.map(encode, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"could not tokenize the {name} split: {exc}") from None


def _looks_like_t5_without_prefix(tokenizer: Any) -> bool:
    name = str(getattr(tokenizer, "name_or_path", "")).lower()
    return "t5" in name and "flan" not in name and "builtin" not in name


class _quiet_length_warning:
    """Silence 'Token indices sequence length is longer than …' from the untruncated statistics pass."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("transformers.tokenization_utils_base")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
