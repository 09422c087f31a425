"""Trusted checkpoints (job.checkpoint_trust): nothing in a checkpoint runs code when the job resumes from it,
and a checkpoint whose states would crash the resume is skipped for the previous complete one.

The attacker here can write to the checkpoint folder or the bucket and rewrites manifest.json to match (its
checksums prove only that files are as written). The malicious pickle's ``__reduce__`` creates a marker file;
each test checks that the marker is absent after the job ran, and — so that the check can fail — that loading
the same bytes the way DeepSpeed does (``torch.load(weights_only=False)``) does create it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from job_process import run_job, tiny_train_args

from job import checkpoint_trust, manifest
from job.errors import EXIT_OK

MALICIOUS = """
import os, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"module": Payload()}, sys.argv[1])
"""


def write_malicious(path: Path, marker: Path) -> None:
    """A torch.save file whose unpickling runs ``touch marker`` (written in a child: no Payload class here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", MALICIOUS, str(path), str(marker)], check=True)


def load_like_deepspeed(path: Path) -> None:
    """What DeepSpeed 0.19 does with its checkpoint states: torch.load(weights_only=False)."""
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)


def torch_save(path: Path, value: str) -> None:
    subprocess.run([sys.executable, "-c", f"import torch; torch.save({value}, {str(path)!r})"], check=True)


def train_args(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(
        data,
        model,
        out,
        "--save-strategy",
        "steps",
        "--save-steps",
        "4",
        "--save-total-limit",
        "2",
        "--logging-steps",
        "1",
        *extra,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_t5_dir, keywords_task_dir) -> Path:
    """A finished run with checkpoint-4 and checkpoint-8 (8 steps)."""
    out = tmp_path_factory.mktemp("trust") / "run"
    rc, job = run_job(*train_args(keywords_task_dir, tiny_t5_dir, out))
    assert rc == EXIT_OK, job.tail()
    return out


def poisoned_copy(finished: Path, dest: Path, poison: str, marker: Path) -> Path:
    """A copy of the finished run, unfinished (no final manifest), its newest checkpoint poisoned and re-marked."""
    shutil.copytree(finished, dest)
    (dest / manifest.MANIFEST).unlink()
    checkpoint = dest / "checkpoints" / "checkpoint-8"
    POISONS[poison][0](checkpoint, marker)
    manifest.write_manifest(checkpoint, kind="checkpoint")  # the attacker rewrites the checksums too
    return checkpoint


def _malicious_deepspeed(checkpoint: Path, marker: Path) -> None:
    write_malicious(checkpoint / "global_step8" / "mp_rank_00_model_states.pt", marker)
    (checkpoint / "latest").write_text("global_step8")


POISONS = {
    # name: (how the newest checkpoint is poisoned, what the warning says)
    "malicious_optimizer": (
        lambda c, m: write_malicious(c / "optimizer.pt", m),
        "optimizer.pt is not plain data: its pickle refers to posix.system (refused without running it)",
    ),
    "malicious_deepspeed_state": (
        _malicious_deepspeed,
        "global_step8/mp_rank_00_model_states.pt is not plain data: its pickle refers to posix.system",
    ),
    "deepspeed_latest_escapes": (
        lambda c, m: (c / "latest").write_text("../../../elsewhere"),
        "latest names '../../../elsewhere', not a global_stepN folder of this checkpoint",
    ),
    "garbage_rng_state": (
        lambda c, m: (c / "rng_state.pth").write_bytes(b"\x00garbage" * 64),
        "rng_state.pth cannot be read",
    ),
    "rng_state_of_the_wrong_shape": (
        lambda c, m: torch_save(
            c / "rng_state.pth", "{'python': (3, (1, 2), None), 'numpy': 'x', 'cpu': torch.zeros(4, dtype=torch.uint8)}"
        ),
        "rng_state.pth holds an RNG state that cannot be restored",
    ),
    "not_an_rng_state": (lambda c, m: torch_save(c / "rng_state.pth", "{'seed': 1}"), "is not an RNG state"),
    "optimizer_without_groups": (
        lambda c, m: torch_save(c / "optimizer.pt", "{'state': {}}"),
        "optimizer.pt is not an optimizer state",
    ),
    "truncated_optimizer": (
        lambda c, m: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:300]),
        "optimizer.pt cannot be read",
    ),
    "scheduler_not_a_dict": (
        lambda c, m: torch_save(c / "scheduler.pt", "[1, 2]"),
        "scheduler.pt holds a list, not a state dict",
    ),
}


