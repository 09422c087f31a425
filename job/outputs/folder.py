"""The output folder of one run (layout: :mod:`job.outputs.files`); every write goes through :class:`Outputs`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from job import generation, manifest
from job.jsonfiles import write_atomic
from job.metric_sets import column_language
from job.outputs.card import plot_curves, render_card, train_losses
from job.outputs.files import CARD, CURVES, MERGED, METRICS, NOT_IN_MANIFEST, PARAMS, PREDICTIONS, TRAINING_ARGS
from job.outputs.report import Machine, RunFacts, build_report
from job.params import Seq2SeqParams
from job.storage import Publisher

log = logging.getLogger(__name__)


class Outputs:
    """The output folder: begun (unmarked), updated after each evaluation and checkpoint, finished (marked)."""

    def __init__(
        self,
        params: Seq2SeqParams,
        *,
        main_process: bool = True,
        machine: Machine | None = None,
        evaluations: list[dict[str, Any]] | None = None,
        resumed_from_step: int = 0,
    ) -> None:
        self.params = params
        self.root = params.output_dir
        self.machine = machine or Machine()
        self.evaluations: list[dict[str, Any]] = list(evaluations or [])  # metrics.json keeps the whole history
        self.facts = RunFacts(resumed_from_step=resumed_from_step)
        self.publisher = Publisher(  # mirrors this folder to output_uri (S3/GCS/local); rank 0 only
            params.output_uri,
            local_root=self.root,
            checkpoints_dir=params.resolved_checkpoint_dir,
            save_total_limit=params.save_total_limit,
            main_process=main_process,
        )

    # --- lifecycle --------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Create the folder and unmark it: from here until :meth:`finish` it is not complete."""
        self.root.mkdir(parents=True, exist_ok=True)
        manifest.clear_manifest(self.root)
        write_atomic(self.root / PARAMS, self.params.redacted_dict())
        self.publisher.begin()  # fails fast on a missing bucket or bad credentials, before any training

    def record(self, *, data: dict[str, Any], effective_batch_size: int, distributed: dict[str, Any]) -> None:
        """The run's facts once data and setup are known (they go into every metrics.json from now on)."""
        self.facts.data = data
        self.facts.effective_batch_size = effective_batch_size
        self.facts.distributed = distributed

    def record_evaluation(
        self, metrics: tuple[str, ...], target_language: str | None, generation_settings: dict[str, Any]
    ) -> None:
        """What the evaluations compute and how the model generates (in metrics.json from now on)."""
        self.facts.metrics = list(metrics)
        self.facts.target_language = target_language
        self.facts.generation = dict(generation_settings)

    def checkpoint_saved(self, checkpoint: Path) -> None:
        manifest.write_manifest(checkpoint, kind="checkpoint")
        log.info("Checkpoint %s complete", checkpoint.name)
        self.publisher.publish_checkpoint(checkpoint)  # in the background; manifest uploaded last

    def evaluation_done(self, metrics: dict[str, float], *, step: int, epoch: float | None) -> None:
        self.evaluations.append({"step": step, "epoch": epoch, **metrics})
        self.write_metrics({}, status="running")
        self.publisher.publish_file(self.root / METRICS)

    def write_metrics(self, final: dict[str, Any], *, status: str) -> dict[str, Any]:
        data = build_report(
            status=status, final=final, evaluations=self.evaluations, facts=self.facts, machine=self.machine
        )
        write_atomic(self.root / METRICS, data)
        return data

    def write_predictions(self, raw: Any, predictions: list[str]) -> None:
        from job.evaluation import write_predictions

        write_predictions(self.root / PREDICTIONS, raw, predictions)

    def finish(
        self,
        *,
        final: dict[str, Any],
        tokenizer: Any,
        base_model: str,
        model: Any = None,
        log_history: list[dict[str, Any]] | tuple = (),
    ) -> dict[str, Any]:
        """Write the tokenizer, metrics, curves and card next to the saved model, then the manifest that marks it
        complete.

        The model itself is already saved (``trainer.save_model`` runs on every rank, as ZeRO-3 requires);
        ``model`` gives its generation config (saved next to an adapter too) and ``log_history`` the train losses.
        """
        from job.modeling import save_merged

        tokenizer.save_pretrained(str(self.root))
        if model is not None:
            generation.save(model, self.root)
            self.facts.generation = generation.summary(generation.underlying(model).generation_config)
        if self.params.peft and self.params.merge_adapter:
            save_merged(self.root, self.root / MERGED, base_model=base_model, params=self.params)
        (self.root / TRAINING_ARGS).unlink(missing_ok=True)
        data = self.write_metrics(final, status="completed")
        losses = train_losses(log_history)
        plot_curves(self.evaluations, losses, self.root / CURVES)
        card = self._card(data, losses, base_model=base_model)
        (self.root / CARD).write_text(card, encoding="utf-8")
        manifest.write_manifest(self.root, kind="model", exclude=NOT_IN_MANIFEST)
        log.info("Outputs complete in %s", self.root)
        self.publisher.publish_final()  # waits for background uploads, then the final folder, manifest last
        return data

    def _card(self, data: dict[str, Any], losses: list[dict[str, float]], *, base_model: str) -> str:
        params = self.params
        names = ["lr", "epochs", "batch_size", "gradient_accumulation", "optimizer", "scheduler", "warmup_ratio"]
        names += ["weight_decay", "max_seq_length", "max_target_length", "mixed_precision", "seed", "peft"]
        names += ["lora_r", "lora_alpha", "quantization"] if params.peft else []
        names += ["metric_for_best_model"] if self.evaluations else []
        hyper = {name: getattr(params, name) for name in names}
        return render_card(
            base_model=params.model if Path(base_model).exists() else base_model,
            data_path=params.data_path,
            project_name=params.project_name,
            peft=params.peft,
            source_prefix=params.source_prefix,
            generation=data.get("generation") or {},
            hyperparameters=hyper,
            metrics=data,
            evaluations=self.evaluations,
            train_losses=losses,
            source_lang=params.src_lang or column_language(params.text_column),
            target_lang=params.tgt_lang or column_language(params.target_column),
            image=CURVES,
            model_id=f"{params.username}/{Path(params.project_name).name}" if params.push_to_hub else None,
            task=params.resolved_task,
        )
