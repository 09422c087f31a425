"""One objective per trial, where each platform's hyperparameter tuning looks for it.

The objective is an evaluation metric: by default the run's ``metric_for_best_model`` as ``eval_<name>``
(``eval_loss``, minimized; ``eval_rouge1`` and the other scores, maximized). After every evaluation, and once more
for the final model, last, :class:`TuningReporter` puts it

* in the log, as a line of its own (logger ``job.tuning``, INFO, on the main process)::

      objective: eval_loss=0.4523 epoch=3 step=75

  ``<name>=<value>`` first (the value as Python writes a float: shortest exact form, ``1e-05`` for small ones;
  never nan or inf), then the epoch (at most 4 decimals) and the optimizer step. Katib's StdOut collector
  (``metricsFormat`` in k8s/katib-experiment.yaml) and SageMaker's ``metric_definitions`` (regexes over the log,
  examples/sagemaker_launch.py) read it; the format is stable, and tests/test_tuning.py checks both readers
  against a real run's log;
* on Vertex AI, in the file that ``CLOUD_ML_HP_METRIC_FILE`` names (default ``/tmp/hypertune/output.metrics``), as
  the cloudml-hypertune library writes it: the whole file rewritten each time with the last 100 reports, one JSON
  object per line, keys sorted, every value but the timestamp a string::

      {"checkpoint_path": "", "eval_loss": "0.4523", "global_step": "75", "timestamp": 1764582000.5, "trial": "3"}

  The metric's key is the objective's name, so the HyperparameterTuningJob's ``studySpec.metrics[].metricId``
  must be that name (examples/vertex_hp_tuning.json). ``trial`` is ``CLOUD_ML_TRIAL_ID`` (``0`` without it).

The final report repeats nothing: when the final evaluation was already reported at the same step with the same
value (the Trainer's ``evaluate()`` fires the callback too), it only returns :func:`objective_summary`'s
``{"name", "value", "goal"}``, for metrics.json.

Importing this module does not import transformers: :class:`TuningCallback` is made on first use.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.lazy_callbacks import lazy_callback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)

METRIC_FILE_ENV = "CLOUD_ML_HP_METRIC_FILE"
TRIAL_ID_ENV = "CLOUD_ML_TRIAL_ID"
VERTEX_JOB_ENV = "CLOUD_ML_JOB_ID"  # set in every Vertex AI custom job, tuning trials included
DEFAULT_METRIC_FILE = Path("/tmp/hypertune/output.metrics")
HYPERTUNE_KEPT = 100  # the hypertune library keeps the last 100 reports in the file
LINE_PREFIX = "objective: "


@dataclass(frozen=True)
class Objective:
    name: str  # an evaluation metric as the Trainer logs it: eval_loss, eval_rouge1, ...
    greater_is_better: bool

    @classmethod
    def for_run(
        cls, metric_for_best_model: str, *, name: str | None = None, greater_is_better: bool | None = None
    ) -> Objective:
        """``name`` (default ``metric_for_best_model``) as an ``eval_`` metric: a loss minimized, others maximized."""
        metric = (name or metric_for_best_model).strip()
        metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        return cls(metric, not metric.endswith("loss") if greater_is_better is None else greater_is_better)

    @property
    def goal(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"


def objective_line(objective: str, value: float, *, step: int, epoch: float | None = None) -> str:
    """The log line Katib and SageMaker read (see the module doc)."""
    parts = [f"{LINE_PREFIX}{objective}={float(value)!r}"]
    if epoch is not None:
        parts.append(f"epoch={f'{epoch:.4f}'.rstrip('0').rstrip('.')}")
    parts.append(f"step={int(step)}")
    return " ".join(parts)


def objective_summary(objective: Objective, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"name", "value", "goal"}`` of the objective in ``metrics``, or None when it is not there (or not finite)."""
    value = _finite(metrics.get(objective.name))
    return None if value is None else {"name": objective.name, "value": value, "goal": objective.goal}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------- Vertex AI
