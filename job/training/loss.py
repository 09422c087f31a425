"""The loss every run trains on: cross-entropy over the target tokens of the whole optimizer step."""

from __future__ import annotations

from typing import Any


def token_mean_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None, *, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy summed over the target tokens and divided by the target tokens of the whole optimizer step.

    The Trainer's ``compute_loss_func``. transformers 5 multiplies the loss by the number of processes and skips
    the division by gradient-accumulation steps for any model whose ``forward`` takes ``**kwargs``, assuming
    the model divides by ``num_items_in_batch`` (the step's token count over all processes and micro-batches).
    T5, BART, mBART and Marian take ``**kwargs`` but return a per-batch mean, so their loss and gradients came
    out N× too large with N processes or N accumulation steps. Dividing by ``num_items_in_batch`` here makes
    the loss exact: every target token weighs the same, however the step is split over processes.
    ``label_smoothing`` is the Trainer's ``label_smoothing_factor`` (whose own smoother a ``compute_loss_func``
    replaces): the same mix of the target's log-likelihood and the mean over the vocabulary.
    """
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if num_items_in_batch is None:  # e.g. a caller outside the Trainer's training step
        return total / labels.ne(-100).sum().clamp(min=1)
    return total / num_items_in_batch
