"""The job itself (a real `seq2seq-job train` process) reports to the platform: TrainJob progress to a local HTTPS
stand-in of Kubeflow Trainer's status endpoint, the tuning objective to Vertex's hypertune file, the log
(Katib/SageMaker) and metrics.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_task
from job_process import job_env, run_job
from status_server import StatusServer

from job import progress_status, tuning


def test_a_real_run_reports_progress_and_its_objective_everywhere(tiny_t5_dir: Path, tmp_path: Path) -> None:
    data = write_task(tmp_path / "data", kind="keywords", train_rows=64, valid_rows=16)
    server = StatusServer(tmp_path, tokens={"the-token"}).start()
    token = tmp_path / "token"
    token.write_text("the-token\n")
    metric_file = tmp_path / "hypertune" / "output.metrics"
    env = job_env(
        {
            progress_status.URL_ENV: server.url,
            progress_status.CA_CERT_ENV: str(server.ca_file),
            progress_status.TOKEN_ENV: str(token),
            tuning.METRIC_FILE_ENV: str(metric_file),
            tuning.VERTEX_JOB_ENV: "1234",
        }
    )
    out = tmp_path / "run"
    args = (
        "--data-path",
        str(data),
        "--model",
        str(tiny_t5_dir),
        "--project-name",
        str(out),
        "--valid-split",
        "validation",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--max-seq-length",
        "32",
        "--max-target-length",
        "8",
    )
    code, job = run_job("train", *args, env=env)
    assert code == 0, job.text
    metrics = json.loads((out / "metrics.json").read_text())
    evaluations = [e["eval_loss"] for e in metrics["evaluations"]]
    assert len(evaluations) == 2

    # metrics.json: the final model's objective
    assert metrics["objective"] == {"name": "eval_loss", "value": metrics["eval_loss"], "goal": "minimize"}
    # the log: one name=value line per evaluation (Katib's stdout collector, SageMaker's metric_definitions)
    lines = re.findall(r"objective: eval_loss=([0-9.]+) epoch=\S+ step=(\d+)", job.text)
    assert [int(step) for _, step in lines][:2] == [4, 8] and float(lines[-1][0]) == metrics["eval_loss"]
    # Vertex: the hypertune file holds the same values, the last one the final model's
    entries = [json.loads(line) for line in metric_file.read_text().splitlines()]
    assert [float(e["eval_loss"]) for e in entries][-1] == metrics["eval_loss"]
    assert [e["global_step"] for e in entries][:2] == ["4", "8"]
    # TrainJob: progress rose to 100 % at the end, with the final metrics, and only our reporter posted
    server.stop()
    reports = server.reports()
    assert reports and reports[-1]["progressPercentage"] == 100
    final = {m["name"]: m["value"] for m in reports[-1]["metrics"]}
    assert float(final["eval_loss"]) == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert [r["progressPercentage"] for r in reports] == sorted(r["progressPercentage"] for r in reports)
    assert all(r.headers["Authorization"] == "Bearer the-token" for r in server.requests)
