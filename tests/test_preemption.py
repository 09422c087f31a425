"""SIGTERM/SIGINT and kill -9 against real training processes: checkpoint, upload, exit 143, resume.

Every job here is ``python -m job train`` in its own process, on the tiny T5 and the keywords task, with its
checkpoints published to the moto S3 server (``output_uri``). Signals are sent at moments read from the job's
own log or from its checkpoint folder, so the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import boto3
import pytest
from job_process import JobProcess, kill, run_job, tiny_train_args

from job import manifest, stopping
from job.errors import EXIT_PREEMPTED
from job.training import preemption

STEPS = 16  # 64 rows / batch 8 = 8 steps per epoch × 2 epochs


def train_args(data: Path, model: Path, out: Path, *extra: str, bucket: str | None = None) -> list[str]:
    args = tiny_train_args(
        data,
        model,
        out,
        "--lr",
        "3e-3",
        "--warmup-ratio",
        "0",
        "--eval-strategy",
        "no",
        "--logging-steps",
        "1",
        "--save-strategy",
        "steps",
        "--save-total-limit",
        "2",
        "--early-stopping-patience",
        "0",
        *extra,
        max_samples=64,
    )
    if bucket:
        args += ["--output-uri", f"s3://{bucket}/run"]
    return args


def s3_client(s3_env) -> object:
    return boto3.client("s3", endpoint_url=s3_env.endpoint_url)


def remote_keys(client, bucket: str, prefix: str = "run/") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def remote_checkpoints(client, bucket: str) -> dict[int, bool]:
    """Remote checkpoint-N folders → whether their manifest is there (complete)."""
    found: dict[int, bool] = {}
    for key in remote_keys(client, bucket, "run/checkpoints/"):
        match = re.match(r"run/checkpoints/checkpoint-(\d+)/(.+)$", key)
        if match:
            step = int(match.group(1))
            found[step] = found.get(step, False) or match.group(2) == manifest.MANIFEST
    return found


def stop_step(job: JobProcess) -> int:
    return int(job.wait_for(r"Stopping at step (\d+)/", timeout=5).group(1))


def progress_steps(job: JobProcess) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"INFO job\.training\.callbacks: step (\d+)/\d+ ", job.text)]


def assert_finished(out: Path, client, bucket: str) -> dict:
    """All outputs complete locally and in the bucket, after all STEPS steps."""
    assert manifest.verify(out, checksums=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["global_step"] == STEPS
    keys = remote_keys(client, bucket)
    assert {"run/manifest.json", "run/model.safetensors", "run/metrics.json"} <= keys
    assert remote_checkpoints(client, bucket).get(STEPS) is True
    return metrics


def assert_resumed(job: JobProcess, step: int, where: str) -> None:
    """The rerun said where it resumed from and its first training step was step + 1, not 1."""
    job.wait_for(rf"Resuming from {re.escape(where)}\S* \(step {step}, ", timeout=5)
    steps = progress_steps(job)
    assert steps and steps[0] == step + 1 and steps[-1] == STEPS, steps


# --------------------------------------------------------------------------------------- SIGTERM, S3 outputs
def test_sigterm_mid_epoch_saves_uploads_exits_143_and_rerun_resumes(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "50", bucket=s3_bucket)
    job = JobProcess(*args)
    job.wait_for(r"step 3/16 ")  # mid-epoch, before any scheduled checkpoint (save_steps=50)
    job.send(signal.SIGTERM)
    assert job.finish() == EXIT_PREEMPTED, job.tail()
    step = stop_step(job)
    assert 3 < step < 8, step  # the next step boundary, still in epoch 1
    assert "Traceback" not in job.text
    client = s3_client(s3_env)
    assert remote_checkpoints(client, s3_bucket) == {step: True}  # uploaded, manifest last
    assert "run/manifest.json" not in remote_keys(client, s3_bucket)  # the final folder is not complete
    assert not (out / manifest.MANIFEST).exists()
    state = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    assert state["global_step"] == step and state["epoch"] < 1

    rc, rerun = run_job(*args)  # the same command, as the platform's retry runs it
    assert rc == 0, rerun.tail()
    assert_resumed(rerun, step, str(out / "checkpoints" / f"checkpoint-{step}"))
    assert_finished(out, client, s3_bucket)
    history = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    logged = [e["step"] for e in history["log_history"] if "loss" in e]
    assert logged == list(range(1, STEPS + 1))  # one history: steps 1..step from the first run, then the rest


def test_sigterm_during_upload_then_resume_on_a_fresh_machine_from_output_uri(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    """A checkpoint every step keeps the background uploader busy; SIGTERM lands while one is in flight."""
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "1", bucket=s3_bucket)
    client = s3_client(s3_env)
    job = JobProcess(*args)
    in_flight: list[int] = []

    def uploading() -> bool:
        """A local checkpoint is complete but its remote manifest is not there yet: an upload is in flight."""
        local = sorted(
            int(p.name.split("-")[1])
            for p in (out / "checkpoints").glob("checkpoint-*")
            if (p / manifest.MANIFEST).is_file()
        )
        if not local or local[-1] < 3:
            return False
        if remote_checkpoints(client, s3_bucket).get(local[-1]):
            return False
        in_flight.append(local[-1])
        return True

    job.poll_until(uploading, what="a checkpoint upload in flight")
    job.send(signal.SIGTERM)
    assert job.finish() == EXIT_PREEMPTED, job.tail()
    step = stop_step(job)
    assert in_flight and step >= in_flight[0]
    assert "Waiting for checkpoint uploads in flight" in job.text
    remote = remote_checkpoints(client, s3_bucket)
    assert remote.get(step) is True and remote.get(in_flight[0], True)  # every upload finished (or rotated)
    assert all(remote.values()), remote  # no half-uploaded folder was left behind

    shutil.rmtree(out)  # the retry runs on a new machine: nothing local, everything comes from output_uri
    rc, rerun = run_job(*args)
    assert rc == 0, rerun.tail()
    assert_resumed(rerun, step, f"s3://{s3_bucket}/run/checkpoints/checkpoint-{step}")
    assert_finished(out, client, s3_bucket)


def test_sigterm_before_training_exits_at_once_and_marks_nothing(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    """Before trainer.train() there is nothing to save: the job says so and stops at once with 143."""
    out = tmp_path / "run"
    job = JobProcess(*train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "10"))
    job.wait_for(r"Loaded train split")
    job.send(signal.SIGTERM)
    assert job.finish() == EXIT_PREEMPTED, job.tail()
    assert "Received SIGTERM before training: nothing to save yet" in job.text
    assert "stopped by SIGTERM before training: nothing was saved" in job.text and "Traceback" not in job.text
    assert " step 1/" not in job.text
    assert not list(out.glob("checkpoints/checkpoint-*")) and not list(out.rglob(manifest.MANIFEST))


# ----------------------------------------------------------------------------------------------- kill -9
def test_kill_9_restart_skips_partial_and_corrupt_checkpoints(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    out = tmp_path / "run"
    args = train_args(
        keywords_task_dir, tiny_t5_dir, out, "--save-steps", "2", "--save-total-limit", "3", bucket=s3_bucket
    )
    job = JobProcess(*args)
    job.wait_for(r"Checkpoint checkpoint-4 complete")
    assert kill(job) == -signal.SIGKILL  # no handler runs, nothing is saved
    checkpoints = out / "checkpoints"
    complete = sorted(
        int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if manifest.verify(p, checksums=True)
    )
    assert len(complete) >= 2, complete
    newest, fallback = complete[-1], complete[-2]
    # The newest checkpoint is damaged without changing its size (only the checksum can tell) …
    damaged = checkpoints / f"checkpoint-{newest}" / "optimizer.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    # … a later one was cut off while being written (no manifest) …
    partial = checkpoints / "checkpoint-999"
    shutil.copytree(checkpoints / f"checkpoint-{fallback}", partial)
    (partial / manifest.MANIFEST).unlink()
    # … and the bucket has an upload that never finished (files, no manifest).
    client = s3_client(s3_env)
    client.put_object(Bucket=s3_bucket, Key="run/checkpoints/checkpoint-998/model.safetensors", Body=b"x" * 10)

    # The highest complete checkpoint wherever it is: the bucket's copy of the damaged one if its upload had
    # finished before the kill, else the local one before it.
    uploaded = remote_checkpoints(client, s3_bucket).get(newest) is True
    rc, rerun = run_job(*args)
    assert rc == 0, rerun.tail()
    text = rerun.text
    assert re.search(r"WARNING .*Skipping incomplete checkpoint \S*checkpoint-999: no manifest\.json", text)
    assert re.search(rf"WARNING .*Skipping incomplete checkpoint \S*checkpoint-{newest}: its files do not match", text)
    assert "checkpoint-998" not in text  # the storage layer lists only manifest-marked remote folders
    if uploaded:
        assert_resumed(rerun, newest, f"s3://{s3_bucket}/run/checkpoints/checkpoint-{newest}")
    else:
        assert_resumed(rerun, fallback, str(checkpoints / f"checkpoint-{fallback}"))
    assert not partial.exists()  # removed, so a later save of that step cannot mix with its leftovers
    assert_finished(out, client, s3_bucket)


# ------------------------------------------------------------------------------- the handler and the ranks
def test_first_signal_sets_the_flag_second_sigint_interrupts() -> None:
    # What was there before (a shell's background job starts with SIGINT ignored, not Python's default handler)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.handle_signals():
        stopping.enter(stopping.TRAINING)
        assert not preemption.requested()
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode
        assert preemption.requested() and preemption.signal_name() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored afterwards


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    """Two real ranks (gloo, as torchrun starts them); only rank 1 gets SIGTERM. Both must agree on the step,
    save one checkpoint together and exit 143 — a rank that stopped alone would hang the other in a collective."""
    from s3_server import free_port

    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "50", "--batch-size", "4")
    port = str(free_port())
    rendezvous = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    ranks = [JobProcess(*args, env={**rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    ranks[0].wait_for(r"step 3/16 ")
    ranks[1].send(signal.SIGTERM)
    codes = [job.finish() for job in ranks]
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], [job.tail() for job in ranks]
    step = stop_step(ranks[0])
    assert "Received SIGTERM" in ranks[1].text and "Received SIGTERM" not in ranks[0].text
    assert f"stopped by SIGTERM at step {step} " in ranks[1].text
    assert f"stopped by a signal to another rank at step {step} " in ranks[0].text
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert manifest.verify(out / "checkpoints" / f"checkpoint-{step}", checksums=True)


# ---------------------------------------------------------------------------------- SIGTERM in every phase
# The promise logged on the signal is kept in every phase (job.stopping): before training nothing is saved and
# the job stops at once; during training a checkpoint is saved at the next consistent point (step boundary, the
# save in progress, or an evaluation cut short); after training it stops at once, the last step's checkpoint
# being complete. Always exit 143, never a traceback, never anything marked complete that is not.
# Where a phase is too short to hit by timing, a named pipe holds the job in it: the job blocks writing that
# file (open() waits for a reader) until the test reads it.
SLOW_EVAL = (
    "--valid-split",
    "validation",
    "--eval-batch-size",
    "1",
    "--generation-max-length",
    "64",
    "--num-beams",
    "4",
)


def assert_stopped(job: JobProcess, phase: str) -> None:
    """Exit 143 after the promise for ``phase`` was logged; one clean line, no traceback."""
    assert job.finish() == EXIT_PREEMPTED, job.tail()
    assert re.search(rf"WARNING job\.training\.preemption: Received SIGTERM {phase}: ", job.text), job.tail()
    assert "Traceback" not in job.text and " ERROR " not in job.text, job.tail()


def assert_rerun_finishes(args: list[str], out: Path, *, resumed_from: int | None) -> JobProcess:
    rc, rerun = run_job(*args)
    assert rc == 0, rerun.tail()
    if resumed_from is not None:
        rerun.wait_for(rf"Resuming from \S*checkpoint-{resumed_from} \(step {resumed_from}, ", timeout=5)
    assert manifest.verify(out, checksums=True)
    assert json.loads((out / "metrics.json").read_text())["global_step"] == STEPS
    return rerun


def drain(fifo: Path) -> None:
    """Read the named pipe (in a thread) so that the job's blocked write goes through."""
    import threading

    def read() -> None:
        with fifo.open("rb") as pipe:
            pipe.read()

    threading.Thread(target=read, daemon=True).start()


