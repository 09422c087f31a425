"""Checks between parameters: combinations that cannot work, each reported as one line (pure: no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from job import metric_sets
from job.storage.uris import uri_problem

if TYPE_CHECKING:
    from job.params import Seq2SeqParams


def cross_field_problems(p: Seq2SeqParams) -> list[str]:
    """Every problem between the fields of ``p``, one line each (none: [])."""
    problems: list[str] = []
    if p.push_to_hub and not p.username:
        problems.append("push_to_hub needs username (the Hub user or organisation to push to)")
    if bool(p.src_lang) != bool(p.tgt_lang):
        problems.append("src_lang and tgt_lang go together: give both or neither")
    if p.eval_strategy == "steps" and not p.eval_steps:
        problems.append("eval_strategy=steps needs eval_steps")
    if p.resolved_save_strategy == "steps" and not (p.save_steps or p.eval_steps):
        problems.append("save_strategy=steps needs save_steps")
    if p.evaluates and p.load_best_model_at_end and p.save_strategy not in (None, p.eval_strategy):
        problems.append(
            f"load_best_model_at_end needs save_strategy ({p.save_strategy}) to equal eval_strategy "
            f"({p.eval_strategy}); set one to match or --no-load-best-model-at-end"
        )
    if p.save_steps and p.resolved_save_strategy != "steps":  # resilience: save_steps is never ignored
        problems.append(
            f"save_steps={p.save_steps} needs save_strategy=steps (it is "
            f"{p.resolved_save_strategy}); add --save-strategy steps"
        )
    if (
        p.evaluates
        and p.load_best_model_at_end
        and p.eval_strategy == "steps"
        and p.eval_steps
        and p.save_steps
        and p.save_steps % p.eval_steps
    ):
        problems.append(
            f"load_best_model_at_end needs save_steps ({p.save_steps}) to be a multiple of eval_steps ({p.eval_steps})"
        )
    if p.resume not in ("auto", "never") and (problem := uri_problem(p.resume, "resume")):
        problems.append(problem)
    if p.deepspeed and p.quantized:
        problems.append(
            f"deepspeed does not train {p.quantization}-quantized (bitsandbytes) models: set "
            "quantization=none (LoRA on a ZeRO-sharded model) or drop deepspeed (quantized LoRA on one GPU "
            "per process)"
        )
    for name in ("data_path", "model", "output_uri"):  # s3:// and gs:// URIs (job.storage)
        if problem := uri_problem(getattr(p, name), name):
            problems.append(problem)
    if p.warmup_steps is not None and "warmup_ratio" in p.model_fields_set:
        problems.append("give warmup_steps or warmup_ratio, not both")
    if p.s3_endpoint_url and not p.s3_endpoint_url.startswith(("http://", "https://")):
        problems.append(f"s3_endpoint_url={p.s3_endpoint_url} must start with http:// or https://")
    problems += _evaluation_problems(p)
    return problems


def _evaluation_problems(p: Seq2SeqParams) -> list[str]:
    problems = []
    if problem := metric_sets.best_metric_problem(p.metric_for_best_model, p.resolved_metrics):
        problems.append(f"metric_for_best_model={p.metric_for_best_model}: {problem}")
    if p.length_penalty != 1.0 and p.num_beams == 1:
        problems.append(f"length_penalty={p.length_penalty} applies only to beam search: set num_beams > 1")
    return problems


# --- single fields (pydantic AfterValidators: a ValueError becomes "name=value: message") ---------------------
def best_metric(value: str) -> str:
    name = value.removeprefix("eval_")
    if name not in (*metric_sets.best_metric_names(), metric_sets.GEN_LEN):
        raise ValueError(f"must be one of {', '.join(metric_sets.best_metric_names())}")
    return name


def metric_list(value: str | None) -> str | None:
    names = [name.strip() for name in value.split(",") if name.strip()] if value else []
    return ",".join(metric_sets.check_metrics(names)) if names else None


def task(value: str) -> str:
    if value != "auto" and value not in metric_sets.TASK_METRICS:
        raise ValueError(f"must be auto or one of {', '.join(metric_sets.TASK_METRICS)}")
    return value


def resume_spec(value: str) -> str:
    spec = value.strip()
    if not spec:
        raise ValueError("give auto, never, or the path/URI of a checkpoint")
    return spec.lower() if spec.lower() in ("auto", "never") else spec


def module_list(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        raise ValueError("give all-linear or a comma-separated list of module names")
    return ",".join(parts)
