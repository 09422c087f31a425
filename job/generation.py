"""Generation settings: the model is saved generating exactly the way it was evaluated.

The evaluation's settings (``generation_max_length`` → ``max_new_tokens``, ``num_beams``, ``length_penalty``,
``no_repeat_ngram_size``) go into the model's ``generation_config`` before training, so evaluation, every
checkpoint, the final ``generation_config.json`` (also written next to a LoRA adapter) and ``predict`` /
``evaluate`` all use them. Lengths are counted in new tokens only: ``max_length`` is unset, so ``generate``
never warns that both were given. Without beams, the beam-only flags a base model may carry (``early_stopping``,
``length_penalty``) are unset, which transformers requires to save the config.

transformers' ``Seq2SeqTrainer.prediction_step`` writes every default (``max_length: 20`` among them) into the
model's config on each batch; :func:`kept_generation_config` undoes that (used by
:class:`job.training.trainer.JobTrainer`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from job.params import Seq2SeqParams

log = logging.getLogger(__name__)

SETTINGS = ("max_new_tokens", "num_beams", "length_penalty", "no_repeat_ngram_size")
_BEAM_ONLY = ("early_stopping", "length_penalty")
CONFIG_FILE = "generation_config.json"  # transformers' name; written next to the model (and a LoRA adapter)
DEFAULT_MAX_NEW_TOKENS = 128  # for a folder whose config sets no length at all (transformers would stop at 20)


def generation_settings(params: Seq2SeqParams) -> dict[str, Any]:
    """The generation settings of a training run, as ``generate`` keyword arguments."""
    return {
        "max_new_tokens": params.resolved_generation_max_length,
        "num_beams": params.num_beams,
        "length_penalty": params.length_penalty,
        "no_repeat_ngram_size": params.no_repeat_ngram_size,
    }


def with_settings(config: Any, settings: Mapping[str, Any]) -> Any:
    """A copy of the GenerationConfig ``config`` with ``settings`` (None values are left as they are)."""
    new = copy.deepcopy(config)
    new.update(**{key: value for key, value in settings.items() if value is not None})
    if settings.get("max_new_tokens") is not None:
        new.max_length = None  # the length is max_new_tokens; both set makes generate() warn on every call
    if (new.num_beams or 1) == 1:
        for flag in _BEAM_ONLY:
            setattr(new, flag, None)
    new._from_model_config = False  # ours now: generate() must not rebuild it from the model config
    return new


def summary(config: Any) -> dict[str, Any]:
    """The settings of ``config`` that decide what is generated (for the model card and metrics.json)."""
    values = {key: getattr(config, key, None) for key in SETTINGS}
    if values["max_new_tokens"] is None and config.max_length is not None:
        values["max_length"] = config.max_length
    return {key: value for key, value in values.items() if value is not None}


def underlying(model: Any) -> Any:
    """The transformers model inside a peft wrapper (the one whose generation_config generate() reads)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def apply(model: Any, settings: Mapping[str, Any]) -> Any:
    """Put ``settings`` into the model's generation config; returns the new config."""
    target = underlying(model)
    target.generation_config = with_settings(target.generation_config, settings)
    return target.generation_config


@contextmanager
def kept_generation_config(model: Any) -> Iterator[None]:
    """Restore the model's generation config as it was before the block (the Trainer changes it in place)."""
    target = underlying(model)
    kept = copy.deepcopy(target.generation_config)
    try:
        yield
    finally:
        target.generation_config = kept


def save(model: Any, folder: Path) -> None:
    """Write the model's generation config into ``folder`` (a full model's save does it too; an adapter's not)."""
    underlying(model).generation_config.save_pretrained(str(folder))


def for_inference(
    model: Any, model_dir: Path, *, overrides: Mapping[str, Any], trained: Mapping[str, Any]
) -> dict[str, Any]:
    """Set up the loaded ``model`` to generate as its folder says, with ``overrides`` (flags) on top.

    The folder's ``generation_config.json`` wins over the base model's (it holds a LoRA run's settings too). A folder
    whose config has no ``max_new_tokens`` (written before the job saved its settings) takes them from its
    training_params.json (``trained``); a config that sets no length at all gets :data:`DEFAULT_MAX_NEW_TOKENS`
    instead of transformers' 20 tokens. Returns :func:`summary` of the settings in force.
    """
    from transformers import GenerationConfig

    target = underlying(model)
    if (model_dir / CONFIG_FILE).is_file():
        target.generation_config = GenerationConfig.from_pretrained(str(model_dir))
    config = target.generation_config
    settings: dict[str, Any] = {}
    if config.max_new_tokens is None:
        length = trained.get("generation_max_length") or trained.get("max_target_length")
        if length or config.max_length is None:
            settings = {"max_new_tokens": length or DEFAULT_MAX_NEW_TOKENS, "num_beams": trained.get("num_beams")}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return summary(apply(model, settings))
