"""The model card people read: metadata for transformers 5, every evaluation, curves, and a snippet that runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from matplotlib import image as mpimg

from job.outputs.card import plot_curves, render_card, usage_snippet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVALUATIONS = [
    {
        "step": 10 * i,
        "epoch": i / 2,
        "eval_loss": 3.0 / i,
        "eval_rouge1": 20.0 + 10 * i,
        "eval_rougeL": 15.0 + 9 * i,
        "eval_chrf": 25.0 + 8 * i,
        "eval_gen_len": 11.5,
        "eval_runtime": 0.8,
        "eval_samples_per_second": 120.0,
    }
    for i in range(1, 6)
]
TRAIN_LOSSES = [{"step": s, "loss": 4.0 / s} for s in range(1, 51, 3)]
GENERATION = {"max_new_tokens": 8, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram_size": 3}
HYPER = {"lr": 5e-5, "epochs": 3, "batch_size": 8, "optimizer": "adamw_torch"}
FINAL = {
    **{"eval_loss": 0.6, "eval_rouge1": 70.0, "eval_rougeL": 60.0, "eval_chrf": 65.0, "eval_gen_len": 11.5},
    **{"eval_runtime": 0.8, "train_runtime": 12.5, "epoch": 2.5},
}


def _card(**overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "base_model": "google/flan-t5-base",
        "data_path": "s3://bucket/data/train.csv",
        "project_name": "runs/news-summarizer",
        "peft": False,
        "source_prefix": "summarize: ",
        "generation": GENERATION,
        "hyperparameters": HYPER,
        "metrics": FINAL,
        "evaluations": EVALUATIONS,
        "train_losses": TRAIN_LOSSES,
        "image": "training_curves.png",
    }
    return render_card(**(kwargs | overrides))


def _front_matter(card: str) -> dict[str, Any]:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def _snippet(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1
    return blocks[0]


def _table_rows(card: str, heading: str) -> list[list[str]]:
    section = card.split(heading, 1)[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]  # after header, ---


def _generate_kwargs(code: str) -> dict[str, Any]:
    """The keyword arguments of the snippet's one model.generate(**inputs, ...) call, as values."""
    calls = [
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "generate"
    ]
    assert len(calls) == 1 and isinstance(calls[0].keywords[0].value, ast.Name)  # **inputs first
    assert calls[0].keywords[0].arg is None and calls[0].keywords[0].value.id == "inputs"
    return {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords[1:] if k.arg}


