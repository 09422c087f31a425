"""Everything the job writes into ``project_name``, through one object: model, tokenizer, metrics, params, card.

Layout of a finished run::

    project_name/
      model.safetensors, config.json, generation_config.json, tokenizer files   (or adapter_* with --peft)
      merged/             with --peft --merge-adapter: the base model with the adapter merged in
      checkpoints/        Trainer checkpoints, each with its own manifest.json
      metrics.json        rewritten after every evaluation, final at the end
      training_params.json  every resolved parameter, secrets redacted
      README.md           model card
      manifest.json       written last: the folder is complete
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from job import manifest
from job.params import Seq2SeqParams
from job.storage import Publisher

log = logging.getLogger(__name__)

METRICS = "metrics.json"
PARAMS = "training_params.json"
CARD = "README.md"
MERGED = "merged"
NOT_IN_MANIFEST = ("checkpoints", "logs")  # checkpoints carry their own manifests; logs keep growing


class Outputs:
    """The output folder of one run. Every write goes through here (so uploads can hook in at one place)."""

    def __init__(self, params: Seq2SeqParams) -> None:
        self.params = params
        self.root = params.output_dir
        self.evaluations: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}  # data statistics and other facts recorded in metrics.json
        self.publisher = Publisher(  # mirrors this folder to output_uri (S3/GCS/local); rank 0 only
            params.output_uri, local_root=self.root, checkpoints_dir=params.checkpoints_dir,
            save_total_limit=params.save_total_limit,
        )  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Create the folder and unmark it: from here until :meth:`finish` it is not complete."""
        self.root.mkdir(parents=True, exist_ok=True)
        manifest.clear_manifest(self.root)
        manifest.write_json_atomic(self.root / PARAMS, self.params.redacted_dict())
        self.publisher.begin()  # fails fast on a missing bucket or bad credentials, before any training

    def checkpoint_saved(self, checkpoint: Path) -> None:
        manifest.write_manifest(checkpoint, kind="checkpoint")
        log.info("Checkpoint %s complete", checkpoint.name)
        self.publisher.publish_checkpoint(checkpoint)  # in the background; manifest uploaded last

    def evaluation_done(self, metrics: dict[str, float], *, step: int, epoch: float | None) -> None:
        self.evaluations.append({"step": step, "epoch": epoch, **metrics})
        self.write_metrics({}, status="running")
        self.publisher.publish_file(self.root / METRICS)

    def write_metrics(self, final: dict[str, Any], *, status: str) -> dict[str, Any]:
        data = {"status": status, **final, "evaluations": self.evaluations, **self.summary, **environment()}
        manifest.write_json_atomic(self.root / METRICS, data)
        return data

    def finish(
        self, *, final: dict[str, Any], trainer: Any, tokenizer: Any, base_model: str, model_saved: bool = False
    ) -> dict[str, Any]:
        """Write the model, tokenizer, metrics and card, then the manifest that marks the folder complete.

        ``model_saved``: the caller already ran ``trainer.save_model`` on every rank (as ZeRO-3 requires).
        """
        if not model_saved:
            trainer.save_model(str(self.root))  # the best model when load_best_model_at_end; the adapter with PEFT
        tokenizer.save_pretrained(str(self.root))
        if self.params.peft and self.params.merge_adapter:
            save_merged(self.root, self.root / MERGED, base_model=base_model, params=self.params)
        (self.root / "training_args.bin").unlink(missing_ok=True)  # pickled args: not portable, not needed
        data = self.write_metrics(final, status="completed")
        (self.root / CARD).write_text(model_card(self.params, data, base_model=base_model), encoding="utf-8")
        manifest.write_manifest(self.root, kind="model", exclude=NOT_IN_MANIFEST)
        log.info("Outputs complete in %s", self.root)
        self.publisher.publish_final()  # waits for background uploads, then the final folder, manifest last
        return data


def save_merged(adapter_dir: Path, out_dir: Path, *, base_model: str, params: Seq2SeqParams) -> None:
    """Reload the base model in full precision, merge the adapter into it and save a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    base = AutoModelForSeq2SeqLM.from_pretrained(base_model, token=params.token_value())
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    log.info("Merged model written to %s", out_dir)


def peak_memory() -> dict[str, float]:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"peak_host_memory_mb": round(rss_mb, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def environment() -> dict[str, Any]:
    packages = ("torch", "transformers", "datasets", "peft", "accelerate", "tokenizers", "bitsandbytes", "deepspeed")
    versions = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"versions": versions, "hardware": hardware}


def model_card(params: Seq2SeqParams, metrics: dict[str, Any], *, base_model: str) -> str:
    """A Hub-style README.md: metadata, the metrics table, how to load it, how it was trained."""
    rows = [(k, v) for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)]
    table = "\n".join(f"| {k.removeprefix('eval_')} | {v:.4g} |" for k, v in rows) or "| (no evaluation) | |"
    loader = "AutoPeftModelForSeq2SeqLM" if params.peft else "AutoModelForSeq2SeqLM"
    package = "peft" if params.peft else "transformers"
    hyper = {k: params.redacted_dict()[k] for k in ("lr", "epochs", "batch_size", "gradient_accumulation",
             "optimizer", "scheduler", "max_seq_length", "max_target_length", "mixed_precision", "peft")}  # fmt: skip
    hyper_lines = "\n".join(f"- {k}: {v}" for k, v in hyper.items())
    base = base_model if not Path(base_model).exists() else params.model
    return f"""---
library_name: {package}
base_model: {base}
pipeline_tag: text2text-generation
tags:
- seq2seq
- seq2seq-job
---

# {Path(params.project_name).name}

Fine-tuned from `{base}` on `{params.data_path}` with seq2seq-job{" (LoRA adapter)" if params.peft else ""}.

## Evaluation ({params.valid_split or "no validation split"})

| metric | value |
|---|---|
{table}

## Use it

```python
from {package} import {loader}
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")
model = {loader}.from_pretrained("PATH_OR_REPO")
inputs = tokenizer({params.source_prefix!r} + "your text", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens={params.resolved_generation_max_length})[0],
                       skip_special_tokens=True))
```

## Training

{hyper_lines}
- train samples/s: {metrics.get("train_samples_per_second", "n/a")}
"""
