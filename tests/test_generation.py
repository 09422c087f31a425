"""Generation settings: what a run evaluates with is what it saves, and what predict/evaluate generate with."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoModelForSeq2SeqLM, GenerationConfig

from job import generation

OURS = {"max_new_tokens": 12, "num_beams": 4, "length_penalty": 1.5, "no_repeat_ngram_size": 3}


def _model(**config: Any) -> SimpleNamespace:
    return SimpleNamespace(generation_config=GenerationConfig(**config))


# the base model's generation config, the settings put in → the settings in force (generation.summary)
WITH_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "ours_win_over_a_summarizers_config": (
        {"max_length": 142, "num_beams": 4, "length_penalty": 2.0, "no_repeat_ngram_size": 3, "early_stopping": True},
        {"max_new_tokens": 64, "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
        {"max_new_tokens": 64, "num_beams": 1, "no_repeat_ngram_size": 0},  # beam-only flags unset, max_length gone
    ),
    "beams_keep_the_length_penalty": ({}, OURS, OURS),
    "none_values_change_nothing": (
        {"max_length": 50, "num_beams": 2},
        {"max_new_tokens": None, "num_beams": None},
        {"max_length": 50, "num_beams": 2},
    ),
}


@pytest.mark.parametrize("case", list(WITH_SETTINGS))
def test_settings_replace_the_base_models(case: str, tmp_path: Path) -> None:
    base, settings, expected = WITH_SETTINGS[case]
    model = _model(**base)
    config = generation.apply(model, settings)
    assert generation.summary(config) == expected
    config.save_pretrained(tmp_path)  # transformers refuses to save an inconsistent config (e.g. beam-only flags)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert ("max_length" in saved) == ("max_length" in expected)


def test_the_trainers_in_place_defaults_are_undone() -> None:
    model = _model(max_new_tokens=8)
    with generation.kept_generation_config(model):
        config = model.generation_config  # what Seq2SeqTrainer.prediction_step does on every batch
        config.update(**config._get_default_generation_params(), defaults_only=True)
        assert model.generation_config.max_length == 20
    assert model.generation_config.max_length is None and model.generation_config.max_new_tokens == 8


# the folder's generation_config.json, its training_params.json, flags → the settings in force
FOR_INFERENCE: dict[str, tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "our_folder": (
        {"max_new_tokens": 12, "num_beams": 4},
        {"num_beams": 1},
        {},
        {"max_new_tokens": 12, "num_beams": 4},
    ),
    "flags_win": (
        {"max_new_tokens": 12, "num_beams": 4},
        {},
        {"num_beams": 2, "no_repeat_ngram_size": 2, "max_new_tokens": None},
        {"max_new_tokens": 12, "num_beams": 2, "no_repeat_ngram_size": 2},
    ),
    "an_older_run_saved_max_length_20": (  # the Trainer's default leaked into the file; its params say better
        {"max_length": 20},
        {"generation_max_length": 32, "num_beams": 3},
        {},
        {"max_new_tokens": 32, "num_beams": 3},
    ),
    "a_foreign_folder_with_its_own_length": (
        {"max_length": 142, "num_beams": 4},
        {},
        {},
        {"max_length": 142, "num_beams": 4},
    ),
    "a_foreign_folder_without_any_length": (None, {}, {}, {"max_new_tokens": generation.DEFAULT_MAX_NEW_TOKENS}),
}


@pytest.mark.parametrize("case", list(FOR_INFERENCE))
def test_predict_and_evaluate_generate_as_the_folder_says(case: str, tmp_path: Path) -> None:
    saved, trained, flags, expected = FOR_INFERENCE[case]
    if saved is not None:
        GenerationConfig(**saved).save_pretrained(tmp_path)
    model = _model()
    assert generation.for_inference(model, tmp_path, overrides=flags, trained=trained) == expected


def test_an_adapter_folder_and_a_peft_model(tiny_t5_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir),
        LoraConfig(r=2, target_modules=["q"], task_type="SEQ_2_SEQ_LM"),
    )
    generation.apply(model, OURS)
    assert generation.summary(model.get_base_model().generation_config) == OURS
    generation.save(model, tmp_path)  # next to the adapter, which save_pretrained leaves without one
    assert {k: json.loads((tmp_path / "generation_config.json").read_text())[k] for k in OURS} == OURS