def test_sigterm_while_loading_the_model_stops_at_once(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    out = tmp_path / "run"
    job = JobProcess(*train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "50"))
    job.wait_for(r"Token lengths before truncation")  # tokenized: the model is loaded next
    job.send(signal.SIGTERM)
    assert_stopped(job, "before training")
    assert "stopped by SIGTERM before training: nothing was saved" in job.text and " step 1/" not in job.text
    assert not list(out.rglob(manifest.MANIFEST))


def test_sigterm_in_the_second_epoch_saves_there_and_the_rerun_finishes(
    tiny_t5_dir, keywords_task_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "50")
    job = JobProcess(*args)
    job.wait_for(r"step 10/16 ")
    job.send(signal.SIGTERM)
    assert_stopped(job, "during training")
    step = stop_step(job)
    assert 10 <= step < STEPS and not (out / manifest.MANIFEST).exists()
    state = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    assert state["epoch"] > 1  # saved in epoch 2
    assert_rerun_finishes(args, out, resumed_from=step)


def test_sigterm_during_a_checkpoint_save_stops_right_after_it(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    """No extra step and no second save: the checkpoint being written is the one the retry resumes from."""
    out = tmp_path / "run"
    job = JobProcess(*train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "4"))
    job.wait_for(r"step 1/16 ")
    fifo = out / "checkpoints" / "checkpoint-4" / "trainer_state.json"  # written last by the Trainer's save
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    job.wait_blocked_on_fifo()  # inside the save of checkpoint-4
    job.send(signal.SIGTERM)
    job.wait_for(r"Received SIGTERM during training")
    drain(fifo)
    assert_stopped(job, "during training")
    assert "Stopping at step 4/16: checkpoint-4 was just saved" in job.text
    assert " step 5/" not in job.text and not (out / "checkpoints" / "checkpoint-5").exists()
    assert "Checkpoint checkpoint-4 complete" in job.text


