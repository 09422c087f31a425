"""Token-length statistics of a tokenized split, from histograms: memory does not grow with the rows.

The full (untruncated) lengths are two int columns of the tokenized split's Arrow table; they are read a chunk
at a time into histograms (``counts[n]`` = rows that are n tokens long), and every figure — mean, percentiles,
max, truncated share, non-padding tokens — comes from the histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

PERCENTILES = (50, 90, 95, 99)
CHUNK_ROWS = 100_000  # rows read at a time


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
        """The statistics of ``lengths`` (one length per row)."""
        return cls.of_histogram(np.bincount(np.asarray(lengths, dtype=np.int64)), max_length)

    @classmethod
    def of_histogram(cls, counts: np.ndarray, max_length: int) -> LengthStats:
        """The statistics of the lengths whose histogram is ``counts``.

        Percentiles interpolate linearly between order statistics, exactly as ``np.percentile`` does.
        """
        rows = int(counts.sum())
        if rows == 0:
            return cls(0.0, 0, 0, 0, 0, 0, max_length, 0.0)
        ends = np.cumsum(counts)  # ends[n]: rows at most n tokens long

        def order_statistic(k: int) -> int:  # the k-th shortest length (0-based)
            return int(np.searchsorted(ends, k, side="right"))

        def percentile(q: float) -> float:
            position = q / 100 * (rows - 1)
            low = int(np.floor(position))
            a, b = order_statistic(low), order_statistic(min(low + 1, rows - 1))
            return round(float(a + (b - a) * (position - low)), 2)

        p50, p90, p95, p99 = (percentile(q) for q in PERCENTILES)
        mean = round(float((np.arange(len(counts)) * counts).sum() / rows), 2)
        truncated = float(counts[max_length + 1 :].sum() / rows)
        longest = int(np.flatnonzero(counts).max())
        return cls(mean, p50, p90, p95, p99, longest, max_length, round(truncated, 4))


@dataclass
class SplitTokens:
    rows: int
    inputs: LengthStats
    targets: LengthStats
    non_padding_tokens: int  # input + label tokens the model sees per epoch, after truncation


def histograms(dataset: datasets.Dataset, columns: list[str]) -> dict[str, np.ndarray]:
    """One length histogram per int column of ``dataset``, read from Arrow ``CHUNK_ROWS`` rows at a time."""
    counts = {name: np.zeros(1, dtype=np.int64) for name in columns}
    for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=CHUNK_ROWS):
        for name in columns:
            chunk = np.bincount(table[name].to_numpy())
            if len(chunk) > len(counts[name]):
                counts[name] = np.pad(counts[name], (0, len(chunk) - len(counts[name])))
            counts[name][: len(chunk)] += chunk
    return counts


def split_tokens(
    dataset: datasets.Dataset, *, inputs: str, targets: str, max_seq_length: int, max_target_length: int
) -> SplitTokens:
    """The statistics of a split whose full input/target lengths are the columns ``inputs`` and ``targets``."""
    counts = histograms(dataset, [inputs, targets])
    seen = 0
    for name, limit in ((inputs, max_seq_length), (targets, max_target_length)):
        seen += int((np.minimum(np.arange(len(counts[name])), limit) * counts[name]).sum())
    return SplitTokens(
        rows=len(dataset),
        inputs=LengthStats.of_histogram(counts[inputs], max_seq_length),
        targets=LengthStats.of_histogram(counts[targets], max_target_length),
        non_padding_tokens=seen,
    )
