"""The seq2seq-job command line, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from job.cli import build_parser
from job.params import Seq2SeqParams

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEQ2SEQ_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "job", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600
    )


def test_help_lists_every_parameter_grouped() -> None:
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for group in ("Data:", "Model:", "Training:", "Evaluation:", "Output:", "General:"):
        assert group in result.stdout
    for name in Seq2SeqParams.model_fields:
        assert f"--{name.replace('_', '-')}" in result.stdout, name
    assert "--dry-run" in result.stdout
    top = run_cli("--help")
    assert "train" in top.stdout and "validate" in top.stdout and "Exit codes" in top.stdout


def test_flags_map_to_params_including_snake_case_and_booleans() -> None:
    args = build_parser().parse_args(
        ["train", "--data-path", "d.csv", "--lr", "0.01", "--peft", "--no-group-by-length", "--lora_r", "4"]
    )
    overrides = {k: v for k, v in vars(args).items() if k in Seq2SeqParams.model_fields}
    assert overrides == {"data_path": "d.csv", "lr": "0.01", "peft": True, "group_by_length": False, "lora_r": "4"}
    params = Seq2SeqParams(**overrides)
    assert params.lr == 0.01 and params.lora_r == 4 and params.peft and not params.group_by_length


def test_bad_parameter_is_one_line_and_exit_2() -> None:
    result = run_cli("train", "--data-path", "x.csv", "--lr", "-1", "--optimizer", "adam")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "lr=" in errors[0] and "optimizer='adam'" in errors[0]
    assert "Traceback" not in result.stderr


def test_unknown_flag_is_a_user_error_with_a_hint() -> None:
    result = run_cli("train", "--data-path", "x.csv", "--learning-rate", "1e-4")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR job: " in line]
    assert len(errors) == 1 and "unknown flag --learning-rate: did you mean --lr?" in errors[0], result.stderr
    assert "usage:" not in result.stderr  # one line, not argparse's usage dump


def test_a_mistyped_command_is_named() -> None:
    result = run_cli("trian", "--data-path", "x.csv")
    assert result.returncode == 2
    assert "invalid choice: 'trian' (choose from 'train', 'validate', 'predict', 'evaluate')" in result.stderr


def test_missing_data_file_is_a_clear_error(tmp_path) -> None:
    result = run_cli("train", "--data-path", str(tmp_path / "nope.csv"), "--project-name", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "nope.csv" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_validate_prints_statistics_and_trains_nothing(tmp_path, keywords_task_dir, tiny_t5_dir) -> None:
    out = tmp_path / "never"
    result = run_cli(
        "validate",
        "--data-path",
        str(keywords_task_dir),
        "--valid-split",
        "validation[:10]",
        "--model",
        str(tiny_t5_dir),
        "--max-seq-length",
        "8",
        "--project-name",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "truncated" in result.stdout and "p95" in result.stdout
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["splits"]["train"]["rows"] == 400 and report["splits"]["validation"]["rows"] == 10
    assert report["tokens"]["train"]["inputs"]["truncated_share"] > 0.5  # 5–12 words do not fit in 8 tokens
    assert not out.exists()
    dry = run_cli(
        "train",
        "--dry-run",
        "--data-path",
        str(keywords_task_dir),
        "--model",
        str(tiny_t5_dir),
        "--project-name",
        str(out),
    )
    assert dry.returncode == 0 and "nothing was trained" in dry.stderr and not out.exists()


def test_autotrain_style_train_flag_env_and_params_file(tmp_path, keywords_task_dir, tiny_bart_dir) -> None:
    params_file = tmp_path / "job.json"
    params_file.write_text(
        json.dumps(
            {
                "data_path": str(keywords_task_dir),
                "model": str(tiny_bart_dir),
                "epochs": 5,
                "batch_size": 32,
                "max_samples": 64,
            }
        )
    )
    out = tmp_path / "out"
    result = run_cli(
        "--train",
        "--params",
        str(params_file),
        "--epochs",
        "1",
        "--project-name",
        str(out),
        env={"SEQ2SEQ_MAX_SEQ_LENGTH": "24", "SEQ2SEQ_EPOCHS": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    params = json.loads((out / "training_params.json").read_text())
    assert params["epochs"] == 1 and params["max_seq_length"] == 24 and params["batch_size"] == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epoch"] == pytest.approx(1.0)
    assert "Final metrics" in result.stderr

    # predict with the finished folder: inputs from a file and flags, outputs in input order
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("red cat sat\nthe small blue bird sang over the green garden today\n")  # longest last
    predicted = tmp_path / "pred.jsonl"
    result = run_cli(
        "predict", "--model-dir", str(out), "--input-file", str(inputs), "--text", "one dog", "--output", str(predicted)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in predicted.read_text().splitlines()]
    long_text = "the small blue bird sang over the green garden today"
    assert [r["text"] for r in rows] == ["one dog", "red cat sat", long_text]
    assert all(isinstance(r["prediction"], str) for r in rows)
    missing = run_cli("predict", "--model-dir", str(tmp_path / "none"), "--text", "x")
    assert missing.returncode == 2 and "holds no model" in missing.stderr


@pytest.mark.slow
def test_bundled_demo_runs_and_rouge_rises(tmp_path) -> None:
    """The README's quickstart: builtin:t5-tiny on examples/demo_data (about a minute on 2 cores)."""
    out = tmp_path / "demo"
    result = run_cli("train", "--params", "examples/demo.json", "--project-name", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rouge = [e["eval_rougeL"] for e in metrics["evaluations"]]
    assert rouge[-1] > rouge[0] + 30, rouge
    assert (out / "manifest.json").is_file()
