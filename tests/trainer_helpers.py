"""A real Seq2SeqTrainer on a tiny local model, built as job.train builds it, with extra callbacks to test.

trainer = tiny_trainer(model_dir=tiny_t5_dir, data_dir=task_dir, out_dir=tmp_path / "run", callbacks=[cb])
result = trainer.train(); final = trainer.evaluate()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A run of a few seconds: 64 rows, batch 16 → 4 steps per epoch, a log line every step.
FAST = dict(
    valid_split="validation",
    batch_size=16,
    lr=3e-3,
    max_seq_length=32,
    max_target_length=8,
    seed=0,
    early_stopping_patience=0,
    warmup_ratio=0.0,
    logging_steps=1,
    epochs=2,
    save_strategy="no",
    load_best_model_at_end=False,
)


def tiny_trainer(*, model_dir: Path, data_dir: Path, out_dir: Path, callbacks: list[Any], **overrides: Any) -> Any:
    from job.data import load_data
    from job.modeling import load_model, load_tokenizer
    from job.params import Seq2SeqParams
    from job.preprocess import tokenize_data
    from job.training.build import build_trainer

    params = Seq2SeqParams(
        data_path=str(data_dir), model=str(model_dir), project_name=str(out_dir), **{**FAST, **overrides}
    )
    data = load_data(data_path=str(data_dir), valid_split=params.valid_split)
    tokenizer = load_tokenizer(str(model_dir), params)
    tokens = tokenize_data(
        data,
        tokenizer,
        source_prefix=params.source_prefix,
        max_seq_length=params.max_seq_length,
        max_target_length=params.max_target_length,
    )
    model = load_model(str(model_dir), params, tokenizer)
    return build_trainer(params=params, model=model, tokenizer=tokenizer, data=tokens, callbacks=callbacks)
