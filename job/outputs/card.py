"""The model card (``README.md`` of the output folder): metadata, scores, how to load it, how it was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from job.params import Seq2SeqParams


def model_card(params: Seq2SeqParams, metrics: dict[str, Any], *, base_model: str) -> str:
    """A Hub-style README.md: metadata, the metrics table, how to load it, how it was trained."""
    rows = [(k, v) for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)]
    table = "\n".join(f"| {k.removeprefix('eval_')} | {v:.4g} |" for k, v in rows) or "| (no evaluation) | |"
    loader = "AutoPeftModelForSeq2SeqLM" if params.peft else "AutoModelForSeq2SeqLM"
    package = "peft" if params.peft else "transformers"
    names = (
        "lr",
        "epochs",
        "batch_size",
        "gradient_accumulation",
        "optimizer",
        "scheduler",
        "max_seq_length",
        "max_target_length",
        "mixed_precision",
        "peft",
    )
    hyper = {k: params.redacted_dict()[k] for k in names}
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
