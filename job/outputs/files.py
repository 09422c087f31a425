"""The names of the files and folders a run writes: the one home for each (project folder layout below).

::

    project_name/
      model.safetensors, config.json, generation_config.json, tokenizer files   (or adapter_* with --peft)
      merged/             with --peft --merge-adapter: the base model with the adapter merged in
      checkpoints/        Trainer checkpoints (checkpoint-N), each with its own manifest.json
      logs/               experiment tracking (job.tracking): TensorBoard events, mlruns/ (MLflow), wandb/
      metrics.json        rewritten after every evaluation, final at the end (job.outputs.report)
      predictions.jsonl   with --test-split: input, reference and prediction of every test row (job.evaluation)
      training_curves.png loss and metrics by step, shown in the model card
      training_params.json  every resolved parameter, secrets redacted
      README.md           model card
      manifest.json       written last: the folder is complete
      .job-lease.json     while a job writes here: who (job.lease); not part of the outputs
"""

from __future__ import annotations

import re

METRICS = "metrics.json"
PARAMS = "training_params.json"
CARD = "README.md"
PREDICTIONS = "predictions.jsonl"
CURVES = "training_curves.png"
EVALUATION = "evaluation.json"  # what `seq2seq-job evaluate --output DIR` writes (job.outputs.report)
MERGED = "merged"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
TRAINER_STATE = "trainer_state.json"  # written by the Trainer into each checkpoint
TRAINING_ARGS = "training_args.bin"  # the Trainer's pickled arguments: not portable, removed from the final folder
LEASE = ".job-lease.json"  # the single-writer lease (job.lease), in project_name and at output_uri
LEASE_LOCK = LEASE + ".lock"  # its local compare-and-swap lock (job.storage.conditional)
# checkpoints carry their own manifests; logs keep growing; the lease is renewed while the job runs
NOT_IN_MANIFEST = (CHECKPOINTS, LOGS, LEASE, LEASE_LOCK)

CHECKPOINT_PATTERN = r"checkpoint-(\d+)"
CHECKPOINT = re.compile(rf"^{CHECKPOINT_PATTERN}$")


def checkpoint_name(step: int) -> str:
    """The Trainer's name for the checkpoint saved at ``step``."""
    return f"checkpoint-{step}"


def checkpoint_step(name: str) -> int | None:
    """The step in a ``checkpoint-N`` name, else None."""
    match = CHECKPOINT.match(name)
    return int(match.group(1)) if match else None
