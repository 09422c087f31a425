"""One optimizer step's rows, drawn at random, run as length-sorted micro-batches: the plain gradient, less padding.

A batch drawn at random is padded to its longest row; on text-like lengths that is ~2.7× the real tokens.
transformers' length-grouped sampler removes the padding by making each step a batch of look-alike rows,
which biases the gradient wherever the kind of example correlates with its length (measured on such a task,
tiny BART: ROUGE-L 31 instead of 92 at epoch 3). Here the step keeps its random rows; they are sorted by
length and cut into consecutive groups, each padded only to its own longest row, and each group's forward and
backward run in turn before the one optimizer step. The loss divides by the step's target-token count
(:func:`job.training.loss.token_mean_loss`), so the groups' gradients add up to the plain batch's gradient.

Where to cut is an exact dynamic programme over the sorted rows (at most a few hundred a step) that minimises
the step's modelled cost: per group, ``overhead_tokens`` (the fixed price of one more forward/backward, in
token-equivalents) plus ``max(rows × padded length, min_tokens)`` (below ``min_tokens`` a GPU is launch-bound
and a smaller group is no cheaper). No group is larger than the batch, so memory never exceeds the plain step's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

INPUT_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids"})  # padded like the input
TARGET_KEYS = frozenset({"labels", "decoder_input_ids", "decoder_attention_mask"})  # padded like the target


@dataclass(frozen=True)
class GroupCost:
    """The cost model the cut points minimise (token-equivalents; see the module docstring)."""

    overhead_tokens: int
    min_tokens: int = 0

    @classmethod
    def for_device(cls, device_type: str) -> GroupCost:
        """Measured on CPU (bench/train_throughput.py); a GPU needs ~4k tokens per group to stay busy."""
        return cls(overhead_tokens=512, min_tokens=4096) if device_type == "cuda" else cls(overhead_tokens=64)


def plan_groups(in_lens: Sequence[int], out_lens: Sequence[int], cost: GroupCost) -> list[list[int]]:
    """Row indices per micro-batch: the rows sorted by (input, target) length, cut where the cost is lowest."""
    n = len(in_lens)
    order = np.lexsort((np.asarray(out_lens), np.asarray(in_lens)))  # by input length, then target length
    a = np.asarray(in_lens, dtype=np.int64)[order]
    b = np.asarray(out_lens, dtype=np.int64)[order]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # best[j]: the cheapest way to run the j shortest rows
        longest_target = np.maximum.accumulate(b[:j][::-1])[::-1]  # max target length of rows i..j-1, per i
        rows = j - np.arange(j)
        padded = rows * (a[j - 1] + longest_target)  # a is sorted: row j-1 has the longest input
        costs = best[:j] + cost.overhead_tokens + np.maximum(padded, cost.min_tokens)
        cut[j] = int(np.argmin(costs))  # first minimum: fewer, larger groups on ties
        best[j] = costs[cut[j]]
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j].tolist())
        j = int(cut[j])
    return groups[::-1]


def split_batch(batch: Mapping[str, Any], cost: GroupCost, *, pad_to_multiple_of: int | None = None) -> list[Any]:
    """The batch as length-sorted micro-batches (one, the batch itself, when splitting would not pay)."""
    mask, labels = batch.get("attention_mask"), batch.get("labels")
    if not (torch.is_tensor(mask) and torch.is_tensor(labels)) or mask.dim() != 2 or mask.shape[0] < 2:
        return [batch]
    in_lens = mask.ne(0).sum(1).tolist()
    out_lens = labels.ne(-100).sum(1).tolist()
    groups = plan_groups(in_lens, out_lens, cost)
    if len(groups) == 1:
        return [batch]
    return [take_rows(batch, rows, pad_to_multiple_of=pad_to_multiple_of) for rows in groups]


def take_rows(batch: Mapping[str, Any], rows: list[int], *, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """``rows`` of the batch, with the padding columns that no kept row needs cut off."""
    size = batch["attention_mask"].shape[0]
    index = torch.as_tensor(rows, device=batch["attention_mask"].device)
    inputs = _span(batch["attention_mask"].index_select(0, index).ne(0), pad_to_multiple_of)
    targets = _span(batch["labels"].index_select(0, index).ne(-100), pad_to_multiple_of)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != size:
            out[key] = value
            continue
        part = value.index_select(0, index.to(value.device))
        if part.dim() >= 2 and key in INPUT_KEYS:
            part = part[:, inputs]
        elif part.dim() >= 2 and key in TARGET_KEYS:
            part = part[:, targets]
        out[key] = part.contiguous()  # a column slice is a strided view; models may .view() it
    return out


def _span(used: torch.Tensor, multiple: int | None) -> slice:
    """The columns from the first to the last one any row uses, widened to a multiple of ``multiple``."""
    columns = used.any(0).nonzero().flatten().tolist()
    width = used.shape[1]
    if not columns:
        return slice(0, width)
    low, high = columns[0], columns[-1] + 1
    if multiple and multiple > 1:
        wanted = min(width, -(-(high - low) // multiple) * multiple)
        high = min(width, low + wanted)
        low = high - wanted
    return slice(low, high)


@dataclass
class PaddingCount:
    """Real and padded token slots the model was fed in training (inputs + targets), for ``train_padding_share``."""

    real: int = 0
    slots: int = 0

    def add(self, batch: Mapping[str, Any]) -> None:
        mask, labels = batch.get("attention_mask"), batch.get("labels")
        if torch.is_tensor(mask) and torch.is_tensor(labels):
            self.real += int(mask.ne(0).sum()) + int(labels.ne(-100).sum())
            self.slots += mask.numel() + labels.numel()

    @property
    def share(self) -> float | None:
        """Share of the slots that were padding (0 = none), or None before any batch."""
        return round(1 - self.real / self.slots, 4) if self.slots else None
