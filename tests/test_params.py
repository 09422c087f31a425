"""Parameter sources, precedence, parsing and every validation error."""

from __future__ import annotations

import json

import pytest

from job.context import read_context
from job.errors import UserError
from job.param_sources import load_params
from job.params import Seq2SeqParams
from job.preflight import check, preflight


def test_defaults_match_the_documented_ones() -> None:
    p = Seq2SeqParams(data_path="d.csv")
    expected = dict(
        model="google/flan-t5-base",
        text_column="text",
        target_column="target",
        train_split="train",
        valid_split=None,
        max_samples=None,
        lr=5e-5,
        epochs=3,
        batch_size=2,
        max_seq_length=128,
        max_target_length=128,
        warmup_ratio=0.1,
        gradient_accumulation=1,
        optimizer=None,  # adamw_torch_fused where torch has the kernel (CUDA, CPU), else adamw_torch
        scheduler="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=42,
        peft=False,
        quantization="int8",
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules="all-linear",
        mixed_precision=None,
        auto_find_batch_size=False,
        logging_steps=-1,
        eval_strategy="epoch",
        early_stopping_patience=5,
        early_stopping_threshold=0.01,
        push_to_hub=False,
        save_total_limit=1,
        log="none",
        source_prefix="",
        num_beams=1,
        src_lang=None,
        tgt_lang=None,
        preprocessing_num_workers=None,
        metric_for_best_model="loss",
        task="auto",
        metrics=None,
        target_language=None,
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        test_split=None,
        microbatch_by_length=True,
        group_by_length=False,
        eval_batch_size=None,
        eval_max_samples=None,
        max_steps=None,
        warmup_steps=None,
        label_smoothing=0.0,
        gradient_checkpointing=None,
        torch_compile=False,
        dataloader_num_workers=None,
    )
    assert {k: getattr(p, k) for k in expected} == expected


def test_precedence_kwargs_over_env_over_json_over_defaults(tmp_path) -> None:
    params_file = tmp_path / "p.json"
    params_file.write_text(json.dumps({"data_path": "from-json.csv", "lr": 0.1, "epochs": 9, "batch_size": 7}))
    env = {"SEQ2SEQ_LR": "0.2", "SEQ2SEQ_EPOCHS": "4"}
    p = load_params({"lr": "0.3"}, env=env, params_file=str(params_file))
    assert (p.lr, p.epochs, p.batch_size, p.data_path, p.seed) == (0.3, 4, 7, "from-json.csv", 42)


def test_params_are_pure_the_process_environment_is_not_read(monkeypatch) -> None:
    monkeypatch.setenv("SEQ2SEQ_LR", "0.2")
    monkeypatch.setenv("SEQ2SEQ_PARAMS", '{"epochs": 9}')
    p = Seq2SeqParams(data_path="x.csv")
    assert (p.lr, p.epochs) == (5e-5, 3)  # only the arguments and the defaults
    ctx, loaded = preflight({"data_path": "x.csv"})  # the entry points read the environment, once
    assert (loaded.lr, loaded.epochs) == (0.2, 9) and ctx.env["SEQ2SEQ_LR"] == "0.2"


def test_params_env_var_holds_a_path_or_inline_json(tmp_path) -> None:
    inline = {"SEQ2SEQ_PARAMS": '{"data_path": "inline.csv", "peft": "true"}'}
    assert load_params(env=inline).data_path == "inline.csv"
    path = tmp_path / "p.json"
    path.write_text('{"data_path": "file.csv"}')
    assert load_params(env={"SEQ2SEQ_PARAMS": str(path)}).data_path == "file.csv"


def test_env_strings_are_parsed_into_types() -> None:
    env = {
        "SEQ2SEQ_DATA_PATH": "x.csv",
        "SEQ2SEQ_EPOCHS": "3",
        "SEQ2SEQ_PEFT": "true",
        "SEQ2SEQ_MAX_SAMPLES": "none",
        "SEQ2SEQ_MIXED_PRECISION": "None",
        "SEQ2SEQ_QUANTIZATION": "none",
        "SEQ2SEQ_TARGET_MODULES": "q, v",
    }
    p = load_params(env=env)
    assert p.epochs == 3 and p.peft is True and p.max_samples is None and p.mixed_precision is None
    assert p.quantization == "none" and not p.quantized
    assert p.target_module_list == ["q", "v"]


