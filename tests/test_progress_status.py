"""TrainJob progress (job.progress_status) against a real HTTPS stand-in for Trainer's status endpoint on 127.0.0.1
(tests/status_server.py: its own CA, a token file), driven by real short training runs of a tiny T5."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import write_task
from status_server import STATUS_PATH, StatusServer, make_ca_and_server_cert
from trainer_helpers import tiny_trainer
from transformers import TrainerCallback

from job import progress_status
from job.progress_status import StatusEndpoint, StatusReporter, metric_text, progress_callback, trainer_status

REPO = Path(__file__).resolve().parents[1]


def _lint_manifests() -> Any:
    spec = importlib.util.spec_from_file_location("lint_manifests", REPO / "scripts" / "lint_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LINT = _lint_manifests()
# status.trainerStatus of the vendored TrainJob CRD (Trainer v2.2.1), strict: what the API server would accept
_TRAINJOB = json.loads((REPO / "k8s" / "schemas" / "trainjob.json").read_text())["schema"]
TRAINER_STATUS = LINT._Validator(LINT.strict_schema(_TRAINJOB["properties"]["status"]["properties"]["trainerStatus"]))


def schema_problems(status: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in TRAINER_STATUS.iter_errors(status)]


def env_for(url: str, ca_file: Path, token_file: Path) -> dict[str, str]:
    return {
        progress_status.URL_ENV: url,
        progress_status.CA_CERT_ENV: str(ca_file),
        progress_status.TOKEN_ENV: str(token_file),
    }


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task(tmp_path_factory.mktemp("progress_task"), kind="keywords", train_rows=64, valid_rows=16)


class RotateToken(TrainerCallback):
    """Stands in for the kubelet: writes a new token into the file at ``step``, once the reports so far are sent."""

    def __init__(self, token_file: Path, step: int, progress: Any, server: StatusServer) -> None:
        self.token_file, self.step, self.progress, self.server = token_file, step, progress, server
        self.requests_before = -1

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            assert self.progress.reporter.flush(10)
            self.requests_before = len(self.server.requests)
            self.token_file.write_text("token-2\n")


@pytest.fixture(scope="module")
def reported(tiny_t5_dir: Path, task_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One real run (8 steps, 2 evaluations) reporting to the stand-in at every logging step; token rotated."""
    tmp = tmp_path_factory.mktemp("progress_run")
    server = StatusServer(tmp, tokens={"token-1", "token-2"}).start()
    token_file = tmp / "token"
    token_file.write_text("token-1\n")
    progress = progress_callback(env_for(server.url, server.ca_file, token_file), min_interval_s=0.0)
    rotate = RotateToken(token_file, step=4, progress=progress, server=server)
    trainer = tiny_trainer(model_dir=tiny_t5_dir, data_dir=task_dir, out_dir=tmp / "run", callbacks=[rotate, progress])
    trainer.train()
    assert progress.reporter.flush(10)
    before_finish = len(server.requests)
    final = trainer.evaluate()
    progress.finish(final)
    server.stop()
    return SimpleNamespace(
        server=server,
        requests=list(server.requests),
        reports=server.reports(),
        final=final,
        rotated_at=rotate.requests_before,
        before_finish=before_finish,
        max_steps=trainer.state.max_steps,
        progress=progress,
    )


# ------------------------------------------------------------------------------------------------ real runs
def test_every_report_is_a_trainjob_status_post_the_crd_accepts(reported: SimpleNamespace) -> None:
    assert len(reported.requests) >= 8 and reported.progress.reporter.failed == 0
    for request in reported.requests:
        assert (request.method, request.path) == ("POST", STATUS_PATH)
        assert request.headers["Content-Type"] == "application/json"
        assert set(request.body) == {"trainerStatus"}  # UpdateTrainJobStatusRequest has nothing else
        assert schema_problems(request.body["trainerStatus"]) == []
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", request.body["trainerStatus"]["lastUpdatedTime"])
    assert len(reported.reports) == len(reported.requests)  # every one accepted with a token the server knows


def test_progress_eta_and_metrics_follow_the_training(reported: SimpleNamespace) -> None:
    reports = reported.reports
    progress = [r["progressPercentage"] for r in reports]
    assert progress[0] == 0 and progress == sorted(progress) and any(0 < p < 100 for p in progress)
    metrics = [{m["name"]: m["value"] for m in r.get("metrics", [])} for r in reports]
    steps = [int(m["step"]) for m in metrics]
    assert steps == sorted(steps) and steps[-1] == reported.max_steps
    during = [(r, m) for r, m in zip(reports, metrics, strict=True) if 0 < r["progressPercentage"] < 100]
    assert all(r["estimatedRemainingSeconds"] >= 0 for r, _ in during)
    assert all("loss" in m and float(m["loss"]) > 0 for _, m in during)
    evaluated = [m for m in metrics if "eval_loss" in m]
    assert evaluated and {"eval_rouge1", "eval_rougeL", "eval_gen_len"} <= set(evaluated[0])
    assert not [name for m in metrics for name in m if name.endswith(("_runtime", "_per_second"))]


def test_the_token_is_read_again_at_each_report_so_a_rotated_one_is_used(reported: SimpleNamespace) -> None:
    tokens = [r.headers["Authorization"] for r in reported.requests]
    assert 0 < reported.rotated_at < len(tokens)
    assert set(tokens[: reported.rotated_at]) == {"Bearer token-1"}
    assert set(tokens[reported.rotated_at :]) == {"Bearer token-2"}


