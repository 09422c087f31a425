"""Evaluation that tells the truth: a tiny model learns Cyrillic targets from WMT-style data, picks its best
checkpoint by chrF, scores a test split, saves its generation settings, tracks one MLflow run, and the evaluate
command reproduces its test scores from the saved folder."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cli import run_cli
from transformers import AutoModelForSeq2SeqLM

from job import manifest
from job.context import read_context
from job.metrics import score
from job.params import Seq2SeqParams
from job.pipeline import train

PNG = b"\x89PNG\r\n\x1a\n"
# English colour and animal words → Russian: the target is the Russian words of the input's keywords, in order
# of first appearance ("нет" when there is none).
RUSSIAN = {
    "red": "красный",
    "blue": "синий",
    "green": "зелёный",
    "cat": "кошка",
    "dog": "собака",
    "bird": "птица",
    "fish": "рыба",
    "horse": "лошадь",
}
FILLER = ["the", "a", "one", "two", "big", "small", "old", "new", "tree", "house", "river", "sat", "ran", "saw"]
METRICS = ("rouge", "bleu", "chrf")
GENERATION = {"max_new_tokens": 16, "num_beams": 2, "length_penalty": 1.2, "no_repeat_ngram_size": 3}
CANARY = "hf_EVALUATION_CANARY_123"
PATIENCE = 2
EPOCHS = 12


def _row(rng: random.Random) -> dict[str, Any]:
    words = [rng.choice([*RUSSIAN, *FILLER]) for _ in range(rng.randint(4, 9))]
    target = " ".join(dict.fromkeys(RUSSIAN[w] for w in words if w in RUSSIAN)) or "нет"  # each word once
    return {"translation": {"en": " ".join(words), "ru": target}, "id": rng.randrange(10**6)}


def _write_wmt_folder(folder: Path) -> Path:
    """train/validation/test.jsonl shaped like a Hub translation dataset: one dict column, one key per language."""
    rng = random.Random(7)
    folder.mkdir(parents=True)
    for split, rows in (("train", 320), ("validation", 32), ("test", 24)):
        lines = [json.dumps(_row(rng), ensure_ascii=False) for _ in range(rows)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def cyrillic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cyrillic")
    data = _write_wmt_folder(root / "data")
    out = root / "run"
    params = Seq2SeqParams(
        data_path=str(data),
        model="builtin:t5-tiny",  # its tokenizer is trained on these texts: it knows the Cyrillic letters
        text_column="translation.en",
        target_column="translation.ru",
        valid_split="validation",
        test_split="test",
        project_name=str(out),
        metrics=",".join(METRICS),
        metric_for_best_model="chrf",
        early_stopping_patience=PATIENCE,
        early_stopping_threshold=0.5,
        epochs=EPOCHS,
        batch_size=16,
        lr=3e-3,
        warmup_ratio=0.0,
        max_seq_length=32,
        max_target_length=16,
        generation_max_length=GENERATION["max_new_tokens"],
        num_beams=GENERATION["num_beams"],
        length_penalty=GENERATION["length_penalty"],
        no_repeat_ngram_size=GENERATION["no_repeat_ngram_size"],
        seed=0,
        log="mlflow",  # MLFLOW_TRACKING_URI unset: a file store in project_name/logs/mlruns
        token=CANARY,
    )
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the job sets; scoped to this fixture
        env.setenv("HF_HUB_OFFLINE", "1")
        metrics = train(params, read_context())
        runs = _mlflow_runs(out)
    return {"out": out, "data": data, "metrics": metrics, "mlflow": runs}


def _mlflow_runs(out: Path) -> list[dict[str, Any]]:
    """Every run of the job's MLflow store, read back through MLflow's own client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "logs" / "mlruns").as_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = []
    for run in client.search_runs(experiments):
        run_id = run.info.run_id
        runs.append(
            {
                "status": run.info.status,
                "params": run.data.params,
                "metrics": run.data.metrics,
                "history": {
                    k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics
                },
                "artifacts": sorted(a.path for a in client.list_artifacts(run_id)),
            }
        )
    return runs


