"""``metrics.json``: its whole shape in one place, built by :func:`build_report`.

::

    {
      "status": "running" | "completed",
      "metrics": ["bleu", "chrf", …], "target_language": "de" | null,   what the evaluations compute
      <final figures>            train_loss, train_runtime, train_samples_per_second, train_tokens_per_second,
                                 train_padding_share, global_step, peak_host_memory_mb (…gpu…),
                                 final_model_step and eval_*: the step of the saved model (the best checkpoint's
                                 with load_best_model_at_end) and its evaluation, one of "evaluations" (with
                                 eval_max_samples: its evaluation on every validation row),
                                 test_* with test_split: test_loss, test_bleu…, test_gen_len, test_runtime, …
      "generation": {"max_new_tokens", "num_beams", "length_penalty", "no_repeat_ngram_size"}
      "objective": {"name", "value", "goal"}   the tuning objective of the final model (with evaluation)
      "evaluations": [ {"step", "epoch", "eval_loss", "eval_rougeL", …}, … ]   every evaluation, in order
      "resumed_from_step": 0,    train_* figures cover only the steps after it
      "data": {"splits": …, "tokens": …},   rows read/dropped/kept and token-length statistics per split (test too)
      "effective_batch_size": 16,
      "distributed": {"world_size", "nnodes", "effective_batch_size", "strategy", ["deepspeed"]},
      "versions": {"python", "torch", "transformers", …},
      "hardware": {"platform", "cpu_count", "world_size", "device", ["gpus"]}
    }
"""

from __future__ import annotations

import os
import platform as host
import resource
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PACKAGES = ("torch", "transformers", "datasets", "peft", "accelerate", "tokenizers", "bitsandbytes", "deepspeed")


@dataclass
class RunFacts:
    """What a run knows about itself besides its scores; filled in as the run learns it."""

    resumed_from_step: int = 0
    data: dict[str, Any] | None = None
    effective_batch_size: int | None = None
    distributed: dict[str, Any] | None = None
    metrics: list[str] | None = None
    target_language: str | None = None
    generation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"resumed_from_step": self.resumed_from_step}
        for name in ("data", "effective_batch_size", "distributed", "generation"):
            if getattr(self, name) is not None:
                facts[name] = getattr(self, name)
        return facts


@dataclass(frozen=True)
class Machine:
    """Versions and hardware, for metrics.json."""

    world_size: int = 1
    device: str = "cpu"
    gpus: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        versions = {"python": sys.version.split()[0]}
        for name in PACKAGES:
            try:
                versions[name] = version(name)
            except PackageNotFoundError:
                continue
        hardware: dict[str, Any] = {
            "platform": host.platform(),
            "cpu_count": os.cpu_count(),
            "world_size": self.world_size,
            "device": self.device,
        }
        if self.gpus:
            hardware["gpus"] = list(self.gpus)
        return {"versions": versions, "hardware": hardware}


def build_report(
    *, status: str, final: dict[str, Any], evaluations: list[dict[str, Any]], facts: RunFacts, machine: Machine
) -> dict[str, Any]:
    """The content of metrics.json (see the module doc for its shape)."""
    scored = {"metrics": facts.metrics, "target_language": facts.target_language} if facts.metrics else {}
    return {
        "status": status,
        **scored,
        **final,
        "evaluations": list(evaluations),
        **facts.as_dict(),
        **machine.as_dict(),
    }


def final_evaluation(evaluations: list[dict[str, Any]], *, step: int) -> dict[str, Any]:
    """``final_model_step`` and the ``eval_*`` values of the evaluation of the model saved at ``step``.

    The Trainer evaluated that model already (the best checkpoint, or the last step): it is not evaluated again.
    None at that step (no validation split): {}.
    """
    entry = next((e for e in reversed(evaluations) if e.get("step") == step), None)
    if entry is None:
        return {}
    return {"final_model_step": step, **{k: v for k, v in entry.items() if k.startswith("eval_")}}


def evaluation_report(
    *,
    model_dir: str,
    data_path: str,
    split: dict[str, Any],
    scores: dict[str, Any],
    generation: dict[str, Any],
    settings: dict[str, Any],
    machine: Machine,
) -> dict[str, Any]:
    """What ``seq2seq-job evaluate`` prints and writes (evaluation.json): one split scored by one model folder.

    ``scores``: loss, bleu, rougeL… (the metrics' names), gen_len, runtime, samples_per_second; ``split``: the
    split's rows read/dropped/kept; ``settings``: columns, source_prefix, lengths, metrics (the names computed),
    target_language.
    """
    return {
        "model_dir": model_dir,
        "data_path": data_path,
        "split": split,
        "scores": scores,
        "generation": generation,
        **settings,
        **machine.as_dict(),
    }


def distributed_facts(
    *, world_size: int, nnodes: int, effective_batch_size: int, deepspeed: str | None, zero_stage: int | None
) -> dict[str, Any]:
    """The distributed setup of this run: processes, nodes, the batch per optimizer step, DDP or DeepSpeed."""
    info: dict[str, Any] = {
        "world_size": world_size,
        "nnodes": nnodes,
        "effective_batch_size": effective_batch_size,
        "strategy": "deepspeed" if deepspeed else "ddp" if world_size > 1 else "single process",
    }
    if deepspeed:
        info["deepspeed"] = {"config": deepspeed, "zero_stage": zero_stage}
    return info


def final_figures(
    train_metrics: dict[str, Any],
    *,
    global_step: int,
    epochs_run: float,
    resumed_from_step: int,
    train_tokens_per_epoch: int,
) -> dict[str, Any]:
    """The final training figures: the Trainer's train_* metrics, tokens/s and the global step.

    Every row is seen once per epoch, so tokens processed = tokens per epoch × epochs run by this process (a
    resumed run counts only the steps after its checkpoint).
    """
    out = dict(train_metrics)
    epochs = epochs_run * (1 - resumed_from_step / max(global_step, 1))
    runtime = out.get("train_runtime") or 0.0
    if runtime > 0:
        out["train_tokens_per_second"] = round(train_tokens_per_epoch * epochs / runtime, 2)
    out["global_step"] = global_step
    return out


def peak_memory(*, cuda: bool) -> dict[str, float]:
    """Peak resident host memory of this process, and peak allocated GPU memory on CUDA."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"peak_host_memory_mb": round(rss_mb, 1)}
    if cuda:
        import torch

        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
