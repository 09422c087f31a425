"""Throughput and quality benchmark: our defaults vs. the plain setup of transformers' run_summarization.py.

A synthetic workload is trained with ``job.pipeline.train`` (our defaults: random rows per step, run as
length-sorted micro-batches; length-sorted evaluation with its own batch size) and with a plain
``Seq2SeqTrainer`` set up the way ``run_summarization.py`` sets it up (random sampler, per-batch dynamic
padding), at the same hyperparameters, on the same model and data; optionally also with the old default,
the Trainer's length-grouped batches (``grouped``), and the plain setup again with the next seed
(``plain_reseeded``: another batch order and dropout, the same initial weights), whose gap to ``plain`` is the
noise that any other side's gap is to be read against. Each side runs in its own process (its own peak memory),
one after the other, evaluating after every epoch. Then the plain run's final weights are evaluated three ways
— plain at eval batch 2 (our default ``batch_size``) and 8 (TrainingArguments' default), and through our
pipeline at our defaults — since generation time depends on the weights. Prints one JSON object.

Workloads (inputs of 10–200 words; ``--workload``):
  skewed      log-normal lengths, median 45 words (most rows short, a few long, like real text); target = the
              first 3–12 words. The default.
  uniform     every length from 10 to 200 words equally likely (the mildest case for padding).
  correlated  skewed lengths, and the kind of example goes with its length: filler words with 1–4 time and
              1–4 place words among them; inputs of up to 45 words ask for their time words, longer ones
              for their place words, in order. Length-grouped batches hold one kind at a time; random
              ones mix them.

    python bench/train_throughput.py                                   # skewed, 1 epoch: speed
    python bench/train_throughput.py --workload correlated --epochs 5 --lr 3e-3 \
        --sides plain,ours,grouped,plain_reseeded
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
TIMES = {"morning", "evening", "monday", "friday", "summer", "winter"}
PLACES = {"city", "river", "school", "airport", "village", "mountain", "forest", "ocean", "island", "bridge"}
SHORT = 45  # correlated workload: inputs of up to this many words are the "time" kind
RECORDED = ("eval_loss", "eval_rougeL", "eval_gen_len")


def input_words(rng: random.Random, lengths: str) -> int:
    """How many words one input has, 10–200: log-normal (median 45, cut to 10–200) or uniform."""
    if lengths == "uniform":
        return rng.randint(10, 200)
    return min(200, max(10, round(rng.lognormvariate(math.log(45), 0.7))))


FILLERS = [w for w in WORDS if w not in TIMES and w not in PLACES]


def make_workload(rows: int, seed: int, workload: str = "skewed") -> list[dict[str, str]]:
    """``rows`` input/target pairs of the workload (see the module doc)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        length = input_words(rng, "uniform" if workload == "uniform" else "skewed")
        if workload == "correlated":
            text, target = correlated_row(rng, length)
        else:
            words = [rng.choice(WORDS) for _ in range(length)]
            text, target = words, words[: rng.randint(3, 12)]
        out.append({"text": " ".join(text), "target": " ".join(target)})
    return out


def correlated_row(rng: random.Random, length: int) -> tuple[list[str], list[str]]:
    """Filler words with 1-4 time and 1-4 place words put in at random places; the target is the time words
    (in their order) when the input has up to SHORT words, else the place words: its length decides its kind."""
    times = [rng.choice(sorted(TIMES)) for _ in range(rng.randint(1, 4))]
    places = [rng.choice(sorted(PLACES)) for _ in range(rng.randint(1, 4))]
    words = [rng.choice(FILLERS) for _ in range(max(0, length - len(times) - len(places)))]
    for word in times + places:
        words.insert(rng.randint(0, len(words)), word)
    wanted = TIMES if len(words) <= SHORT else PLACES
    return words, [w for w in words if w in wanted]


