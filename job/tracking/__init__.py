"""Experiment tracking that works out of the box: TensorBoard, MLflow (a local folder or a server), W&B.

One run per job, opened before training and closed when the job ends (FINISHED, FAILED, or KILLED when a signal
stopped it), holding the job's own parameters (redacted: never the token), every Trainer log entry at its step
(each evaluation once), the test split's scores, and the model card, ``metrics.json``, ``training_params.json``
and the curves image. Only the main process tracks. Settings come from the run context
(:mod:`job.tracking.settings`); misconfigurations are found by :mod:`job.tracking.checks` in preflight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.errors import Preempted
from job.outputs.files import CARD, CURVES, LOGS, METRICS, PARAMS, PREDICTIONS
from job.params import Seq2SeqParams
from job.tracking.settings import TrackingSettings

if TYPE_CHECKING:
    from job.tracking.trackers import Tracker

log = logging.getLogger(__name__)

MLRUNS = "mlruns"  # MLflow's file store under project_name/logs when MLFLOW_TRACKING_URI is unset


def default_mlflow_uri(output_dir: Path) -> str:
    return (output_dir / LOGS / MLRUNS).resolve().as_uri()


def open_tracker(params: Seq2SeqParams, settings: TrackingSettings) -> Tracker | None:
    """The tracker for ``params.log`` (None for none); trackers.py imports transformers, so only now."""
    if params.log == "none":
        return None
    from job.tracking import trackers

    logs = params.output_dir / LOGS
    if params.log == "mlflow":
        uri = settings.mlflow_tracking_uri or default_mlflow_uri(params.output_dir)
        return trackers.MlflowTracker(tracking_uri=uri, experiment=settings.mlflow_experiment)
    if params.log == "tensorboard":
        return trackers.TensorBoardTracker(log_dir=Path(settings.tensorboard_dir) if settings.tensorboard_dir else logs)
    return trackers.WandbTracker(
        folder=logs, mode=settings.wandb_mode, project=settings.wandb_project, entity=settings.wandb_entity
    )


@contextmanager
def track(params: Seq2SeqParams, settings: TrackingSettings, *, main_process: bool) -> Iterator[Tracker | None]:
    """The run of this job (None when not tracking or not the main process), ended with the job's outcome."""
    tracker = open_tracker(params, settings) if main_process else None
    if tracker is None:
        yield None
        return
    tracker.begin(run_name=Path(params.project_name).name, params=params.redacted_dict())
    log.info("Tracking to %s", tracker.describe())
    try:
        yield tracker
    except BaseException as exc:
        _end_after_failure(tracker, "KILLED" if isinstance(exc, Preempted) else "FAILED")
        raise
    tracker.end("FINISHED")


def log_outputs(tracker: Tracker | None, metrics: dict[str, Any], *, root: Path, step: int) -> None:
    """The test split's scores (at the last step) and the output files a reader of the run wants."""
    if tracker is None:
        return
    test = {k: v for k, v in metrics.items() if k.startswith("test_") and isinstance(v, int | float)}
    tracker.log_metrics({k: float(v) for k, v in test.items() if not isinstance(v, bool)}, step=step)
    tracker.log_files([root / name for name in (CARD, METRICS, PARAMS, CURVES, PREDICTIONS) if (root / name).is_file()])


def _end_after_failure(tracker: Tracker, status: str) -> None:
    """Mark the run; the job's own failure is what gets reported, so a tracker that cannot be reached only warns."""
    try:
        tracker.end(status)
    except Exception as exc:  # the tracker's own error (network, storage) must not hide the job's
        log.warning("Could not mark the %s run %s: %s", tracker.name, status, str(exc).splitlines()[0][:300])