def test_non_latin_targets_score_and_agree(cyrillic_run: dict[str, Any]) -> None:
    metrics, out = cyrillic_run["metrics"], cyrillic_run["out"]
    evaluations = metrics["evaluations"]
    assert metrics["metrics"] == list(METRICS) and metrics["target_language"] == "ru"  # from translation.ru
    first, best = evaluations[0], max(evaluations, key=lambda e: e["eval_chrf"])
    # a tiny model learns the words (ROUGE-1, chrF) long before their order (BLEU's 4-grams): all rise, each
    # by its own measure (measured: ROUGE-1 33 → 98, chrF 28 → 78, BLEU 6 → 38 at best)
    for name, floor, rise in (("eval_rouge1", 60, 20), ("eval_rougeL", 50, 15), ("eval_chrf", 50, 15)):
        assert best[name] > floor and best[name] > first[name] + rise, (name, first[name], best[name])
    best_bleu = max(e["eval_bleu"] for e in evaluations)
    assert best_bleu > 10 and best_bleu > first["eval_bleu"] + 5, [e["eval_bleu"] for e in evaluations]
    # the test scores are the saved predictions' scores against the references as written in the data
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    test_rows = [json.loads(line) for line in (cyrillic_run["data"] / "test.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [t["translation"]["en"] for t in test_rows]
    assert [r["reference"] for r in rows] == [t["translation"]["ru"] for t in test_rows]
    rescored = score([r["prediction"] for r in rows], [r["reference"] for r in rows], metrics=METRICS, target_lang="ru")
    assert {f"test_{k}": v for k, v in rescored.items()} == {f"test_{k}": metrics[f"test_{k}"] for k in rescored}
    assert any(set(r["prediction"]) & set("абвгдежзийклмнопрстуфхцчшщыэюя") for r in rows)
    assert metrics["test_chrf"] > 20 and metrics["test_gen_len"] > 1 and "test_loss" in metrics


def test_best_checkpoint_by_chrf_is_the_final_model(cyrillic_run: dict[str, Any]) -> None:
    metrics, out = cyrillic_run["metrics"], cyrillic_run["out"]
    chrf = [e["eval_chrf"] for e in metrics["evaluations"]]
    best_step = metrics["evaluations"][chrf.index(max(chrf))]["step"]  # the first evaluation with the top chrF
    states = [json.loads(p.read_text()) for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")]
    state = max(states, key=lambda s: s["global_step"])
    assert state["best_metric"] == max(chrf) and state["best_global_step"] == best_step
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    # metrics.json reports that checkpoint's evaluation, once: the final model was not evaluated again
    assert metrics["final_model_step"] == best_step and metrics["eval_chrf"] == max(chrf)
    assert [e["step"] for e in metrics["evaluations"]] == sorted({e["step"] for e in metrics["evaluations"]})
    saved = AutoModelForSeq2SeqLM.from_pretrained(out).state_dict()
    kept = AutoModelForSeq2SeqLM.from_pretrained(out / "checkpoints" / f"checkpoint-{best_step}").state_dict()
    assert all(torch.equal(saved[k], kept[k]) for k in saved)
    # early stopping on chrF: it stopped only after PATIENCE evaluations without a real improvement
    if len(chrf) < EPOCHS:
        assert max(chrf[-PATIENCE:]) <= max(chrf[:-PATIENCE]) + 0.5, chrf


def test_generation_config_holds_the_evaluation_settings(cyrillic_run: dict[str, Any]) -> None:
    out = cyrillic_run["out"]
    for folder in (out, *sorted((out / "checkpoints").iterdir())):
        config = json.loads((folder / "generation_config.json").read_text())
        assert {k: config.get(k) for k in GENERATION} == GENERATION, folder
        assert "max_length" not in config, folder
    assert cyrillic_run["metrics"]["generation"] == GENERATION


def test_outputs_card_and_curves(cyrillic_run: dict[str, Any]) -> None:
    out, metrics = cyrillic_run["out"], cyrillic_run["metrics"]
    assert manifest.verify(out, checksums=True)
    listed = set(manifest.read_manifest(out)["files"])
    assert {"predictions.jsonl", "training_curves.png", "metrics.json", "README.md"} <= listed
    assert (out / "training_curves.png").read_bytes()[:8] == PNG
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"### History ({len(metrics['evaluations'])} evaluations)" in card
    assert "![Loss and metrics by step](training_curves.png)" in card and "### Test" in card
    assert "pipeline_tag" not in card and "'' +" not in card and 'tokenizer(text, return_tensors="pt")' in card
    assert 'language:\n- "en"\n- "ru"' in card and '- "translation"' in card
    assert CANARY not in card


def test_one_mlflow_run_with_the_jobs_params_metrics_and_files(cyrillic_run: dict[str, Any]) -> None:
    (run,) = cyrillic_run["mlflow"]  # exactly one run per job
    metrics = cyrillic_run["metrics"]
    assert run["status"] == "FINISHED"
    params = run["params"]
    assert params["text_column"] == "translation.en" and params["metric_for_best_model"] == "chrf"
    assert params["model"] == "builtin:t5-tiny" and params["peft"] == "False" and params["token"] == "***"
    # every evaluation once, at its step; the test scores once
    evaluations = [(e["step"], e["eval_chrf"]) for e in metrics["evaluations"]]
    assert run["history"]["eval_chrf"] == [(step, pytest.approx(value)) for step, value in evaluations]
    assert [v for _, v in run["history"]["test_bleu"]] == [pytest.approx(metrics["test_bleu"])]
    assert len(run["history"]["train_loss"]) == 1
    names = ["README.md", "metrics.json", "predictions.jsonl", "training_curves.png", "training_params.json"]
    assert run["artifacts"] == names
    for path in (cyrillic_run["out"] / "logs").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_evaluate_command_scores_the_folder_like_the_test_split(cyrillic_run: dict[str, Any], tmp_path) -> None:
    out, metrics = cyrillic_run["out"], cyrillic_run["metrics"]
    result = run_cli(
        "evaluate",
        "--model-dir",
        str(out),
        "--data-path",
        str(cyrillic_run["data"]),
        "--split",
        "test",
        "--output",
        str(tmp_path / "eval"),
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    # the columns, prefix, metrics and generation settings all came from the folder
    assert report["text_column"] == "translation.en" and report["metrics"] == list(METRICS)
    assert report["generation"] == GENERATION and report["split"]["rows"] == 24
    for name in ("rouge1", "rougeL", "bleu", "chrf", "gen_len"):
        assert report["scores"][name] == metrics[f"test_{name}"], name
    # Training sized its evaluation batches by tokens (job.training.eval_batching), evaluate uses --batch-size:
    # the loss is the token mean over the split either way (job.training.eval_loss).
    assert report["scores"]["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    assert (tmp_path / "eval" / "predictions.jsonl").read_text() == (out / "predictions.jsonl").read_text()
    assert "seem to have been set" not in result.stderr  # no max_new_tokens/max_length warning per batch
    refused = run_cli(
        "evaluate", "--model-dir", str(out), "--data-path", str(cyrillic_run["data"]), "--output", str(out)
    )
    assert refused.returncode == 2 and "is a finished output folder" in refused.stderr