@pytest.mark.parametrize("poison", POISONS)
def test_the_trust_check_refuses_each_poison_without_running_it(poison, finished, tmp_path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = poisoned_copy(finished, tmp_path / "run", poison, marker)
    assert manifest.verify(checkpoint, checksums=True)  # the checksums alone would accept it
    problem = checkpoint_trust.problem(checkpoint)
    assert problem is not None and POISONS[poison][1] in problem, problem
    assert not marker.exists()


def test_clean_checkpoints_pass_and_training_args_are_never_opened(finished, tmp_path) -> None:
    for checkpoint in sorted((finished / "checkpoints").glob("checkpoint-*")):
        assert checkpoint_trust.problem(checkpoint) is None, checkpoint
    copy = tmp_path / "checkpoint-8"
    shutil.copytree(finished / "checkpoints" / "checkpoint-8", copy)
    write_malicious(copy / "training_args.bin", tmp_path / "pwned")  # the Trainer never loads it to resume
    assert checkpoint_trust.problem(copy) is None and not (tmp_path / "pwned").exists()


FALLBACKS = ("rng_state_of_the_wrong_shape", "truncated_optimizer", "malicious_optimizer")


def test_a_poisoned_newest_checkpoint_falls_back_to_the_previous_one(
    finished, tiny_t5_dir, keywords_task_dir, tmp_path
) -> None:
    """Through the real CLI: a warning naming the file, resume from checkpoint-4, steps 5-8 trained, exit 0."""

    def rerun(poison: str) -> tuple[str, int, str, Path]:
        marker = tmp_path / f"{poison}.pwned"
        out = tmp_path / poison
        poisoned_copy(finished, out, poison, marker)
        rc, job = run_job(*train_args(keywords_task_dir, tiny_t5_dir, out))
        return poison, rc, job.text, marker

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(rerun, FALLBACKS))
    for poison, rc, text, marker in results:
        assert rc == EXIT_OK, text[-3000:]
        warning = rf"WARNING .*Skipping untrusted checkpoint \S*checkpoint-8: .*{re.escape(POISONS[poison][1])}"
        assert re.search(warning, text), text[-3000:]
        assert re.search(r"Resuming from \S*checkpoint-4 \(step 4, local\)", text), text[-2000:]
        steps = [int(s) for s in re.findall(r"job\.training\.callbacks: step (\d+)/8 ", text)]
        assert steps[0] == 5 and steps[-1] == 8, steps
        assert "Traceback" not in text and not marker.exists()
        assert manifest.verify(tmp_path / poison, checksums=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_malicious_deepspeed_state_in_the_bucket_never_runs(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    """A resume on a fresh machine from output_uri, whose newest checkpoint an attacker extended with a
    DeepSpeed state that runs code on torch.load(weights_only=False), and whose manifest they rewrote."""
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--output-uri", f"s3://{s3_bucket}/run")
    rc, job = run_job(*args)
    assert rc == EXIT_OK, job.tail()
    client = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    marker = tmp_path / "pwned"
    payload = tmp_path / "mp_rank_00_model_states.pt"
    write_malicious(payload, marker)
    prefix, states = "run/checkpoints/checkpoint-8/", "global_step8/mp_rank_00_model_states.pt"
    client.put_object(Bucket=s3_bucket, Key=prefix + states, Body=payload.read_bytes())
    client.put_object(Bucket=s3_bucket, Key=prefix + "latest", Body=b"global_step8")
    listed = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + manifest.MANIFEST)["Body"].read())
    listed["files"][states] = {"size": payload.stat().st_size, "sha256": _sha(payload)}
    listed["files"]["latest"] = {"size": 12, "sha256": hashlib.sha256(b"global_step8").hexdigest()}
    client.put_object(Bucket=s3_bucket, Key=prefix + manifest.MANIFEST, Body=json.dumps(listed).encode())
    client.delete_object(Bucket=s3_bucket, Key="run/manifest.json")  # not finished: the retry must resume
    shutil.rmtree(out)  # a fresh machine: everything comes from the bucket

    rc, rerun = run_job(*args)
    assert rc == EXIT_OK, rerun.tail()
    assert "Skipping untrusted checkpoint" in rerun.text and "refers to posix.system" in rerun.text
    assert f"Resuming from s3://{s3_bucket}/run/checkpoints/checkpoint-4 (step 4, output_uri)" in rerun.text
    assert not marker.exists()
    load_like_deepspeed(payload)  # the same bytes, loaded as DeepSpeed would: the payload is live
    assert marker.exists()


