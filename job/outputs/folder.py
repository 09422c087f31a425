"""The output folder of one run (layout: :mod:`job.outputs.files`); every write goes through :class:`Outputs`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from job import manifest
from job.jsonfiles import write_atomic
from job.outputs.card import model_card
from job.outputs.files import CARD, MERGED, METRICS, NOT_IN_MANIFEST, PARAMS, TRAINING_ARGS
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

    def finish(self, *, final: dict[str, Any], tokenizer: Any, base_model: str) -> dict[str, Any]:
        """Write the tokenizer, metrics and card next to the saved model, then the manifest that marks it complete.

        The model itself is already saved (``trainer.save_model`` runs on every rank, as ZeRO-3 requires).
        """
        from job.modeling import save_merged

        tokenizer.save_pretrained(str(self.root))
        if self.params.peft and self.params.merge_adapter:
            save_merged(self.root, self.root / MERGED, base_model=base_model, params=self.params)
        (self.root / TRAINING_ARGS).unlink(missing_ok=True)
        data = self.write_metrics(final, status="completed")
        (self.root / CARD).write_text(model_card(self.params, data, base_model=base_model), encoding="utf-8")
        manifest.write_manifest(self.root, kind="model", exclude=NOT_IN_MANIFEST)
        log.info("Outputs complete in %s", self.root)
        self.publisher.publish_final()  # waits for background uploads, then the final folder, manifest last
        return data