@dataclass(frozen=True)
class HypertuneFile:
    """Where Vertex AI hyperparameter tuning reads a trial's metric (the cloudml-hypertune convention)."""

    path: Path
    trial_id: str = "0"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HypertuneFile | None:
        """The file on Vertex AI (``CLOUD_ML_*`` set), else None: elsewhere nobody reads it."""
        if not any(env.get(name) for name in (METRIC_FILE_ENV, TRIAL_ID_ENV, VERTEX_JOB_ENV)):
            return None
        return cls(Path(env.get(METRIC_FILE_ENV) or DEFAULT_METRIC_FILE), str(env.get(TRIAL_ID_ENV) or "0"))

    def entry(self, tag: str, value: float, *, step: int, timestamp: float) -> dict[str, Any]:
        """One report, as hypertune.HyperTune.report_hyperparameter_tuning_metric makes it."""
        return {
            "timestamp": timestamp,
            "trial": self.trial_id,
            tag: str(float(value)),
            "global_step": str(int(step) if step else 0),
            "checkpoint_path": "",
        }

    def write(self, entries: list[dict[str, Any]]) -> None:
        """Rewrite the file with ``entries`` (one sorted-key JSON object per line), atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------- reporting
class TuningReporter:
    """Reports the objective after each evaluation and at the end (see the module doc); call it on rank 0."""

    def __init__(
        self, objective: Objective, *, hypertune: HypertuneFile | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.objective = objective
        self.hypertune = hypertune
        self.clock = clock
        self.reported: list[tuple[int, float]] = []  # (step, value), in order
        self._entries: deque[dict[str, Any]] = deque(maxlen=HYPERTUNE_KEPT)
        self._write_failed = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        metric_for_best_model: str,
        objective_metric: str | None = None,
        greater_is_better: bool | None = None,
    ) -> TuningReporter:
        """The reporter for this run: the objective from the params, the Vertex file if the platform reads one."""
        objective = Objective.for_run(metric_for_best_model, name=objective_metric, greater_is_better=greater_is_better)
        return cls(objective, hypertune=HypertuneFile.from_env(env))

    def report(self, metrics: Mapping[str, Any], *, step: int, epoch: float | None = None) -> float | None:
        """Report the objective in ``metrics`` (an evaluation's); its value, or None when it is not there."""
        value = _finite(metrics.get(self.objective.name))
        if value is None:
            if self.objective.name in metrics:
                log.warning(
                    "Objective %s=%s is not a finite number: not reported to the tuner",
                    self.objective.name,
                    metrics[self.objective.name],
                )
            return None
        self.reported.append((int(step), value))
        log.info("%s", objective_line(self.objective.name, value, step=step, epoch=epoch))
        if self.hypertune is not None:
            self._entries.append(self.hypertune.entry(self.objective.name, value, step=step, timestamp=self.clock()))
            self._write_hypertune()
        return value

    def final(self, metrics: Mapping[str, Any], *, step: int, epoch: float | None = None) -> dict[str, Any] | None:
        """The final model's objective: reported unless it just was; its summary for metrics.json (None if absent)."""
        summary = objective_summary(self.objective, metrics)
        if summary is None:
            names = ", ".join(sorted(metrics)) or "none"
            log.warning(
                "The tuning objective %s is not among the final metrics (%s): no objective reported; is "
                "there a validation split?",
                self.objective.name,
                names,
            )
            return None
        if not self.reported or self.reported[-1] != (int(step), summary["value"]):
            self.report(metrics, step=step, epoch=epoch)
        return summary

    def _write_hypertune(self) -> None:
        try:
            self.hypertune.write(list(self._entries))
        except OSError as exc:
            if not self._write_failed:
                log.error(
                    "Cannot write the hyperparameter tuning metric file %s (%s): Vertex AI will not see this "
                    "trial's objective",
                    self.hypertune.path,
                    exc,
                )
            self._write_failed = True


class _TuningCallback:
    """Reports the objective after each evaluation, on the main process.

    ``TuningCallback`` is this class with transformers' ``TrainerCallback`` as a second base.
    """

    def __init__(self, reporter: TuningReporter) -> None:
        self.reporter = reporter

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.reporter.report(kwargs.get("metrics") or {}, step=state.global_step, epoch=state.epoch)


def __getattr__(name: str) -> Any:
    """``TuningCallback``: made on first use, so that importing this module does not import transformers."""
    return lazy_callback(globals(), name, "TuningCallback", _TuningCallback)