# ------------------------------------------------------------------------------------------------------- curves
def test_plot_curves_writes_a_valid_png_with_one_point_per_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "training_curves.png"
    figure = plot_curves(EVALUATIONS, TRAIN_LOSSES, path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert 300 <= height <= 1000 and 800 <= width <= 2000 and width > height
    assert float(np.std(pixels[..., :3])) > 0.05  # not a blank canvas

    loss_axes, metric_axes = figure.axes
    lines = {line.get_label(): line for axes in figure.axes for line in axes.get_lines()}
    steps = [e["step"] for e in EVALUATIONS]
    assert list(lines["train loss"].get_xdata()) == [r["step"] for r in TRAIN_LOSSES]
    assert lines["eval loss"] in loss_axes.get_lines()
    assert [line.get_label() for line in metric_axes.get_lines()] == ["rouge1", "rougeL", "chrf"]  # not gen_len
    for name in ("eval loss", "rouge1", "rougeL", "chrf"):
        assert list(lines[name].get_xdata()) == steps, name
        assert lines[name].get_marker() == "o"  # every evaluation is a visible point
    assert list(lines["rouge1"].get_ydata()) == [e["eval_rouge1"] for e in EVALUATIONS]


def test_plot_curves_without_evaluations_or_with_gaps(tmp_path: Path) -> None:
    figure = plot_curves([], TRAIN_LOSSES, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_SIGNATURE
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["train loss"]
    assert "no evaluation metrics" in [t.get_text() for t in figure.axes[1].texts]
    # an evaluation that lacks a metric keeps its place (NaN): still one x per evaluation
    gappy = [{"step": 5, "eval_loss": 1.0, "eval_bleu": 10.0}, {"step": 10, "eval_loss": 0.5}]
    figure = plot_curves(gappy, [], tmp_path / "b.png")
    bleu = figure.axes[1].get_lines()[0]
    assert list(bleu.get_xdata()) == [5, 10] and np.isnan(bleu.get_ydata()[1])
    assert mpimg.imread(tmp_path / "b.png").ndim == 3


# --------------------------------------------------------------------------------------------------------- card
def test_card_metadata_fits_transformers_5() -> None:
    card = _card(source_lang="en", target_lang="de_DE", task="translation")
    meta = _front_matter(card)
    assert "pipeline_tag" not in meta and "text2text-generation" not in card
    assert meta["library_name"] == "transformers"
    assert meta["base_model"] == "google/flan-t5-base"
    assert meta["language"] == ["en", "de"]
    assert {"seq2seq", "translation"} <= set(meta["tags"])
    assert meta["metrics"] == ["rouge", "chrf"]
    peft_meta = _front_matter(_card(peft=True))
    assert peft_meta["library_name"] == "peft" and "lora" in peft_meta["tags"]
    # a local folder or a builtin model is no Hub id: no base_model, which the Hub would reject
    assert "base_model" not in _front_matter(_card(base_model="/models/my-t5"))
    assert "base_model" not in _front_matter(_card(base_model="builtin:t5-tiny"))
    assert "language" not in _front_matter(_card())


def test_card_has_one_history_row_per_evaluation_in_order() -> None:
    card = _card()
    rows = _table_rows(card, "### History (5 evaluations)")
    assert len(rows) == len(EVALUATIONS)
    assert [row[0] for row in rows] == ["10", "20", "30", "40", "50"]
    header = card.split("### History (5 evaluations)", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["step", "epoch", "loss", "rouge1", "rougeL", "chrf", "gen_len"]  # no runtime/throughput
    assert rows[0] == ["10", "0.50", "3.0000", "30.00", "24.00", "33.00", "11.50"]
    assert rows[-1][3] == "70.00"


def test_card_final_metrics_curves_and_settings() -> None:
    card = _card()
    final = {row[0]: row[1:] for row in _table_rows(card, "### Final")}
    assert final["rougeL"] == ["60.00", "higher"] and final["loss"] == ["0.6000", "lower"]
    assert "runtime" not in final and "train_runtime" not in final
    assert "![Loss and metrics by step](training_curves.png)" in card
    settings = dict(row[:2] for row in _table_rows(card, "## Generation settings"))
    assert settings == {"max_new_tokens": "8", "num_beams": "2", "length_penalty": "1", "no_repeat_ngram_size": "3"}
    training = dict(row[:2] for row in _table_rows(card, "## Training"))
    assert training["lr"] == "5e-05" and training["train_runtime"] == "12.5"
    assert "Last logged training loss: 0.0816 at step 49." in card
    assert "runs/news-summarizer" not in card.split("\n# ", 1)[1].split("\n", 1)[0]  # title: the folder name


def test_card_without_evaluation() -> None:
    card = _card(evaluations=[], metrics={"train_runtime": 3.0}, image=None)
    assert "No evaluation ran" in card and "### History" not in card and "![" not in card
    assert "metrics" not in _front_matter(card)


def test_snippet_is_valid_python_with_the_prefix_prepended() -> None:
    card = _card()
    code = _snippet(card)
    compile(code, "README.md", "exec")
    assert 'tokenizer("summarize: " + text, return_tensors="pt")' in code
    assert _generate_kwargs(code) == {
        "max_new_tokens": 8,
        "num_beams": 2,
        "length_penalty": 1.0,
        "no_repeat_ngram_size": 3,
    }
    assert "AutoModelForSeq2SeqLM.from_pretrained(" in code and "pipeline" not in code
    empty = _snippet(_card(source_prefix=""))
    assert 'tokenizer(text, return_tensors="pt")' in empty
    assert "'' +" not in empty and '"" +' not in empty
    adapter = _snippet(_card(peft=True))
    compile(adapter, "README.md", "exec")
    assert (
        "from peft import AutoPeftModelForSeq2SeqLM" in adapter
        and "AutoPeftModelForSeq2SeqLM.from_pretrained" in adapter
    )


def test_snippet_survives_odd_strings() -> None:
    code = usage_snippet('my "quoted"\\model', peft=False, source_prefix='it\'s: "x"\n', generation={"num_beams": None})
    compile(code, "README.md", "exec")
    assert "num_beams" not in code  # None values are left out
    assert "model.generate(**inputs)" in code and _generate_kwargs(code) == {}


# ------------------------------------------------------------------------------------------ the snippet really runs
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from job.builtin_models import build_builtin_model

    root = tmp_path_factory.mktemp("models")
    texts = [f"summarize: the cat sat on mat number {i}" for i in range(40)] + [f"die Katze {i}" for i in range(40)]
    t5 = build_builtin_model("t5-tiny", texts=texts, out_dir=root / "t5", seed=0)
    mbart = build_builtin_model("mbart-tiny", texts=texts, out_dir=root / "mbart", seed=0, languages=["de_DE", "en_XX"])
    adapter = root / "adapter"
    base = AutoModelForSeq2SeqLM.from_pretrained(t5)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(t5).save_pretrained(adapter)  # the job saves the tokenizer with the adapter
    return {"t5": t5, "mbart": mbart, "adapter": adapter}


def _run(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_snippet_runs_on_a_saved_model_with_its_prefix(tiny_models: dict[str, Path], capsys) -> None:
    card = _card(model_id=str(tiny_models["t5"]))
    ns = _run(_snippet(card))
    expected = ns["tokenizer"]("summarize: Your input text.")["input_ids"]
    assert ns["inputs"]["input_ids"][0].tolist() == expected
    assert ns["outputs"].shape[1] <= 1 + GENERATION["max_new_tokens"]  # decoder start + at most 8 new tokens
    assert capsys.readouterr().out.strip() == ns["tokenizer"].decode(ns["outputs"][0], skip_special_tokens=True)


def test_snippet_runs_on_an_adapter(tiny_models: dict[str, Path]) -> None:
    ns = _run(_snippet(_card(peft=True, model_id=str(tiny_models["adapter"]))))
    assert type(ns["model"]).__name__ == "PeftModelForSeq2SeqLM"
    assert ns["outputs"].shape[1] >= 2


def test_snippet_sets_mbart_languages(tiny_models: dict[str, Path]) -> None:
    # The tiny mBART's tokenizer defaults to de_DE → en_XX and its generation config forces nothing: only the
    # snippet's tokenizer.src_lang and forced_bos_token_id make this en_XX → de_DE.
    card = _card(model_id=str(tiny_models["mbart"]), source_prefix="", source_lang="en_XX", target_lang="de_DE")
    ns = _run(_snippet(card))
    tokenizer = ns["tokenizer"]
    assert tokenizer.convert_ids_to_tokens(int(ns["inputs"]["input_ids"][0][0])) == "en_XX"
    # generation starts from the decoder start token, then the forced target language code
    assert tokenizer.convert_ids_to_tokens(int(ns["outputs"][0][1])) == "de_DE"


def test_card_test_scores_and_train_losses_from_the_trainer_history() -> None:
    from job.outputs.card import train_losses

    test = {
        "test_bleu": 31.5,
        "test_chrf": 58.25,
        "test_loss": 0.9,
        "test_runtime": 1.5,
        "test_samples_per_second": 9.0,
    }
    card = _card(metrics={**FINAL, **test})
    rows = {row[0]: row[1:] for row in _table_rows(card, "### Test")}
    assert rows == {"bleu": ["31.50", "higher"], "chrf": ["58.25", "higher"], "loss": ["0.9000", "lower"]}
    assert "test_" not in card.split("## Training", 1)[1]  # test scores are not training figures
    history = [{"loss": 2.0, "step": 1, "epoch": 0.1}, {"eval_loss": 1.5, "step": 2}, {"loss": 1.0, "step": 3}]
    assert train_losses([*history, {"train_loss": 1.5, "step": 3}]) == [
        {"step": 1, "loss": 2.0},
        {"step": 3, "loss": 1.0},
    ]
