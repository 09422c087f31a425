"""GPU figures: a flan-t5-base-shaped model trained in bf16 with our defaults and with the plain setup.

Random-init T5 v1.1 / FLAN-T5-base shape (d_model 768, d_ff 2048 gated-GELU, 12 heads, 12 + 12 layers,
32,128-token vocabulary, untied head) on synthetic text skewed like real documents (log-normal, median 150 words,
inputs truncated at 512 tokens, targets of 20-60 words up to 128 tokens). Each side trains ``--steps``
optimizer steps at batch ``--batch-size``; the clock runs from the end of step ``--warmup`` to the last step
(synchronised), over the real (non-padding) tokens fed in between. Then both sides generate for the same
validation rows with the plain side's final weights (plain: eval batch 8, TrainingArguments' default; ours:
our default eval batch, sized by free memory). Prints a table and one JSON object.

MFU = 6 × parameters × real tokens/s ÷ the GPU's dense bf16 peak (``--peak-tflops``; the device entry
measured ~790 TFLOP/s on an 8192³ bf16 matmul on an H200; 989 is the datasheet figure). Each token of an
encoder-decoder runs through the encoder or the decoder, not both, so this is the issue's simple count; the
JSON also gives ``mfu_padded`` (the same over every token slot computed, padding included).

    bash bench/gpu.sh run WHEELS_DIR         # what the GPU machine runs (see bench/gpu.sh)
    python3 bench/gpu_bench.py --steps 300 --batch-size 32
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (`import job`) and bench/ (train_throughput)


def make_rows(count: int, seed: int) -> list[dict[str, str]]:
    from train_throughput import WORDS

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(min(700, max(20, round(rng.lognormvariate(math.log(150), 0.8)))))]
        rows.append({"text": " ".join(words), "target": " ".join(words[: rng.randint(20, 60)])})
    return rows


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """CSV splits and a random-init flan-t5-base-shaped model with a tokenizer trained on the rows."""
    import csv

    from transformers import T5Config, T5ForConditionalGeneration

    from job.builtin_models import build_builtin_model

    rows = make_rows(args.rows + args.eval_rows, seed=0)
    data = work / "data"
    data.mkdir(parents=True)
    for name, part in (("train", rows[: args.rows]), ("validation", rows[args.rows :])):
        with (data / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "target"])
            writer.writeheader()
            writer.writerows(part)
    model = work / "model"
    build_builtin_model("t5-tiny", texts=[r["text"] for r in rows[:2000]], out_dir=model, seed=0)
    config = T5Config.from_pretrained(model)
    config.update(
        {
            "vocab_size": 32128,
            "d_model": 768,
            "d_ff": 2048,
            "d_kv": 64,
            "num_heads": 12,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "feed_forward_proj": "gated-gelu",
            "dropout_rate": 0.1,
        }
    )
    if args.smoke:  # a CPU check of this script itself: the same code on a tiny model
        config.update({"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2})
        config.update({"num_decoder_layers": 2, "vocab_size": 2048})
    T5ForConditionalGeneration(config).save_pretrained(model)
    return data, model


def step_clock(args: argparse.Namespace, trainer_ref: list[Any]) -> Any:
    """A callback timing steps warmup+1 … steps (CUDA-synchronised at both ends) over the real tokens fed."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        start = end = 0.0
        tokens = slots = 0

        def on_step_end(self, targs: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step in (args.warmup, args.steps):
                _synchronize()
                padding = trainer_ref[0].padding
                if state.global_step == args.warmup:
                    self.start, self.tokens, self.slots = time.perf_counter(), -padding.real, -padding.slots
                else:
                    self.end = time.perf_counter()
                    self.tokens += padding.real
                    self.slots += padding.slots

    return StepClock()


def figures(clock: Any, parameters: int, args: argparse.Namespace, batch_rows: int) -> dict[str, Any]:
    seconds = clock.end - clock.start
    steps = args.steps - args.warmup
    tokens_per_second = clock.tokens / seconds
    peak = args.peak_tflops * 1e12
    return {
        "seconds": round(seconds, 2),
        "samples_per_second": round(steps * batch_rows / seconds, 1),
        "tokens_per_second": round(tokens_per_second),
        "padding_share": round(1 - clock.tokens / clock.slots, 4),
        "mfu": round(6 * parameters * tokens_per_second / peak, 4),
        "mfu_padded": round(6 * parameters * clock.slots / seconds / peak, 4),
        "peak_gpu_memory_gb": round(_peak_memory() / 2**30, 2),
    }


def matmul_parameters(model: Any) -> int:
    """Parameters, the LM head counted even when it shares the embedding's weights (its matmul runs anyway):
    247.6M for the flan-t5-base shape, what the checkpoint itself holds (it has an untied head)."""
    unique = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight
    return unique + (head.numel() if head is model.get_input_embeddings().weight else 0)


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def run_ours(data: Path, model_dir: Path, work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Our defaults through the job's own steps (load, tokenize, model, build_trainer), a step clock added."""
    from job.context import read_context
    from job.data import load_data
    from job.modeling import load_model, load_tokenizer
    from job.params import Seq2SeqParams
    from job.preprocess import tokenize_data

    params = Seq2SeqParams(
        data_path=str(data),
        model=str(model_dir),
        valid_split="validation",
        project_name=str(work / "ours"),
        batch_size=args.batch_size,
        max_steps=args.steps,
        lr=1e-4,
        max_seq_length=512,
        max_target_length=128,
        mixed_precision=args.precision,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=0,
        logging_steps=50,
        torch_compile=args.compile,
    )
    cpu = read_context().cpu
    tokenizer = load_tokenizer(str(model_dir), params)
    splits = load_data(data_path=str(data), valid_split="validation")
    workers = cpu.tokenize_workers(len(splits.train))
    tokens = tokenize_data(splits, tokenizer, max_seq_length=512, max_target_length=128, num_proc=workers)
    model = load_model(str(model_dir), params, tokenizer)
    return _train(params, model, tokenizer, tokens, args, cpus=cpu.usable)


def _train(params: Any, model: Any, tokenizer: Any, tokens: Any, args: argparse.Namespace, *, cpus: int) -> tuple:
    from job.training.build import build_trainer

    ref: list[Any] = []
    clock = step_clock(args, ref)
    trainer = build_trainer(
        params=params, model=model, tokenizer=tokenizer, data=tokens, callbacks=[clock], cpus_per_process=cpus
    )
    ref.append(trainer)
    trainer.train()
    parameters = matmul_parameters(model)
    out = figures(clock, parameters, args, args.batch_size)
    out.update(optimizer=trainer.args.optim, eval_batch_size=trainer.args.eval_batch_size, parameters=parameters)
    return out, trainer


def run_plain(data: Path, model_dir: Path, work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """run_summarization.py's setup (bench/train_throughput.py's plain trainer) in bf16, a step clock added."""
    import train_throughput as tt
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    setup = argparse.Namespace(
        lr=1e-4,
        epochs=1,
        batch_size=args.batch_size,
        seed=42,
        warmup=0.0,
        mixed_precision=args.precision,
        max_seq_length=512,
        max_target_length=128,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenized = tt.plain_data(data.parent, setup, tokenizer)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    ref: list[Any] = []
    clock = step_clock(args, ref)
    overrides = {"max_steps": args.steps, "eval_strategy": "no", "per_device_eval_batch_size": 8}
    trainer = tt.plain_trainer(setup, model, tokenizer, tokenized, work / "plain", **overrides)
    trainer.add_callback(clock)
    ref.append(trainer)
    trainer.train()
    parameters = matmul_parameters(model)
    out = figures(clock, parameters, args, args.batch_size)
    out.update(optimizer=trainer.args.optim, eval_batch_size=8, parameters=parameters)
    return out, trainer


def eval_seconds(trainer: Any) -> dict[str, Any]:
    """Generation over the whole validation split (the same rows for both sides; ours sorts them by length)."""
    _synchronize()
    started = time.perf_counter()
    metrics = trainer.evaluate()
    _synchronize()
    return {"seconds": round(time.perf_counter() - started, 2), "gen_len": round(metrics["eval_gen_len"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=14_000)
    parser.add_argument("--eval-rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="steps before the clock starts")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--compile", action="store_true", help="also torch.compile our side")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few steps, CPU allowed: check the script")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        sys.exit("gpu_bench: no CUDA GPU visible (torch.cuda.is_available() is False)")
    if args.smoke:
        args.rows, args.eval_rows, args.batch_size, args.steps, args.warmup = 160, 16, 8, 6, 2
    args.precision = "bf16" if cuda else None
    device = torch.cuda.get_device_name(0) if cuda else "cpu (smoke)"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report: dict[str, Any] = {"device": device, "torch": torch.__version__, "args": settings}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        work = Path(tmp)
        data, model_dir = prepare(work, args)
        weights: dict[str, Any] = {}
        for side, run in (("plain", run_plain), ("ours", run_ours)):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            report[side], trainer = run(data, model_dir, work, args)
            if side == "plain":
                report["eval_plain_batch_8"] = eval_seconds(trainer)
                weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
            else:
                trainer.model.load_state_dict(weights)  # the plain run's weights: the same outputs to generate
                report["eval_ours"] = eval_seconds(trainer)
            del trainer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    report["ours_over_plain_tokens_per_second"] = round(
        report["ours"]["tokens_per_second"] / report["plain"]["tokens_per_second"], 2
    )
    report["eval_time_ours_over_plain"] = round(
        report["eval_ours"]["seconds"] / report["eval_plain_batch_8"]["seconds"], 3
    )
    for side, evaluation in (("plain", "eval_plain_batch_8"), ("ours", "eval_ours")):
        r = report[side]
        print(
            f"{side:>6}: {r['tokens_per_second']:>9} tok/s  MFU {r['mfu']:.1%}  padding {r['padding_share']:.1%}  "
            f"peak {r['peak_gpu_memory_gb']} GB  eval {report[evaluation]['seconds']} s"
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
