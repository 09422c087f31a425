"""Parameter names in messages: did-you-mean hints, unknown names, and pydantic's report as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from job.errors import UserError

SECRET_FIELDS = ("token",)
REDACTED = "***"

# Names users bring from transformers' examples (run_summarization.py, run_translation.py, TrainingArguments) and
# AutoTrain, to point them at ours; "name=value" where the value is implied (--fp16 → --mixed-precision fp16).
_HINTS = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "max_steps": "epochs",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation",
    "model_name_or_path": "model",
    "output_dir": "project_name",
    "overwrite_output_dir": "overwrite",
    "resume_from_checkpoint": "resume",
    "max_source_length": "max_seq_length",
    "val_max_target_length": "generation_max_length",
    "generation_num_beams": "num_beams",
    "max_train_samples": "max_samples",
    "max_eval_samples": "max_samples",
    "validation_split": "valid_split",
    "validation_file": "valid_split",
    "evaluation_strategy": "eval_strategy",
    "lr_scheduler_type": "scheduler",
    "warmup_steps": "warmup_ratio",
    "optim": "optimizer",
    "train_file": "data_path",
    "dataset_name": "data_path",
    "dataset_config_name": "data_path",
    "summary_column": "target_column",
    "fp16": "mixed_precision=fp16",
    "bf16": "mixed_precision=bf16",
    "report_to": "log",
    "logging_dir": "log",
    "hub_token": "token",
    "hub_model_id": "username",
    "hub_private_repo": "hub_private",
}


def reject_unknown(names: Iterable[Any], what: str, *, valid: list[str], prefix: str = "") -> None:
    """A UserError for the first name not in ``valid``, with what the user probably meant."""
    for name in names:
        key = str(name).replace("-", "_")
        if key not in valid:
            hint = hint_for(key, valid)
            key, sep, value = (hint or "").partition("=")
            shown_hint = f"{prefix}{key.upper()}{sep}{value}" if prefix else hint
            suggestion = f"did you mean {shown_hint}? " if hint else ""
            shown = f"{prefix}{str(name).upper()}" if prefix else str(name)
            raise UserError(f"unknown {what} {shown}: {suggestion}valid names: {', '.join(valid)}")


def hint_for(name: str, valid: list[str]) -> str | None:
    """The parameter a user probably meant by ``name`` (a transformers/AutoTrain name, or a near miss)."""
    key = name.replace("-", "_")
    if key in _HINTS:
        return _HINTS[key]
    close = difflib.get_close_matches(key, valid, n=1)
    return close[0] if close else None


def format_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's multi-line report into one line: 'invalid parameters: lr=-1: must be > 0; …'."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"{loc} is required")
        elif err["type"] == "literal_error":
            allowed = msg.removeprefix("Input should be ")
            parts.append(f"{loc}={err['input']!r} is not allowed; choose {allowed}")
        elif loc and "input" in err and not isinstance(err["input"], dict):
            shown = REDACTED if loc in SECRET_FIELDS else repr(err["input"])
            parts.append(f"{loc}={shown}: {msg[:1].lower()}{msg[1:]}")
        else:
            parts.append(msg)
    return "invalid parameters: " + "; ".join(parts)
