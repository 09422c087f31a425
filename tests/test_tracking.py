"""Experiment trackers: misconfigurations are one-line errors before training; TensorBoard and W&B (offline) runs
hold one run per job with the job's parameters, each evaluation once, and the output files.

MLflow with a local folder is read back through MLflow's client in tests/test_evaluation.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli

from job.context import read_context
from job.errors import UserError
from job.params import Seq2SeqParams
from job.pipeline import train
from job.preflight import preflight
from job.tracking.settings import TrackingSettings, shown_uri

CANARY = "hf_TRACKING_CANARY_456"
QUICK = dict(batch_size=16, lr=3e-3, max_seq_length=24, max_target_length=8, max_samples=48, epochs=1, seed=0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


# env → the one-line error preflight raises (None: no error); log is the key's first word
PREFLIGHT: dict[str, tuple[str, dict[str, str], str | None]] = {
    "mlflow_default_folder": ("mlflow", {}, None),
    "mlflow_file_uri": ("mlflow", {"MLFLOW_TRACKING_URI": "file:/tmp/mlruns"}, None),
    "mlflow_plain_path": ("mlflow", {"MLFLOW_TRACKING_URI": "./mlruns"}, None),
    "mlflow_databricks": ("mlflow", {"MLFLOW_TRACKING_URI": "databricks"}, None),
    "mlflow_file_store_refused": (
        "mlflow",
        {"MLFLOW_ALLOW_FILE_STORE": "false"},
        "invalid parameters: MLFLOW_ALLOW_FILE_STORE=false refuses MLflow's folder store, which the default folder "
        "project_name/logs/mlruns needs: unset it (the job sets true), or use a tracking server "
        "(MLFLOW_TRACKING_URI=http://…)",
    ),
    "mlflow_unknown_scheme": (
        "mlflow",
        {"MLFLOW_TRACKING_URI": "ftp://host/mlruns"},
        "invalid parameters: MLFLOW_TRACKING_URI=ftp://host/mlruns: unknown scheme ftp:; use a folder (file:/path), "
        "sqlite:///x.db, http(s)://server, databricks",
    ),
    "mlflow_sqlite_without_sqlalchemy": (
        "mlflow",
        {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"},
        "invalid parameters: MLFLOW_TRACKING_URI=sqlite:///mlflow.db needs MLflow's database store, which "
        "mlflow-skinny (the [loggers] extra) does not have: pip install mlflow, or use a folder "
        "(MLFLOW_TRACKING_URI=file:/path/mlruns, or leave it unset)",
    ),
    "mlflow_server_down": (
        "mlflow",
        {"MLFLOW_TRACKING_URI": "http://user:s3cret@127.0.0.1:{port}"},
        "invalid parameters: MLFLOW_TRACKING_URI=http://127.0.0.1:{port}: the tracking server does not answer "
        "(127.0.0.1:{port}: Connection refused); start it or fix the URI",
    ),
    "wandb_offline": ("wandb", {"WANDB_MODE": "offline"}, None),
    "wandb_key": ("wandb", {"WANDB_API_KEY": "0" * 40}, None),
    "wandb_online_without_login": (
        "wandb",
        {"HOME": "{tmp}"},
        "invalid parameters: log=wandb (WANDB_MODE=online) needs a W&B login: set WANDB_API_KEY (or run `wandb "
        "login`), or set WANDB_MODE=offline to log into project_name/logs/wandb and `wandb sync` later",
    ),
    "wandb_bad_mode": (
        "wandb",
        {"WANDB_MODE": "offlin"},
        "invalid parameters: WANDB_MODE=offlin is not a W&B mode; use online, offline or disabled",
    ),
    "tensorboard": ("tensorboard", {}, None),
}


@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_preflight_finds_logger_misconfigurations(case: str, tmp_path: Path, monkeypatch) -> None:
    log, env, expected = PREFLIGHT[case]
    fill = {"port": str(_closed_port()), "tmp": str(tmp_path)}
    env = {k: v.format(**fill) for k, v in env.items()}
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login from the machine running the tests
    if expected is None:
        preflight({"data_path": "x.csv", "log": log}, env=env)
        return
    with pytest.raises(UserError) as info:
        preflight({"data_path": "x.csv", "log": log}, env=env)
    assert str(info.value) == expected.format(**fill)
    assert "s3cret" not in str(info.value)


def test_a_logger_misconfiguration_exits_2_before_training(tmp_path: Path, keywords_task_dir: Path) -> None:
    out = tmp_path / "never"
    result = run_cli(
        "train",
        *("--data-path", str(keywords_task_dir), "--project-name", str(out), "--log", "mlflow"),
        env={"MLFLOW_TRACKING_URI": "ftp://host/mlruns"},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "unknown scheme ftp:" in errors[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_settings_come_from_the_run_context() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://a:b@mlflow:5000", "WANDB_MODE": "offline", "WANDB_API_KEY": "k" * 40}
    settings = read_context(env).tracking
    assert settings == TrackingSettings(
        mlflow_tracking_uri="http://a:b@mlflow:5000", wandb_mode="offline", wandb_api_key=True
    )
    assert settings.mlflow_scheme == "http" and not settings.mlflow_file_store
    assert shown_uri("http://a:b@mlflow:5000/x") == "http://mlflow:5000/x"
    assert read_context({}).tracking.mlflow_file_store  # unset: a folder in project_name/logs/mlruns
    vertex = read_context({"AIP_TENSORBOARD_LOG_DIR": "/gcs/b/logs", "CLOUD_ML_JOB_ID": "1"}).tracking
    assert vertex.tensorboard_dir == "/gcs/b/logs"


def _train(tmp_path: Path, data: Path, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "run"
    params = Seq2SeqParams(
        data_path=str(data), model="builtin:t5-tiny", project_name=str(out), token=CANARY, **QUICK, **overrides
    )
    return out, train(params, read_context())  # this process's environment, as a job reads it


def test_tensorboard_one_event_file_one_final_evaluation(tmp_path: Path, keywords_task_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # eval_strategy=no with a validation split: evaluated once, after the last step, inside the one run
    out, metrics = _train(tmp_path, keywords_task_dir, valid_split="validation", eval_strategy="no", log="tensorboard")
    (evaluation,) = metrics["evaluations"]
    assert evaluation["step"] == metrics["global_step"] == metrics["final_model_step"]
    (events,) = (out / "logs").rglob("events.out.tfevents.*")  # one writer, one file
    reader = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    scalars = reader.Tags()["scalars"]
    assert {"eval/loss", "eval/chrf", "eval/bleu", "eval/rouge1", "train/loss", "train/train_loss"} <= set(scalars)
    assert [(e.step, round(e.value, 4)) for e in reader.Scalars("eval/chrf")] == [
        (evaluation["step"], evaluation["eval_chrf"])
    ]
    assert len(reader.Scalars("eval/loss")) == 1
    texts = {tag: reader.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in reader.Tags()["tensors"]}
    logged = json.loads(texts["job/parameters/text_summary"].removeprefix("```json\n").removesuffix("\n```"))
    assert logged["valid_split"] == "validation" and logged["token"] == "***" and logged["log"] == "tensorboard"
    assert "## Evaluation" in texts["job/README.md/text_summary"]
    assert texts["job/status/text_summary"] == "FINISHED"
    assert CANARY.encode() not in events.read_bytes()


def test_wandb_offline_one_run_with_the_output_files(tmp_path: Path, keywords_task_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out, metrics = _train(tmp_path, keywords_task_dir, valid_split="validation[:16]", log="wandb")
    assert metrics["status"] == "completed"
    (run,) = (out / "logs" / "wandb").glob("offline-run-*")  # one run per job
    files = {p.name for p in (run / "files").iterdir()}
    assert {"README.md", "metrics.json", "training_params.json", "training_curves.png"} <= files
    assert json.loads((run / "files" / "training_params.json").read_text())["token"] == "***"
    (log_file,) = run.glob("run-*.wandb")
    assert CANARY.encode() not in log_file.read_bytes()


def test_mlflow_file_uri_through_the_cli(tmp_path: Path, keywords_task_dir: Path, monkeypatch) -> None:
    """The report: `--log mlflow` with MLFLOW_TRACKING_URI=file:… crashed under mlflow 3 (file store refused)."""
    from mlflow.tracking import MlflowClient

    store, out = (tmp_path / "mlruns").as_uri(), tmp_path / "run"
    flags = {"data-path": keywords_task_dir, "model": "builtin:t5-tiny", "project-name": out, "log": "mlflow"}
    flags |= {"valid-split": "validation[:16]", "max-samples": 32, "epochs": 1, "batch-size": 16}
    args = [part for name, value in flags.items() for part in (f"--{name}", str(value))]
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "issue-11", "OMP_NUM_THREADS": "1"}
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the job sets it in its own process
    result = run_cli("train", *args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=store)
        (experiment,) = [e for e in client.search_experiments() if e.name == "issue-11"]
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.info.run_name == "run"
        assert run.data.params["data_path"] == str(keywords_task_dir) and "eval_loss" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"README.md", "metrics.json"}
