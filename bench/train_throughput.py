"""Throughput benchmark: our defaults vs. the plain setup of transformers' run_summarization.py.

A fixed synthetic workload with inputs of very different lengths (10–200 words) is trained once with
``job.pipeline.train`` (our defaults: length-grouped batches, length-sorted evaluation) and once with a plain
``Seq2SeqTrainer`` set up the way ``run_summarization.py`` sets it up (random sampler, per-batch dynamic
padding), at the same hyperparameters, on the same model and data. Each setup runs in its own process so peak
memory is measured separately. Prints one JSON object with samples/s, non-padding tokens/s, eval time, peak
memory, final quality and the ratios.

    python bench/train_throughput.py                  # defaults: 2000 rows, T5 d_model 256, 4+4 layers, batch 16
    python bench/train_throughput.py --lengths uniform  # every length from 10 to 200 words equally likely
    python bench/train_throughput.py --rows 4000 --batch-size 32 --mixed-precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WORD_LINES = (
    "market report city river council school budget energy water storm police health train bridge festival",
    "museum farmer harvest election court hospital teacher student science music theatre football weather",
    "company profit worker strike airport road village mountain forest ocean island north south east west",
    "morning evening monday friday summer winter new old big small red green local national minister mayor",
)
WORDS = " ".join(_WORD_LINES).split()


def input_words(rng: random.Random, lengths: str) -> int:
    """How many words one input has, 10–200.

    ``skewed`` (default): log-normal with a median of 45 words, cut to 10–200 — the long right tail of real text
    corpora (news articles, dialogues, reviews: most rows short, a few long). ``uniform``: every length equally
    likely, the mildest case for padding (a random batch of 16 is padded to ~1.8× its mean length).
    """
    if lengths == "uniform":
        return rng.randint(10, 200)
    return min(200, max(10, round(rng.lognormvariate(math.log(45), 0.7))))


def make_workload(rows: int, seed: int, lengths: str = "skewed") -> list[dict[str, str]]:
    """Inputs of 10–200 words, targets = the first 3–12 content words: learnable, variable length."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        n = input_words(rng, lengths)
        text = " ".join(rng.choice(WORDS) for _ in range(n))
        target = " ".join(text.split()[: rng.randint(3, 12)])
        out.append({"text": text, "target": target})
    return out


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write train/validation CSVs and a random-init T5 (d_model, layers from args) with a trained tokenizer."""
    import csv

    from transformers import AutoModelForSeq2SeqLM, T5Config

    from job.builtin_models import build_builtin_model

    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    rows = make_workload(args.rows + args.eval_rows, seed=0, lengths=args.lengths)
    for name, part in (("train", rows[: args.rows]), ("validation", rows[args.rows :])):
        with (data_dir / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "target"])
            writer.writeheader()
            writer.writerows(part)
    model_dir = work / "model"
    texts = [r["text"] for r in rows] + [r["target"] for r in rows]
    build_builtin_model("t5-tiny", texts=texts, out_dir=model_dir, seed=0)
    config = T5Config.from_pretrained(model_dir)
    config.update(
        {
            "d_model": args.d_model,
            "d_ff": 4 * args.d_model,
            "d_kv": args.d_model // 4,
            "num_heads": 4,
            "num_layers": args.layers,
            "num_decoder_layers": args.layers,
        }
    )
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(model_dir)
    return data_dir, model_dir


def run_ours(data_dir: Path, model_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from job.params import Seq2SeqParams
    from job.pipeline import train

    params = Seq2SeqParams(
        data_path=str(data_dir),
        model=str(model_dir),
        valid_split="validation",
        project_name=str(out),
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        max_target_length=args.max_target_length,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        eval_strategy="no",
        early_stopping_patience=0,
        logging_steps=50,
    )
    metrics = train(params)
    same_model = evaluate_with_our_pipeline(out.parent / "out-plain" / "final", data_dir, params)
    return {
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_tokens_per_second": metrics["train_tokens_per_second"],
        "train_runtime": metrics["train_runtime"],
        "train_loss": metrics["train_loss"],
        "eval_runtime": metrics["eval_runtime"],
        "eval_loss": metrics["eval_loss"],
        "eval_rougeL": metrics["eval_rougeL"],
        "eval_gen_len": metrics["eval_gen_len"],
        # Generation time depends on how long each model's outputs are, so eval speed is compared on the
        # same weights: the plain run's final model, evaluated through our pipeline (length-sorted rows).
        "eval_runtime_on_plain_model": same_model["eval_runtime"],
        "eval_gen_len_on_plain_model": same_model["eval_gen_len"],
        "eval_rougeL_on_plain_model": same_model["eval_rougeL"],
    }


def evaluate_with_our_pipeline(model_dir: Path, data_dir: Path, params: Any) -> dict[str, float]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from job.data import load_data
    from job.preprocess import tokenize_data
    from job.training.build import build_trainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    data = load_data(data_path=str(data_dir), valid_split="validation")
    tokens = tokenize_data(
        data,
        tokenizer,
        max_seq_length=params.max_seq_length,
        max_target_length=params.max_target_length,
        sort_valid_by_length=True,
    )
    return build_trainer(params=params, model=model, tokenizer=tokenizer, data=tokens).evaluate()


def run_plain(data_dir: Path, model_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The setup of transformers' examples/pytorch/summarization/run_summarization.py, written out directly."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        set_seed,
    )

    from job.metrics import build_compute_metrics

    set_seed(args.seed)
    raw = load_dataset("csv", data_files={s: str(data_dir / f"{s}.csv") for s in ("train", "validation")})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)

    def preprocess(batch: dict[str, list[str]]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], max_length=args.max_seq_length, truncation=True)
        enc["labels"] = tokenizer(text_target=batch["target"], max_length=args.max_target_length, truncation=True)[
            "input_ids"
        ]
        return enc

    tokenized = raw.map(preprocess, batched=True, remove_columns=["text", "target"])
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        seed=args.seed,
        warmup_steps=0.1,
        bf16=args.mixed_precision == "bf16",
        fp16=args.mixed_precision == "fp16",
        predict_with_generate=True,
        generation_max_length=args.max_target_length,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8 if args.mixed_precision else None
        ),
    )
    result = trainer.train().metrics
    tokens = sum(len(x) for x in tokenized["train"]["input_ids"]) + sum(len(x) for x in tokenized["train"]["labels"])
    evaluation = trainer.evaluate()
    trainer.save_model(str(out / "final"))
    return {
        "train_samples_per_second": result["train_samples_per_second"],
        "train_tokens_per_second": round(tokens * args.epochs / result["train_runtime"], 2),
        "train_runtime": result["train_runtime"],
        "train_loss": result["train_loss"],
        "eval_runtime": evaluation["eval_runtime"],
        "eval_loss": evaluation["eval_loss"],
        "eval_rougeL": evaluation["eval_rougeL"],
        "eval_gen_len": evaluation["eval_gen_len"],
    }


def child(args: argparse.Namespace) -> None:
    """Run one setup in this process and print its figures as JSON on the last line."""
    import torch

    work = Path(args.work)
    runner = run_ours if args.setup == "ours" else run_plain
    started = time.perf_counter()
    figures = runner(work / "data", work / "model", work / f"out-{args.setup}", args)
    figures["wall_seconds"] = round(time.perf_counter() - started, 2)
    figures["peak_host_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if torch.cuda.is_available():
        figures["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--lengths", choices=["skewed", "uniform"], default="skewed", help="input length distribution")
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--max-target-length", type=int, default=32)
    parser.add_argument("--mixed-precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--setup", choices=["ours", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        child(args)
        return

    import torch

    if not torch.cuda.is_available():  # else DeepSpeed, imported by accelerate, prints a warning into the JSON
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        prepare(work, args)
        results: dict[str, Any] = {}
        passthrough = [a for a in sys.argv[1:]]
        for setup in ("plain", "ours"):
            proc = subprocess.run(
                [sys.executable, __file__, *passthrough, "--setup", setup, "--work", str(work)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[setup] = json.loads(proc.stdout.strip().splitlines()[-1])
    report = {
        "workload": {
            k: getattr(args, k)
            for k in (
                "rows",
                "lengths",
                "eval_rows",
                "d_model",
                "layers",
                "batch_size",
                "epochs",
                "lr",
                "max_seq_length",
                "max_target_length",
                "mixed_precision",
            )
        },
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        **results,
        "speedup_samples_per_second": round(
            results["ours"]["train_samples_per_second"] / results["plain"]["train_samples_per_second"], 2
        ),
        "speedup_tokens_per_second": round(
            results["ours"]["train_tokens_per_second"] / results["plain"]["train_tokens_per_second"], 2
        ),
        "eval_time_ratio_same_model_ours_over_plain": round(
            results["ours"]["eval_runtime_on_plain_model"] / results["plain"]["eval_runtime"], 2
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
