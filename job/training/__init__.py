"""The training step of the job, built from transformers' Seq2SeqTrainer.

* :mod:`~job.training.args` — Seq2SeqTrainingArguments from the params (steps, logging, evaluation, saving).
* :mod:`~job.training.build` — the collator, callbacks and the trainer itself.
* :mod:`~job.training.loss` — the exact token-mean loss under DDP and gradient accumulation.
* :mod:`~job.training.sampling` — a batch order that a resumed run reproduces.
* :mod:`~job.training.callbacks` — progress lines, evaluation and checkpoint hooks.
* :mod:`~job.training.preemption` — SIGTERM/SIGINT → checkpoint at the next step → exit 143.
* :mod:`~job.training.deepspeed` — ZeRO presets, checks against the params, the CPU state fix.
* :mod:`~job.training.collectives` — barrier and "did any rank…" across processes.
"""