@pytest.mark.slow
def test_a_real_deepspeed_resume_skips_a_malicious_state_and_loads_the_previous_checkpoint(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    """ZeRO-2 on two CPU processes (torchrun, gloo): the newest checkpoint in the bucket gets a model state that
    runs code when DeepSpeed loads it; the resume on a fresh machine skips it and DeepSpeed loads the one before."""
    from launch_helpers import run_launch

    out = tmp_path / "run"
    args = [
        *train_args(keywords_task_dir, tiny_t5_dir, out, "--output-uri", f"s3://{s3_bucket}/run"),
        *("--save-steps", "2", "--num-processes", "2", "--deepspeed", "zero2"),
    ]  # 32 rows / (8 × 2 processes) = 2 steps per epoch: checkpoints 2 and 4
    first = run_launch(*args, log=tmp_path / "first.log", timeout=600)
    assert first.rc == EXIT_OK, first.tail()
    client = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    prefix, states = "run/checkpoints/checkpoint-4/", "global_step4/mp_rank_00_model_states.pt"
    marker, payload = tmp_path / "pwned", tmp_path / "mp_rank_00_model_states.pt"
    write_malicious(payload, marker)
    client.put_object(Bucket=s3_bucket, Key=prefix + states, Body=payload.read_bytes())
    listed = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + manifest.MANIFEST)["Body"].read())
    assert states in listed["files"]  # a real DeepSpeed state is replaced, not an extra file added
    listed["files"][states] = {"size": payload.stat().st_size, "sha256": _sha(payload)}
    client.put_object(Bucket=s3_bucket, Key=prefix + manifest.MANIFEST, Body=json.dumps(listed).encode())
    client.delete_object(Bucket=s3_bucket, Key="run/manifest.json")
    shutil.rmtree(out)

    rerun = run_launch(*args, log=tmp_path / "rerun.log", timeout=600)
    assert rerun.rc == EXIT_OK, rerun.tail()
    assert "Skipping untrusted checkpoint" in rerun.text and "refers to posix.system" in rerun.text
    assert f"Resuming from s3://{s3_bucket}/run/checkpoints/checkpoint-2 (step 2, output_uri)" in rerun.text
    steps = [int(s) for s in re.findall(r"job\.training\.callbacks: step (\d+)/4 ", rerun.text)]
    assert steps and steps[0] == 3 and steps[-1] == 4, steps  # DeepSpeed restored step 2 and went on
    assert not marker.exists() and manifest.verify(out, checksums=True)
    load_like_deepspeed(payload)
    assert marker.exists()
