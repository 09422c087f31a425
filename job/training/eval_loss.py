"""The evaluation loss as one token mean over the whole split, whatever the evaluation batches were.

transformers' evaluation loop reports the mean of each batch's own token mean, weighted by rows: a batch of a
few long targets counts as much per row as one of many short ones, so the figure moved with the batch size
(which the job picks by itself, :mod:`job.training.eval_batching`) and with the rows' order. Measured in the
evaluation tests (24 test rows, the same model): 0.446 as one token-sized batch, 0.394 in batches of 16 and 8.
:class:`TokenLoss` adds up each batch's loss × its target tokens and the tokens, over all processes, and
:class:`TokenMeanEvalLoss` (a Trainer mixin: the job's :class:`~job.training.trainer.JobTrainer`, and the plain
side of ``bench/train_throughput.py`` so both are measured alike) reports their ratio as ``eval_loss`` /
``test_loss``: the cross-entropy per target token, the same for any batching, device count or order.
"""

from __future__ import annotations

from typing import Any

import torch


class TokenLoss:
    """Running sums ``[Σ batch loss × target tokens, Σ target tokens]`` for one evaluation, on the loss's device."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None

    def add(self, loss: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        """One batch: its loss (a mean over its target tokens) and its labels (-100 where there is no target).

        A non-finite batch counts for nothing, as under the Trainer's ``logging_nan_inf_filter``.
        """
        if loss is None or labels is None:
            return
        loss = loss.detach().to(torch.float64).reshape(())
        tokens = labels.ne(-100).sum().to(loss.device, torch.float64)
        kept = torch.isfinite(loss)
        part = torch.stack([torch.where(kept, loss * tokens, 0.0), torch.where(kept, tokens, 0.0)])
        self.sums = part if self.sums is None else self.sums + part

    def mean(self, accelerator: Any) -> float | None:
        """Σ loss × tokens / Σ tokens over every process; None when no batch had a finite loss and targets."""
        device = accelerator.device
        sums = torch.zeros(2, dtype=torch.float64, device=device) if self.sums is None else self.sums.to(device)
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums, reduction="sum")
        return float(sums[0] / sums[1]) if sums[1] > 0 else None


class TokenMeanEvalLoss:
    """Trainer mixin (before the Trainer in the bases): ``<prefix>_loss`` is the token mean over the split."""

    _token_loss: TokenLoss | None = None  # set while an evaluation loop runs

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        result = super().prediction_step(model, inputs, *args, **kwargs)  # type: ignore[misc]
        if self._token_loss is not None:
            self._token_loss.add(result[0], inputs.get("labels"))
        return result

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        self._token_loss = TokenLoss()
        try:
            output = super().evaluation_loop(*args, **kwargs)  # type: ignore[misc]
            mean = self._token_loss.mean(self.accelerator)  # type: ignore[attr-defined]
        finally:
            self._token_loss = None
        if f"{prefix}_loss" in output.metrics and mean is not None:
            output.metrics[f"{prefix}_loss"] = mean
        return output