def test_json_list_of_target_modules() -> None:
    assert Seq2SeqParams(data_path="x", target_modules=["q", "k"]).target_module_list == ["q", "k"]


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"lr": 0}, ["lr=0", "greater than 0"]),
        ({"lr": -1e-3}, ["lr=-0.001"]),
        ({"epochs": 0}, ["epochs=0"]),
        ({"lora_r": 0}, ["lora_r=0"]),
        ({"optimizer": "adam"}, ["optimizer='adam'", "adamw_torch", "adafactor"]),
        ({"scheduler": "cosine2"}, ["scheduler='cosine2'", "cosine"]),
        ({"mixed_precision": "fp8"}, ["mixed_precision='fp8'", "'bf16'"]),
        ({"quantization": "int2"}, ["quantization='int2'", "'int4'", "'none'"]),
        ({"log": "neptune"}, ["log='neptune'", "tensorboard"]),
        ({"metric_for_best_model": "bleu4"}, ["metric_for_best_model='bleu4'", "rougeLsum, bleu, chrf, chrfpp"]),
        ({"task": "summarization", "metric_for_best_model": "bleu"}, ["=bleu: bleu is not computed", "add bleu to"]),
        ({"metric_for_best_model": "gen_len"}, ["gen_len is a length", "choose loss, rouge1"]),
        ({"metrics": "rouge,chrf++"}, ["metrics='rouge,chrf++'", "chrF++ is called chrfpp"]),
        ({"task": "poetry"}, ["task='poetry'", "auto or one of translation, summarization"]),
        ({"length_penalty": 0.8}, ["length_penalty=0.8", "num_beams > 1"]),
        ({"no_repeat_ngram_size": -1}, ["no_repeat_ngram_size=-1"]),
        ({"src_lang": "en_XX"}, ["src_lang and tgt_lang"]),
        ({"push_to_hub": True}, ["push_to_hub needs username"]),
        ({"eval_strategy": "steps"}, ["eval_steps"]),
        ({"valid_split": "v", "save_strategy": "steps", "save_steps": 5}, ["save_strategy (steps)", "eval_strategy"]),
        ({"batch_size": "many"}, ["batch_size='many'", "integer"]),
        ({"warmup_steps": 10, "warmup_ratio": 0.2}, ["give warmup_steps or warmup_ratio, not both"]),
        ({"warmup_steps": -1}, ["warmup_steps=-1", "greater than or equal to 0"]),
        ({"max_steps": 0}, ["max_steps=0", "greater than or equal to 1"]),
        ({"label_smoothing": 1.0}, ["label_smoothing=1.0", "less than 1"]),
        ({"eval_max_samples": 0}, ["eval_max_samples=0"]),
        ({"dataloader_num_workers": -2}, ["dataloader_num_workers=-2"]),
    ],
)
def test_validation_errors_name_the_field_and_allowed_values(kwargs, fragments) -> None:
    with pytest.raises(UserError) as info:
        Seq2SeqParams(data_path="x.csv", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


ALL_METRICS = ("rouge", "bleu", "chrf", "chrfpp", "exact_match")
TRANSLATION = ("bleu", "chrf", "chrfpp")


@pytest.mark.parametrize(
    ("kwargs", "task", "metrics", "language"),
    [
        ({}, None, ALL_METRICS, None),
        ({"task": "summarization"}, "summarization", ("rouge", "chrf"), None),
        ({"src_lang": "en_XX", "tgt_lang": "ru_RU"}, "translation", TRANSLATION, "ru_RU"),
        ({"text_column": "translation.en", "target_column": "translation.ru"}, "translation", TRANSLATION, "ru"),
        ({"target_column": "answers.text"}, None, ALL_METRICS, None),  # "text" is no language code
        ({"task": "summarization", "metrics": ["chrf", "bleu", "chrf"]}, "summarization", ("chrf", "bleu"), None),
        ({"metrics": " exact_match , rouge"}, None, ("exact_match", "rouge"), None),
        ({"target_language": "zh", "target_column": "translation.ja"}, "translation", TRANSLATION, "zh"),
        ({"src_lang": "en_XX", "tgt_lang": "ja_XX", "target_language": "ja"}, "translation", TRANSLATION, "ja"),
    ],
)
def test_task_picks_the_metrics_and_the_target_language(kwargs, task, metrics, language) -> None:
    params = Seq2SeqParams(data_path="x", **kwargs)
    assert (params.resolved_task, params.resolved_metrics, params.resolved_target_language) == (task, metrics, language)


def test_metric_for_best_model_takes_every_computed_name() -> None:
    for name in ("loss", "rouge1", "rougeLsum", "bleu", "chrf", "chrfpp", "exact_match"):
        assert Seq2SeqParams(data_path="x", metric_for_best_model=f"eval_{name}").metric_for_best_model == name
    assert (
        Seq2SeqParams(data_path="x", task="translation", metric_for_best_model="chrf").resolved_metrics == TRANSLATION
    )


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(UserError) as info:
        Seq2SeqParams(data_path="x", lr=-1, epochs=0, lora_r=0)
    assert all(f in str(info.value) for f in ("lr=", "epochs=", "lora_r="))


def test_fp16_without_cuda_is_a_clear_error_and_bf16_is_fine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    fp16 = Seq2SeqParams(data_path="x", mixed_precision="fp16")  # the schema cannot know the machine
    with pytest.raises(UserError, match=r"^invalid parameters: mixed_precision=fp16 needs a CUDA GPU"):
        check(fp16, read_context({"HF_HUB_OFFLINE": "1"}))
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        preflight({"data_path": "x", "mixed_precision": "fp16"}, env={"HF_HUB_OFFLINE": "1"})
    check(Seq2SeqParams(data_path="x", mixed_precision="bf16"), read_context({"HF_HUB_OFFLINE": "1"}))  # no error


def test_missing_data_path() -> None:
    with pytest.raises(UserError, match="data_path is required"):
        Seq2SeqParams()


def test_unknown_keys_get_did_you_mean_and_the_valid_names(tmp_path) -> None:
    with pytest.raises(UserError) as info:
        Seq2SeqParams(data_path="x", lora_rank=8)
    assert "unknown parameter lora_rank" in str(info.value) and "did you mean lora_r" in str(info.value)
    assert "valid names:" in str(info.value)
    with pytest.raises(UserError, match="did you mean lr"):
        Seq2SeqParams(data_path="x", learning_rate=1e-4)
    path = tmp_path / "p.json"
    path.write_text('{"data_path": "x", "epoch": 2}')
    with pytest.raises(UserError, match=r"unknown key in .*p.json epoch: did you mean epochs"):
        load_params(env={}, params_file=str(path))
    with pytest.raises(UserError, match="SEQ2SEQ_BATCHSIZE: did you mean SEQ2SEQ_BATCH_SIZE"):
        load_params({"data_path": "x"}, env={"SEQ2SEQ_BATCHSIZE": "4"})


def test_bad_params_file(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_params(env={}, params_file=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"data_path": "x",\n "lr": }')
    with pytest.raises(UserError, match=r"not valid JSON.*line 2"):
        load_params(env={}, params_file=str(bad))
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(UserError, match="JSON object"):
        load_params(env={}, params_file=str(listy))
    wrong_type = tmp_path / "wrong.json"
    wrong_type.write_text('{"data_path": "x", "epochs": "three"}')
    with pytest.raises(UserError, match="epochs='three'"):
        load_params(env={}, params_file=str(wrong_type))


def test_token_is_secret_everywhere() -> None:
    p = Seq2SeqParams(data_path="x", token="hf_CANARY123")
    assert "hf_CANARY123" not in repr(p) and "hf_CANARY123" not in str(p)
    assert p.redacted_dict()["token"] == "***"
    assert p.token_value() == "hf_CANARY123"
    with pytest.raises(UserError) as info:
        Seq2SeqParams(data_path="x", token="hf_CANARY123", lr=-1)
    assert "hf_CANARY123" not in str(info.value)


def test_derived_values() -> None:
    p = Seq2SeqParams(data_path="x", batch_size=8, gradient_accumulation=2, max_target_length=64)
    assert p.effective_batch_size(4) == 64 and p.effective_batch_size(1) == 16
    assert p.resolved_generation_max_length == 64
    assert p.resolved_save_strategy == "epoch" and not p.evaluates
    stepwise = Seq2SeqParams(data_path="x", valid_split="v", eval_strategy="steps", eval_steps=3)
    assert stepwise.resolved_save_strategy == "steps"
