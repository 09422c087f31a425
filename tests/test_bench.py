"""The benchmarks still run and report what they promise: each one on a tiny setting, as a real process.

Figures are not checked for speed (a benchmark prints them; a test must not time them), only for shape and for
the facts that hold at any size: the micro-batches feed less padding than random batches, every side reports
its quality after each epoch, and the ratios are there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 600) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the report: indented JSON, printed last
    return json.loads("\n".join(lines[start:]))


def test_train_throughput_reports_speed_quality_and_noise_for_every_side() -> None:
    report = run_bench(
        "train_throughput.py",
        *("--workload", "correlated", "--rows", "48", "--eval-rows", "8", "--d-model", "32", "--layers", "1"),
        *("--batch-size", "8", "--epochs", "2", "--max-seq-length", "96", "--max-target-length", "8"),
        *("--sides", "plain,ours,grouped,plain_reseeded"),
    )
    for side in ("plain", "ours", "grouped", "plain_reseeded"):
        figures = report[side]
        assert figures["train_samples_per_second"] > 0 and figures["peak_host_memory_mb"] > 0
        assert [e["epoch"] for e in figures["quality_per_epoch"]] == [1.0, 2.0]
        assert {"eval_loss", "eval_rougeL"} <= set(figures["quality_per_epoch"][0])
    assert report["ours"]["padding_share"] < report["plain"]["padding_share"]
    for side in ("ours", "grouped", "plain_reseeded"):
        assert report[f"{side}_over_plain_samples_per_second"] > 0
        assert [g["epoch"] for g in report[f"{side}_minus_plain_per_epoch"]] == [1.0, 2.0]
    assert report["eval"]["ours_defaults"]["eval_rougeL"] == report["eval"]["plain_eval_batch_2"]["eval_rougeL"]
    assert report["eval_time_ours_over_plain_batch_2_same_weights"] > 0


def test_prepare_data_times_every_setup_on_the_same_rows() -> None:
    report = run_bench("prepare_data.py", "--rows", "3000")
    for setup in ("plain", "ours", "ours_1_worker", "ours_rerun"):
        assert report[setup]["rows"] == 3000 and report[setup]["seconds"] > 0, setup


def test_gpu_bench_smoke_runs_its_code_on_cpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run bench/gpu.sh for real")
    report = run_bench("gpu_bench.py", "--smoke")
    assert {"ours", "plain"} <= set(report), report
