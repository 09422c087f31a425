"""What a run tells the platform while it trains: Kubeflow TrainJob progress and the tuning objective.

Built once per run from the params and the run context (:meth:`Reporters.for_run`); the trainer gets their
callbacks, and :meth:`Reporters.finish` reports the final model (100 % and the final objective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from job import progress_status, tuning
from job.context import RunContext
from job.params import Seq2SeqParams


@dataclass
class Reporters:
    tuner: tuning.TuningReporter
    progress: Any | None = None  # progress_status.TrainJobProgress where the TrainJob status endpoint is set

    @classmethod
    def for_run(cls, params: Seq2SeqParams, ctx: RunContext) -> Reporters:
        tuner = tuning.TuningReporter.from_env(ctx.env, metric_for_best_model=params.metric_for_best_model)
        progress = progress_status.progress_callback(ctx.env) if ctx.process.is_main else None
        return cls(tuner=tuner, progress=progress)

    def callbacks(self) -> list[Any]:
        return [tuning.TuningCallback(self.tuner), *([self.progress] if self.progress is not None else [])]

    def attach(self, trainer: Any) -> None:
        """transformers adds its own Kubeflow reporter when the endpoint is set: ours replaces it."""
        progress_status.remove_builtin_kubeflow_callback(trainer)

    def finish(self, final: dict[str, Any], *, step: int, epoch: float | None) -> dict[str, Any] | None:
        """Report the final model; the objective's summary for metrics.json (None without evaluation)."""
        objective = self.tuner.final(final, step=step, epoch=epoch)
        if self.progress is not None:
            self.progress.finish(final)
        return objective