def test_the_end_of_training_is_100_percent_and_finish_adds_the_final_metrics(reported: SimpleNamespace) -> None:
    at_end = reported.reports[: reported.before_finish][-1]  # on_train_end: every step ran
    assert at_end["progressPercentage"] == 100 and at_end["estimatedRemainingSeconds"] == 0
    last = reported.reports[-1]
    assert last["progressPercentage"] == 100 and last["estimatedRemainingSeconds"] == 0
    values = {m["name"]: m["value"] for m in last["metrics"]}
    assert values["eval_loss"] == metric_text(reported.final["eval_loss"])
    assert values["eval_rouge1"] == metric_text(reported.final["eval_rouge1"])
    assert values["step"] == str(reported.max_steps) and "train_loss" in values


@pytest.mark.parametrize("endpoint", ["refuses", "down"])
def test_an_endpoint_that_refuses_or_is_down_never_stops_training_and_warns_once(
    endpoint: str, tiny_t5_dir: Path, task_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    if endpoint == "refuses":
        server = StatusServer(tmp_path, tokens={"token-1"}, refuse=401).start()
        url, ca_file = server.url, server.ca_file
    else:
        server = None
        ca_file = make_ca_and_server_cert(tmp_path / "tls")[0]
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            url = f"https://127.0.0.1:{sock.getsockname()[1]}{STATUS_PATH}"
    progress = progress_callback(env_for(url, ca_file, token_file), min_interval_s=0.0, timeout_s=2.0)
    trainer = tiny_trainer(
        model_dir=tiny_t5_dir,
        data_dir=task_dir,
        out_dir=tmp_path / "run",
        callbacks=[progress],
        epochs=1,
        valid_split=None,
    )
    with caplog.at_level(logging.DEBUG, logger="job.progress_status"):
        result = trainer.train()
        progress.finish(result.metrics)
    assert trainer.state.global_step == trainer.state.max_steps == 4
    warnings = [r for r in caplog.records if r.name == "job.progress_status" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert ("HTTP 401 Unauthorized" if endpoint == "refuses" else "Connection refused") in warnings[0].getMessage()
    assert progress.reporter.failed >= 3 and progress.reporter.sent == 0
    if server is not None:
        server.stop()
        assert {r.headers["Authorization"] for r in server.requests} == {"Bearer token-1"}


def test_transformers_own_kubeflow_callback_is_taken_off_so_only_one_reports(
    tiny_t5_dir: Path, task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # transformers adds its KubeflowCallback whenever the variable is in the process environment
    monkeypatch.setenv(progress_status.URL_ENV, "https://127.0.0.1:1/status")
    trainer = tiny_trainer(model_dir=tiny_t5_dir, data_dir=task_dir, out_dir=tmp_path / "run", callbacks=[])
    names = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert "KubeflowCallback" in names
    assert progress_status.remove_builtin_kubeflow_callback(trainer) is True
    assert "KubeflowCallback" not in [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert progress_status.remove_builtin_kubeflow_callback(trainer) is False


# ------------------------------------------------------------------------------------------------ no training
def test_without_the_three_values_nothing_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert StatusEndpoint.from_env({}) is None and progress_callback({"PET_NNODES": "2"}) is None
    with caplog.at_level(logging.WARNING, logger="job.progress_status"):
        assert StatusEndpoint.from_env({progress_status.URL_ENV: "https://x/status"}) is None
        assert StatusEndpoint.from_env(env_for("http://x/status", Path("/ca"), Path("/token"))) is None
    assert "KUBEFLOW_TRAINER_SERVER_CA_CERT, KUBEFLOW_TRAINER_SERVER_TOKEN missing" in caplog.text
    assert "is not an https:// URL" in caplog.text
    endpoint = StatusEndpoint.from_env(env_for("https://x/status", Path("/ca"), Path("/token")))
    assert endpoint == StatusEndpoint("https://x/status", Path("/ca"), Path("/token"))


def test_status_bodies_stay_within_the_crd_limits() -> None:
    metrics = {f"eval_m{i}": i / 7 for i in range(300)} | {"x" * 65: 1.0, "loss": float("nan"), "note": "text"}
    body = trainer_status(progress=140.0, eta_s=1e12, metrics=metrics)
    status = body["trainerStatus"]
    assert schema_problems(status) == []
    assert status["progressPercentage"] == 100 and status["estimatedRemainingSeconds"] == 2**31 - 1
    assert len(status["metrics"]) == 256 and all(len(m["name"]) <= 64 for m in status["metrics"])
    assert status["metrics"][1] == {"name": "eval_m1", "value": "0.142857"}  # values are strings
    assert trainer_status(progress=None, eta_s=None, metrics={})["trainerStatus"].keys() == {"lastUpdatedTime"}
    assert [metric_text(v) for v in (True, "0.5", 3, float("nan"))] == [None, None, "3", "nan"]


def test_a_hanging_endpoint_never_blocks_the_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = StatusServer(tmp_path, tokens={"token-1"}, delay_s=1.5).start()
    (tmp_path / "token").write_text("token-1")
    reporter = StatusReporter(StatusEndpoint(server.url, server.ca_file, tmp_path / "token"), timeout_s=0.3)
    with caplog.at_level(logging.WARNING, logger="job.progress_status"):
        started = time.monotonic()
        for percent in range(5):
            reporter.submit(trainer_status(progress=percent, eta_s=None, metrics={}))
        assert time.monotonic() - started < 0.1  # the training thread only queues the report
        assert reporter.flush(5.0)
        reporter.close(1.0)
    warnings = [r for r in caplog.records if r.name == "job.progress_status"]
    assert reporter.failed >= 1 and reporter.sent == 0 and len(warnings) == 1
    assert "TimeoutError" in caplog.text or "timed out" in caplog.text
    time.sleep(1.7)  # the server's answers, after the client gave up
    assert server.dropped >= 1
    server.stop()
