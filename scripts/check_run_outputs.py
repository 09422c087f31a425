"""Assert that a job's output folder is what its file formats promise (used by scripts/image_check.sh).

    python3 scripts/check_run_outputs.py OUT [--world-size N] [--min-evaluations N] [--resumed]
        [--min-rouge-l X] [--checkpoints DIR] [--tensorboard DIR]

Reads only the job's files, never its Python modules (the image check runs it on the host, with the host's
python3 and the standard library alone): ``manifest.json`` must say ``"complete": true`` and list every file
with its real size and SHA-256, ``metrics.json`` must say ``"status": "completed"``, plus the options' checks.
Prints one line of key figures; exits 1 with every problem listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: {type(exc).__name__}: {exc}")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: not a JSON object")
        return {}
    return data


def check_manifest(folder: Path, problems: list[str]) -> dict[str, Any]:
    manifest = load(folder / "manifest.json", problems)
    if manifest and manifest.get("complete") is not True:
        problems.append(f"{folder}/manifest.json: complete is {manifest.get('complete')!r}, not true")
    files = manifest.get("files") or {}
    if manifest and not files:
        problems.append(f"{folder}/manifest.json lists no files")
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{folder}: {rel} is in the manifest but missing")
        elif path.stat().st_size != info.get("size") or sha256(path) != info.get("sha256"):
            problems.append(f"{folder}: {rel} does not match its manifest entry (size or SHA-256)")
    return manifest


def check(args: argparse.Namespace) -> tuple[list[str], str]:
    problems: list[str] = []
    folder = Path(args.out)
    manifest = check_manifest(folder, problems)
    listed = set(manifest.get("files") or {})
    adapter = "adapter_model.safetensors" in listed  # --peft: the adapter instead of a full model
    wanted = ["adapter_config.json" if adapter else "config.json", "metrics.json", "training_params.json"]
    for name in wanted:
        if manifest and name not in listed:
            problems.append(f"{folder}/manifest.json does not list {name}")
    if not ({"model.safetensors", "adapter_model.safetensors"} & listed):
        problems.append(f"{folder}: no model weights in the manifest")
    metrics = load(folder / "metrics.json", problems)
    if metrics.get("status") != "completed":
        problems.append(f"{folder}/metrics.json: status is {metrics.get('status')!r}, not 'completed'")
    evaluations = metrics.get("evaluations") or []
    if len(evaluations) < args.min_evaluations:
        problems.append(f"{len(evaluations)} evaluations in metrics.json, expected at least {args.min_evaluations}")
    rouge = metrics.get("eval_rougeL")
    if args.min_rouge_l is not None and not (isinstance(rouge, int | float) and rouge >= args.min_rouge_l):
        problems.append(f"eval_rougeL is {rouge!r}, expected at least {args.min_rouge_l}")
    world = (metrics.get("hardware") or {}).get("world_size")
    if args.world_size is not None and world != args.world_size:
        problems.append(f"hardware.world_size is {world!r}, expected {args.world_size}")
    resumed = metrics.get("resumed_from_step")
    if args.resumed and not (isinstance(resumed, int) and resumed > 0):
        problems.append(f"resumed_from_step is {resumed!r}: the run did not resume from a checkpoint")
    if args.checkpoints:
        complete = [p for p in Path(args.checkpoints).glob("checkpoint-*") if (p / "manifest.json").is_file()]
        if not complete:
            problems.append(f"no checkpoint-N folder with a manifest.json in {args.checkpoints}")
        for checkpoint in complete:
            check_manifest(checkpoint, problems)
    if args.tensorboard and not list(Path(args.tensorboard).rglob("events.out.tfevents.*")):
        problems.append(f"no TensorBoard event file under {args.tensorboard}")
    summary = (
        f"manifest complete ({len(listed)} files verified{', LoRA adapter' if adapter else ''}), status "
        f"{metrics.get('status')}, global_step {metrics.get('global_step')}, evaluations {len(evaluations)}, "
        f"eval_rougeL {rouge}, world_size {world}, resumed_from_step {resumed}"
    )
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the job's project_name folder")
    parser.add_argument("--world-size", type=int, help="processes that trained (metrics.json hardware.world_size)")
    parser.add_argument("--min-evaluations", type=int, default=0)
    parser.add_argument("--min-rouge-l", type=float, help="lowest acceptable final eval_rougeL")
    parser.add_argument("--resumed", action="store_true", help="the run must have resumed from a checkpoint")
    parser.add_argument("--checkpoints", help="a folder that must hold complete checkpoint-N folders")
    parser.add_argument("--tensorboard", help="a folder that must hold TensorBoard event files")
    problems, summary = check(parser.parse_args(argv))
    print(summary, flush=True)
    for problem in problems:  # last, so that the last line of the output names a failure when there is one
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