def prepare(work: Path, args: argparse.Namespace) -> None:
    """Write train/validation CSVs and a random-init T5 (d_model, layers from args) with a trained tokenizer."""
    import csv

    from transformers import AutoModelForSeq2SeqLM, T5Config

    from job.builtin_models import build_builtin_model

    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    rows = make_workload(args.rows + args.eval_rows, seed=0, workload=args.workload)
    for name, part in (("train", rows[: args.rows]), ("validation", rows[args.rows :])):
        with (data_dir / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "target"])
            writer.writeheader()
            writer.writerows(part)
    model_dir = work / "model"
    texts = [r["text"] for r in rows] + [r["target"] for r in rows]
    build_builtin_model("t5-tiny", texts=texts, out_dir=model_dir, seed=0)
    config = T5Config.from_pretrained(model_dir)
    d_model, layers = args.d_model, args.layers
    config.update({"d_model": d_model, "d_ff": 4 * d_model, "d_kv": d_model // 4, "num_heads": 4})
    config.update({"num_layers": layers, "num_decoder_layers": layers})
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(model_dir)


def our_params(data_dir: Path, model_dir: Path, out: Path, args: argparse.Namespace, **extra: Any) -> Any:
    from job.params import Seq2SeqParams

    settings: dict[str, Any] = {
        "data_path": str(data_dir),
        "model": str(model_dir),
        "valid_split": "validation",
        "project_name": str(out),
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "max_target_length": args.max_target_length,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
        "warmup_ratio": args.warmup,
        "early_stopping_patience": 0,
        "load_best_model_at_end": False,
        "save_strategy": "no",
        "logging_steps": 50,
    }
    return Seq2SeqParams(**{**settings, **extra})


def run_ours(work: Path, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Our pipeline, end to end (``extra``: other params, e.g. the old group_by_length default)."""
    from job.pipeline import train

    params = our_params(work / "data", work / "model", work / f"out-{args.setup}", args, **extra)
    metrics = train(params)
    tokens = metrics["data"]["tokens"]["train"]["non_padding_tokens"]
    return figures(
        runtime=metrics["train_runtime"],
        evaluations=metrics["evaluations"],
        rows=args.rows,
        epochs=args.epochs,
        tokens_per_epoch=tokens,
        padding_share=metrics["train_padding_share"],
        train_loss=metrics["train_loss"],
    )


def figures(
    *,
    runtime: float,
    evaluations: list[dict[str, Any]],
    rows: int,
    epochs: float,
    tokens_per_epoch: int,
    padding_share: float | None,
    train_loss: float,
) -> dict[str, Any]:
    """Speed over the training time alone (the Trainer's train_runtime less its evaluations), quality per epoch."""
    train_seconds = runtime - sum(e.get("eval_runtime", 0.0) for e in evaluations)
    return {
        "train_seconds": round(train_seconds, 2),
        "train_samples_per_second": round(rows * epochs / train_seconds, 2),
        "train_tokens_per_second": round(tokens_per_epoch * epochs / train_seconds, 2),
        "padding_share": padding_share,
        "train_loss": round(train_loss, 4),
        "quality_per_epoch": [
            {"epoch": round(e["epoch"], 2), **{k: round(e[k], 4) for k in RECORDED if k in e}} for e in evaluations
        ],
    }


def plain_trainer(args: argparse.Namespace, model: Any, tokenizer: Any, tokenized: Any, out: Path, **kw: Any) -> Any:
    """The Seq2SeqTrainer of run_summarization.py, written out directly (``kw``: TrainingArguments overrides)."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from job.metrics import build_compute_metrics
    from job.training.eval_loss import TokenMeanEvalLoss
    from job.training.microbatches import PaddingCount

    # counts the padding the model is fed in training, and measures eval_loss (the token mean), as ours does
    class CountingTrainer(TokenMeanEvalLoss, Seq2SeqTrainer):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.padding = PaddingCount()

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            self.padding.add(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    settings: dict[str, Any] = {
        "output_dir": str(out),
        "learning_rate": args.lr,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size,
        "seed": args.seed,
        "warmup_steps": args.warmup,
        "bf16": args.mixed_precision == "bf16",
        "fp16": args.mixed_precision == "fp16",
        "predict_with_generate": True,
        "generation_max_length": args.max_target_length,
        "eval_strategy": "epoch",
        "logging_steps": 50,
        "save_strategy": "no",
        "report_to": "none",
        **kw,
    }
    pad = 8 if args.mixed_precision else None
    return CountingTrainer(
        model=model,
        args=Seq2SeqTrainingArguments(**settings),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad),
    )


def plain_data(work: Path, args: argparse.Namespace, tokenizer: Any) -> Any:
    from datasets import load_dataset

    files = {s: str(work / "data" / f"{s}.csv") for s in ("train", "validation")}
    raw = load_dataset("csv", data_files=files)

    def preprocess(batch: dict[str, list[str]]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], max_length=args.max_seq_length, truncation=True)
        targets = tokenizer(text_target=batch["target"], max_length=args.max_target_length, truncation=True)
        enc["labels"] = targets["input_ids"]
        return enc

    return raw.map(preprocess, batched=True, remove_columns=["text", "target"])


def run_plain(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, set_seed

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    tokenized = plain_data(work, args, tokenizer)
    trainer = plain_trainer(args, AutoModelForSeq2SeqLM.from_pretrained(work / "model"), tokenizer, tokenized, work)
    result = trainer.train().metrics
    trainer.save_model(str(work / f"out-{args.setup}" / "final"))
    train = tokenized["train"]
    tokens = sum(len(x) for x in train["input_ids"]) + sum(len(x) for x in train["labels"])
    evaluations = [e for e in trainer.state.log_history if "eval_loss" in e]
    return figures(
        runtime=result["train_runtime"],
        evaluations=evaluations,
        rows=args.rows,
        epochs=args.epochs,
        tokens_per_epoch=tokens,
        padding_share=trainer.padding.share,
        train_loss=result["train_loss"],
    )


def run_eval(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The plain run's final weights, evaluated by plain (eval batch 2 and 8) and by our pipeline (defaults)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from job.data import load_data
    from job.preprocess import tokenize_data
    from job.training.build import build_trainer

    final = work / "out-plain" / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    out: dict[str, Any] = {}
    tokenized = plain_data(work, args, tokenizer)
    for batch in (2, 8):
        model = AutoModelForSeq2SeqLM.from_pretrained(final)
        trainer = plain_trainer(args, model, tokenizer, tokenized, work, per_device_eval_batch_size=batch)
        out[f"plain_eval_batch_{batch}"] = _eval_figures(trainer.evaluate())
    params = our_params(work / "data", final, work / "out-eval", args, batch_size=2)  # our default batch_size
    data = load_data(data_path=str(work / "data"), valid_split="validation")
    tokens = tokenize_data(
        data, tokenizer, max_seq_length=params.max_seq_length, max_target_length=params.max_target_length
    )
    model = AutoModelForSeq2SeqLM.from_pretrained(final)
    trainer = build_trainer(params=params, model=model, tokenizer=tokenizer, data=tokens)
    out["ours_defaults"] = {**_eval_figures(trainer.evaluate()), "eval_batch_size": trainer.args.eval_batch_size}
    return out


def _eval_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(metrics[k], 4) for k in ("eval_runtime", "eval_rougeL", "eval_gen_len")}


def child(args: argparse.Namespace) -> None:
    """Run one setup in this process and print its figures as JSON on the last line."""
    import torch

    work = Path(args.work)
    started = time.perf_counter()
    if args.setup == "plain":
        result = run_plain(work, args)
    elif args.setup == "plain_reseeded":  # the noise floor: plain again with another seed (order, dropout)
        args.seed += 1
        result = run_plain(work, args)
    elif args.setup == "eval":
        result = run_eval(work, args)
    elif args.setup == "grouped":  # the old default
        result = run_ours(work, args, group_by_length=True, microbatch_by_length=False)
    else:
        result = run_ours(work, args)
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result["peak_host_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if torch.cuda.is_available():
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["skewed", "uniform", "correlated"], default="skewed")
    parser.add_argument(
        "--sides", default="plain,ours", help="comma-separated: plain, ours, grouped, plain_reseeded (seed + 1)"
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=0.0, help="warmup ratio (both sides)")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--max-target-length", type=int, default=32)
    parser.add_argument("--mixed-precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-eval-comparison", action="store_true", help="skip the same-weights evaluation")
    parser.add_argument(
        "--setup", choices=["ours", "plain", "grouped", "plain_reseeded", "eval"], help=argparse.SUPPRESS
    )
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args()


def report(args: argparse.Namespace, results: dict[str, Any], device: str) -> dict[str, Any]:
    keys = ("workload", "rows", "eval_rows", "d_model", "layers", "batch_size", "epochs", "lr", "warmup")
    keys += ("max_seq_length", "max_target_length", "mixed_precision", "seed")
    out: dict[str, Any] = {"workload": {k: getattr(args, k) for k in keys}, "device": device, **results}
    plain = results.get("plain")
    for side in ("ours", "grouped", "plain_reseeded"):
        if plain and side in results:
            for what in ("samples", "tokens"):
                ratio = results[side][f"train_{what}_per_second"] / plain[f"train_{what}_per_second"]
                out[f"{side}_over_plain_{what}_per_second"] = round(ratio, 2)
            out[f"{side}_minus_plain_per_epoch"] = quality_gap(results[side], plain)
    if "eval" in results:
        ours = results["eval"]["ours_defaults"]["eval_runtime"]
        for batch in (2, 8):
            ratio = ours / results["eval"][f"plain_eval_batch_{batch}"]["eval_runtime"]
            out[f"eval_time_ours_over_plain_batch_{batch}_same_weights"] = round(ratio, 3)
    return out


def quality_gap(side: dict[str, Any], plain: dict[str, Any]) -> list[dict[str, float]]:
    """Per evaluation: the side's eval_loss and ROUGE-L minus plain's (plain_reseeded's gap is the noise)."""
    gaps = []
    for mine, theirs in zip(side["quality_per_epoch"], plain["quality_per_epoch"], strict=False):
        gap = {"epoch": mine["epoch"]}
        for key in ("eval_loss", "eval_rougeL"):
            if key in mine and key in theirs:
                gap[key] = round(mine[key] - theirs[key], 4)
        gaps.append(gap)
    return gaps


def main() -> None:
    args = parse_args()
    if args.setup:
        child(args)
        return
    import torch

    if not torch.cuda.is_available():  # else DeepSpeed, imported by accelerate, prints a warning into the JSON
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.no_eval_comparison and "plain" in sides:
        sides.append("eval")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        prepare(work, args)
        results: dict[str, Any] = {}
        for setup in sides:
            command = [sys.executable, __file__, *sys.argv[1:], "--setup", setup, "--work", str(work)]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{setup} failed:\n{proc.stderr[-4000:]}")
            results[setup] = json.loads(proc.stdout.strip().splitlines()[-1])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps(report(args, results, device), indent=2))


if __name__ == "__main__":
    main()
