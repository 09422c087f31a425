"""The demo trained under a CPU quota, like a pod's CPU limit: the job's thread choice vs. torch's default.

Each side runs ``seq2seq-job train --params examples/demo.json`` as its own process inside a fresh cgroup with
a CFS quota (v1 ``cpu.cfs_quota_us``, or v2 ``cpu.max``), one after the other, and reports the training time
from ``metrics.json``, the wall time of the whole run and the thread line the job logged:

  ours           OMP_NUM_THREADS unset: the job reads the quota (job.cpu) and picks its threads
  torch_default  OMP_NUM_THREADS = the host's cores: what torch picks by itself, counting the host, not the limit

Needs root and a writable cgroup file system (a development machine, a privileged container); elsewhere it says
so and exits 2. Prints one JSON object.

    sudo .venv/bin/python bench/cpu_quota.py                    # 0.5 CPU, like a 500m limit
    sudo .venv/bin/python bench/cpu_quota.py --cpus 1.5 --epochs 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class Cgroup:
    """A new cgroup with a CPU quota; processes started with :meth:`enter` as ``preexec_fn`` run inside it."""

    def __init__(self, name: str, cpus: float) -> None:
        quota = str(round(cpus * PERIOD_US))
        if (CGROUP / "cgroup.controllers").exists():  # v2: the parent must hand the cpu controller down
            self.folder = CGROUP / name
            self.folder.mkdir(exist_ok=True)
            (self.folder / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:  # v1
            self.folder = CGROUP / "cpu" / name
            self.folder.mkdir(exist_ok=True)
            (self.folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.folder / "cpu.cfs_quota_us").write_text(quota)

    def enter(self) -> None:
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def run_side(side: str, group: Cgroup, work: Path, args: argparse.Namespace) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQ2SEQ_") and k != "OMP_NUM_THREADS"}
    if side == "torch_default":
        env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    out = work / side
    command = [sys.executable, "-m", "job", "train", "--params", str(REPO / "examples" / "demo.json")]
    command += ["--project-name", str(out), "--epochs", str(args.epochs)]
    started = time.perf_counter()
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=group.enter, check=False
    )
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    threads = re.search(r"CPU threads: (.*)", proc.stdout + proc.stderr)
    return {
        "train_runtime_s": round(metrics["train_runtime"], 2),
        "wall_s": round(wall, 2),
        "threads": threads.group(1).strip() if threads else None,
        "eval_rougeL": metrics.get("eval_rougeL"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=float, default=0.5, help="the quota in CPUs (0.5 = a 500m limit)")
    parser.add_argument("--epochs", type=int, default=12, help="demo epochs (the demo's own: 12)")
    parser.add_argument("--sides", default="ours,torch_default")
    args = parser.parse_args()
    try:
        group = Cgroup(f"seq2seq-bench-{os.getpid()}", args.cpus)
    except OSError as err:
        sys.exit(f"cannot create a cgroup with a CPU quota here ({err}); run as root on a writable cgroup fs")
    results: dict[str, object] = {"quota_cpus": args.cpus, "host_cpus": os.cpu_count(), "epochs": args.epochs}
    work = Path(tempfile.mkdtemp(prefix="bench-quota-"))
    try:
        for side in [s.strip() for s in args.sides.split(",") if s.strip()]:
            results[side] = run_side(side, group, work, args)
    finally:
        group.remove()
        shutil.rmtree(work, ignore_errors=True)
    ours, default = results.get("ours"), results.get("torch_default")
    if isinstance(ours, dict) and isinstance(default, dict):
        results["ours_over_torch_default_train_time"] = round(ours["train_runtime_s"] / default["train_runtime_s"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
