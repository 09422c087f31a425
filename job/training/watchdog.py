"""Sound or stop: a run whose weights become NaN/inf stops at once with one line (exit 2), nothing marked complete.

``lr`` too large, an overflow in fp32 or a poisoned batch make the weights non-finite, and then every later
step too; the Trainer's NaN filter (``logging_nan_inf_filter``) even hides it from the logged loss, so such a
run used to end ``completed`` with a model of NaNs. :class:`NonFiniteWatch` checks the trainable weights after
every optimizer step, before that step's evaluation or checkpoint (``on_step_end`` comes first), so no
non-finite checkpoint is ever marked complete. The check is one norm per parameter tensor (fused per device and
dtype, as gradient clipping does) and one host sync per step; under fp16 a skipped step (inf gradients caught by
the loss scaler) leaves the weights finite and is not a divergence.

A diverged run is not retryable as it is (the same lr diverges again), so it is a :class:`Diverged` user error,
exit code 2. Checkpoints saved before the divergence stay complete: rerun with a lower ``lr`` to resume from
the last one, or ``--resume never`` to start over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from job.errors import UserError
from job.training.collectives import any_rank

MAX_STEPS = 10_000_000  # plausibility bound on optimizer steps: more is a typo (epochs or max_samples)


class Diverged(UserError):
    """Training produced non-finite weights (exit code 2: the same parameters would diverge again)."""


def check_schedule(*, steps_per_epoch: int, epochs: float) -> None:
    """Refuse a schedule of implausibly many optimizer steps before any is run."""
    total = math.ceil(steps_per_epoch * epochs)
    if total > MAX_STEPS:
        raise UserError(
            f"epochs={epochs:g} × {steps_per_epoch} steps per epoch = {total:,} optimizer steps, more than "
            f"{MAX_STEPS:,}: that is almost certainly a mistake; lower epochs (or use max_samples)"
        )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite (one fused norm per device/dtype group, one sync)."""
    groups: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for tensor in tensors:
        if tensor.numel():
            groups.setdefault((tensor.device, tensor.dtype), []).append(tensor.detach())
    flags = [torch.isfinite(torch.stack(torch._foreach_norm(group))).all() for group in groups.values()]
    return bool(torch.stack([f.cpu() for f in flags]).all()) if flags else True


class NonFiniteWatch(TrainerCallback):
    """Stops training with :class:`Diverged` at the first optimizer step that leaves a non-finite weight."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        model = kw.get("model")
        trainable = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        # ZeRO-3 keeps each rank's shard in ds_tensor (the parameter itself is an empty placeholder)
        self.tensors = [getattr(p, "ds_tensor", p) for p in trainable]

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if any_rank(not all_finite(self.tensors), args.device):
            raise Diverged(divergence_message(state, lr=args.learning_rate, max_grad_norm=args.max_grad_norm))


def divergence_message(state: TrainerState, *, lr: float, max_grad_norm: float) -> str:
    logged = [e for e in state.log_history if "loss" in e]
    last = f" (last logged loss {logged[-1]['loss']:.4g} at step {logged[-1].get('step')})" if logged else ""
    clip = "" if max_grad_norm > 0 else ", set max_grad_norm > 0"
    return (
        f"training diverged at step {state.global_step}/{state.max_steps}: the weights became non-finite (NaN or "
        f"inf){last}; nothing was marked complete. Lower lr (it is {lr:g}){clip}, or check mixed_precision and "
        "the data; a rerun resumes from the last complete checkpoint (--resume never starts over)"
    )


class LeaseGuard(TrainerCallback):
    """Stops training (job.lease.LeaseLost) once another job took this output's lease over.

    Every step looks at what the heartbeat last saw; a step that is about to save or evaluate (the Trainer has
    decided by now) reads the lease first, so a holder that was frozen past its lease writes no checkpoint over
    the new holder's. It runs before OnCheckpoint, which marks checkpoints complete.
    """

    def __init__(self, check: Callable[..., None]) -> None:
        self.check = check

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.check(verify=control.should_save or control.should_evaluate)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.check(verify=True)