@pytest.mark.parametrize(("eval_steps", "step"), [(4, 4), (8, 16)], ids=["mid_training", "last_scheduled"])
def test_sigterm_during_an_evaluation_cuts_it_short_and_saves(
    eval_steps, step, tiny_t5_dir, keywords_task_dir, tmp_path
) -> None:
    """With generation an evaluation can outlast the grace period: it is cut short, the step's checkpoint saved."""
    out = tmp_path / "run"
    every = ("--eval-strategy", "steps", "--eval-steps", str(eval_steps), "--save-steps", str(eval_steps))
    args = train_args(keywords_task_dir, tiny_t5_dir, out, *SLOW_EVAL, *every)
    job = JobProcess(*args)
    job.wait_for(rf"Evaluation at step {step}: 40 batches")
    job.send(signal.SIGTERM)
    assert_stopped(job, "during training")
    cut = re.search(rf"Cutting the evaluation at step {step} short at batch (\d+)/40", job.text)
    assert cut and int(cut.group(1)) < 40, job.tail()
    assert stop_step(job) == step
    checkpoint = out / "checkpoints" / f"checkpoint-{step}"
    assert manifest.verify(checkpoint, checksums=True)
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert not [e for e in history if e.get("step") == step and "eval_loss" in e]  # the cut evaluation counts not
    assert_rerun_finishes(args, out, resumed_from=step)


