"""Prefix, tokenize and truncate the splits; measure token lengths and how much truncation cuts.

Tokenization runs through ``datasets.map`` (batched, optional worker processes, cached on disk by fingerprint).
Nothing is padded here: :func:`job.training.build.build_collator` pads each batch to its own longest row, and labels
are padded with -100 so padding never counts in the loss.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import numpy as np

from job.data import SOURCE, TARGET, DataBundle
from job.errors import UserError

log = logging.getLogger(__name__)

LENGTH = "length"  # input tokens after truncation; read by the Trainer's length-grouped sampler
_FULL_IN, _FULL_OUT = "_input_tokens", "_target_tokens"  # lengths before truncation, for the statistics
PERCENTILES = (50, 90, 95, 99)


@dataclass
class LengthStats:
    """Token-length distribution of one column of one split, before truncation."""

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: int
    max_length: int  # the truncation limit in force
    truncated_share: float  # share of rows longer than max_length

    @classmethod
    def of(cls, lengths: np.ndarray, max_length: int) -> LengthStats:
        if lengths.size == 0:
            return cls(0.0, 0, 0, 0, 0, 0, max_length, 0.0)
        p50, p90, p95, p99 = (round(float(np.percentile(lengths, q)), 2) for q in PERCENTILES)
        truncated = float(np.mean(lengths > max_length))
        mean = round(float(lengths.mean()), 2)
        return cls(mean, p50, p90, p95, p99, int(lengths.max()), max_length, round(truncated, 4))


@dataclass
class SplitTokens:
    rows: int
    inputs: LengthStats
    targets: LengthStats
    non_padding_tokens: int  # input + label tokens the model sees per epoch, after truncation


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


def tokenize_data(
    data: DataBundle,
    tokenizer: Any,
    *,
    source_prefix: str = "",
    max_seq_length: int,
    max_target_length: int,
    num_proc: int | None = None,
    sort_valid_by_length: bool = True,
) -> TokenizedData:
    """Tokenize train (and validation and test) and collect length statistics."""
    if not source_prefix and _looks_like_t5_without_prefix(tokenizer):
        log.info("T5-style model and no source_prefix: consider e.g. source_prefix='summarize: '")

    def encode(batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        inputs = [source_prefix + text for text in batch[SOURCE]]
        # Untruncated lengths only feed the statistics; the model sees the truncated ids below.
        full_in = tokenizer(inputs, truncation=False)["input_ids"]
        full_out = tokenizer(text_target=batch[TARGET], truncation=False)["input_ids"]
        enc = tokenizer(inputs, max_length=max_seq_length, truncation=True)
        labels = tokenizer(text_target=batch[TARGET], max_length=max_target_length, truncation=True)
        enc["labels"] = labels["input_ids"]
        enc[LENGTH] = [len(ids) for ids in enc["input_ids"]]
        enc[_FULL_IN] = [len(ids) for ids in full_in]
        enc[_FULL_OUT] = [len(ids) for ids in full_out]
        return enc

    splits: dict[str, datasets.Dataset] = {}
    stats: dict[str, SplitTokens] = {}
    references: list[str] | None = None
    for name, split in (("train", data.train), ("validation", data.valid), ("test", data.test)):
        if split is None:
            continue
        try:
            with _quiet_length_warning():
                tokenized = split.map(
                    encode,
                    batched=True,
                    num_proc=num_proc,
                    remove_columns=split.column_names,
                    desc=f"Tokenizing {name}",
                )
        except (TypeError, ValueError) as exc:
            raise UserError(f"could not tokenize the {name} split: {exc}") from None
        stats[name] = _measure(tokenized, max_seq_length, max_target_length)
        tokenized = tokenized.remove_columns([_FULL_IN, _FULL_OUT])
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


def _measure(tokenized: datasets.Dataset, max_seq_length: int, max_target_length: int) -> SplitTokens:
    full_in = np.asarray(tokenized[_FULL_IN], dtype=np.int64)
    full_out = np.asarray(tokenized[_FULL_OUT], dtype=np.int64)
    seen = np.minimum(full_in, max_seq_length).sum() + np.minimum(full_out, max_target_length).sum()
    return SplitTokens(
        rows=len(tokenized),
        inputs=LengthStats.of(full_in, max_seq_length),
        targets=LengthStats.of(full_out, max_target_length),
        non_padding_tokens=int(seen),
    )


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
