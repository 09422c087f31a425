"""What preparing 1,000,000 rows costs: our load + tokenize (what ``validate`` runs) vs. a plain load_dataset + map.

Short pairs (inputs of 8-30 words, targets of 3-8) in one CSV, tokenized with the builtin T5 tokenizer (a
sentencepiece unigram trained on the words). Each setup runs in its own process with its own datasets cache
(so none reuses another's CSV conversion) and reports wall seconds and peak resident memory:

  plain           load_dataset("csv") + one batched, truncating tokenizer map (run_summarization.py's way)
  ours            job.data.load_data + job.preprocess.tokenize_data: one untruncated pass that also yields the
                  length statistics, workers from the usable CPUs (job.cpu), written to the token cache
  ours_1_worker   the same with num_proc=1
  ours_rerun      ``ours`` again on its warm caches: what a rerun, or another rank of the node, pays
  before          (with --before PATH: a checkout of the job before this change) its load + tokenize, which
                  tokenized every row twice

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/prepare_data.py                 # 1,000,000 rows
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/prepare_data.py --rows 200000 --before /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import WORDS

SETUPS = ("plain", "ours", "ours_1_worker", "ours_rerun")


def write_rows(path: Path, rows: int) -> None:
    import csv

    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "target"])
        for _ in range(rows):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
            writer.writerow([" ".join(words), " ".join(words[: rng.randint(3, 8)])])


def child(setup: str, work: Path) -> dict[str, float]:
    """One setup in this process: its wall seconds (imports excluded) and peak memory."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    started = time.perf_counter()
    if setup == "plain":
        from datasets import load_dataset

        raw = load_dataset("csv", data_files={"train": str(work / "data" / "train.csv")})

        def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
            enc = tokenizer(batch["text"], max_length=128, truncation=True)
            enc["labels"] = tokenizer(text_target=batch["target"], max_length=128, truncation=True)["input_ids"]
            return enc

        rows = len(raw.map(encode, batched=True, remove_columns=["text", "target"])["train"])
    else:
        from job.context import read_context
        from job.data import load_data
        from job.preprocess import tokenize_data

        data = load_data(data_path=str(work / "data"))
        if setup == "before":  # its default: no worker processes
            workers = None
        else:
            workers = 1 if setup == "ours_1_worker" else read_context().cpu.tokenize_workers(len(data.train))
        tokens = tokenize_data(data, tokenizer, max_seq_length=128, max_target_length=128, num_proc=workers)
        rows = len(tokens.train)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "rows": rows,
        "peak_host_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(setup: str, work: Path, cache: Path, *, pythonpath: str) -> dict[str, float]:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": pythonpath, "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, __file__, "--setup", setup, "--work", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{setup} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, help="a checkout of the job before this change, to time it too")
    parser.add_argument("--setup", choices=[*SETUPS, "before"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        print(json.dumps(child("ours" if args.setup == "ours_rerun" else args.setup, args.work)))
        return
    from job.builtin_models import build_builtin_model

    here = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        write_rows(work / "data" / "train.csv", args.rows)
        rng = random.Random(1)
        texts = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(500)]
        build_builtin_model("t5-tiny", texts=texts, out_dir=work / "tokenizer", seed=0)
        results: dict[str, object] = {"rows": args.rows, "cpu_count": os.cpu_count()}
        bench = str(Path(__file__).resolve().parent)
        for setup in SETUPS:
            cache = work / ("cache-ours" if setup.startswith("ours") and setup != "ours_1_worker" else f"cache-{setup}")
            results[setup] = run(setup, work, cache, pythonpath=f"{here}:{bench}")
        if args.before:
            results["before"] = run("before", work, work / "cache-before", pythonpath=f"{args.before}:{bench}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