def test_sigterm_during_the_final_evaluation_stops_at_once(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, *SLOW_EVAL, "--save-steps", "8")  # eval_strategy=no
    job = JobProcess(*args)
    job.wait_for(r"Evaluation at step 16: 40 batches")  # the one evaluation, after the last step, inside training
    job.send(signal.SIGTERM)
    assert_stopped(job, "during training")  # the evaluation is cut short and the step's checkpoint saved
    assert f"stopped by SIGTERM at step 16 after saving checkpoint {out}/checkpoints/checkpoint-16" in job.text
    assert not (out / manifest.MANIFEST).exists() and "eval_loss" not in job.text
    assert_rerun_finishes(args, out, resumed_from=16)


def test_sigterm_while_writing_the_final_model_stops_at_once(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "8")
    out.mkdir()
    os.mkfifo(out / "README.md")  # the model card: written after the model, before the manifest
    job = JobProcess(*args)
    job.wait_blocked_on_fifo()
    job.send(signal.SIGTERM)
    assert_stopped(job, "after training")
    assert not (out / manifest.MANIFEST).exists()
    (out / "README.md").unlink()
    assert_rerun_finishes(args, out, resumed_from=16)


def test_sigterm_during_the_final_upload_stops_and_the_rerun_publishes(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    """The upload stalls (a proxy holds every byte); SIGTERM stops the final upload, not the checkpoint's."""
    from s3_server import CuttingProxy

    out = tmp_path / "run"
    args = train_args(keywords_task_dir, tiny_t5_dir, out, "--save-steps", "8", bucket=s3_bucket)
    proxy = CuttingProxy(s3_env.port)
    try:
        proxy.hold(f" /{s3_bucket}/run/model.safetensors ".encode())  # the final model's PUT (not a checkpoint's)
        job = JobProcess(*args, env={"AWS_ENDPOINT_URL_S3": proxy.endpoint_url})
        assert proxy.held.wait(timeout=240), job.tail()  # the final upload has begun and stalls
        job.send(signal.SIGTERM)
        job.wait_for(r"Received SIGTERM after training")
        proxy.resume()
        assert_stopped(job, "after training")
    finally:
        proxy.close()
    client = s3_client(s3_env)
    assert "run/manifest.json" not in remote_keys(client, s3_bucket)  # the final folder is not complete remotely
    assert remote_checkpoints(client, s3_bucket).get(STEPS) is True  # the checkpoint's upload was waited for
    rerun = assert_rerun_finishes(args, out, resumed_from=None)
    assert "has no final manifest (its upload was cut off): publishing it now" in rerun.text
    assert_finished(out, client, s3_bucket)
