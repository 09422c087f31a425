"""One tracker class per ``log`` choice. Each is a Trainer callback for the metrics, plus the run's lifecycle.

The job owns the run (transformers' own logger callbacks are off: ``report_to="none"``): it opens it before
training with the job's parameters (redacted), logs every Trainer log entry at its step (train loss, each
evaluation once), adds the test scores and the output files at the end, and closes it with the job's outcome.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


def numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a log (bools and strings left out)."""
    return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class Tracker(TrainerCallback):
    """A run of an experiment tracker, fed by the Trainer (``on_log``) and by the job."""

    name = "none"

    def begin(self, *, run_name: str, params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        raise NotImplementedError

    def log_files(self, paths: Sequence[Path]) -> None:
        raise NotImplementedError

    def end(self, status: str) -> None:
        """Close the run; ``status`` is FINISHED, FAILED or KILLED (stopped by a signal, resumable)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.log_metrics(numbers(kwargs.get("logs") or {}), step=state.global_step)


class MlflowTracker(Tracker):
    """MLflow through its client API: an explicit tracking URI and run id, no global "active run"."""

    name = "mlflow"

    def __init__(self, *, tracking_uri: str, experiment: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment or "Default"
        self.run_id = ""

    def begin(self, *, run_name: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"seq2seq-job": "true"})
        self.run_id = run.info.run_id
        items = [
            Param(key, json.dumps(value) if isinstance(value, list | dict) else str(value))
            for key, value in params.items()
        ]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_files(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)

    def describe(self) -> str:
        return f"MLflow run {self.run_id} in {self.uri} (experiment {self.experiment})"


class TensorBoardTracker(Tracker):
    """One event file per job: train/*, eval/* and test/* scalars, the parameters and the card as text."""

    name = "tensorboard"

    def __init__(self, *, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def begin(self, *, run_name: str, params: Mapping[str, Any]) -> None:
        text = json.dumps(dict(params), indent=2, sort_keys=True)
        self.writer.add_text("job/parameters", "```json\n" + text + "\n```", global_step=0)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(_tensorboard_tag(key), value, global_step=step)
        self.writer.flush()

    def log_files(self, paths: Sequence[Path]) -> None:
        for path in paths:
            if path.suffix == ".md":
                self.writer.add_text(f"job/{path.name}", path.read_text(encoding="utf-8"), global_step=0)

    def end(self, status: str) -> None:
        self.writer.add_text("job/status", status, global_step=0)
        self.writer.close()

    def describe(self) -> str:
        return f"TensorBoard events in {self.log_dir}"


def _tensorboard_tag(key: str) -> str:
    """eval_rouge1 → eval/rouge1, test_bleu → test/bleu, loss → train/loss (as transformers' callback names them)."""
    for prefix in ("eval_", "test_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    return f"train/{key}"


class WandbTracker(Tracker):
    """One W&B run; offline mode writes it under ``project_name/logs/wandb`` for a later ``wandb sync``."""

    name = "wandb"

    def __init__(self, *, folder: Path, mode: str | None, project: str | None, entity: str | None) -> None:
        self.folder, self.mode, self.project, self.entity = folder, mode, project, entity
        self.run: Any = None

    def begin(self, *, run_name: str, params: Mapping[str, Any]) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project or "seq2seq-job",
            entity=self.entity,
            name=run_name,
            config=dict(params),
            dir=str(self.folder),
            mode=self.mode,  # None: wandb's own default (online)
            reinit="create_new",
            settings=wandb.Settings(quiet=True),  # no run summary table in the job's log
        )

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        if metrics:
            self.run.log(dict(metrics), step=step)

    def log_files(self, paths: Sequence[Path]) -> None:
        for path in paths:  # the run's files folder is uploaded when the run ends (or by `wandb sync`)
            shutil.copy2(path, Path(self.run.dir) / path.name)

    def end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)

    def describe(self) -> str:
        where = f"offline in {self.folder}" if self.mode == "offline" else self.mode or "online"
        return f"W&B run {self.run.id if self.run else '?'} ({where})"
