"""Resume and idempotent reruns: which checkpoint a run starts from, and what a rerun of a finished job does.

The training runs here use the Python API in this process (no interpreter start-up per run); the stop is a real
SIGTERM, sent by the job's own log line "step N/…" so it lands at an exact step. The reruns of a finished job
go through the real CLI process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from job_process import run_job, tiny_train_args

from job import manifest, resume
from job.context import read_context
from job.errors import Preempted, UserError
from job.params import Seq2SeqParams
from job.pipeline import train

TASK = dict(
    valid_split="validation[:8]",
    max_samples=64,
    batch_size=8,
    epochs=2,
    max_seq_length=32,
    max_target_length=8,
    lr=3e-3,
    warmup_ratio=0.0,
    early_stopping_patience=0,
    logging_steps=1,
)  # 64 rows / 8 = 8 steps per epoch, 16 in all


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine the default makes tiny-model steps many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SigtermAt(logging.Handler):
    """Sends this process a real SIGTERM when the job logs ``text`` (once): the stop lands at the next step."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.fired = text, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> SigtermAt:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def params_for(out: Path, data: Path, model: Path, **extra: object) -> Seq2SeqParams:
    return Seq2SeqParams(data_path=str(data), model=str(model), project_name=str(out), **{**TASK, **extra})


def step_losses(checkpoint: Path) -> dict[int, float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


# ------------------------------------------------------------------------------------- data-position resume
def test_resumed_run_matches_an_uninterrupted_one(tiny_t5_dir, keywords_task_dir, tmp_path, caplog) -> None:
    """Model, optimizer, scheduler, RNG and data position all come back: same steps, same losses."""
    caplog.set_level(logging.INFO)
    whole = train(params_for(tmp_path / "whole", keywords_task_dir, tiny_t5_dir))

    interrupted = params_for(tmp_path / "cut", keywords_task_dir, tiny_t5_dir)
    with SigtermAt("step 10/16 "), pytest.raises(Preempted) as stop:
        train(interrupted)  # mid-epoch 2, after the epoch-1 evaluation
    assert stop.value.step == 11 and stop.value.checkpoint.endswith("checkpoint-11")
    resumed = train(interrupted)
    assert "Resuming from" in caplog.text and "(step 11, local)" in caplog.text

    assert resumed["global_step"] == whole["global_step"] == 16
    assert resumed["resumed_from_step"] == 11 and whole["resumed_from_step"] == 0
    # Measured on CPU: identical to the last digit; the tolerance only allows for other BLAS builds.
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], abs=1e-4)
    cut_losses = step_losses(tmp_path / "cut" / "checkpoints" / "checkpoint-16")
    whole_losses = step_losses(tmp_path / "whole" / "checkpoints" / "checkpoint-16")
    assert sorted(cut_losses) == list(range(1, 17))
    assert cut_losses == pytest.approx(whole_losses, abs=1e-4)
    # metrics.json keeps the evaluation the first attempt did before the stop
    assert [e["step"] for e in resumed["evaluations"]] == [e["step"] for e in whole["evaluations"]] == [8, 16]
    assert resumed["evaluations"][0]["eval_loss"] == pytest.approx(whole["evaluations"][0]["eval_loss"], abs=1e-4)


def test_stop_on_the_last_step_of_an_epoch_saves_once_and_does_not_evaluate(
    tiny_t5_dir, keywords_task_dir, tmp_path, caplog
) -> None:
    """The epoch-end save/evaluation would otherwise rewrite the same checkpoint and delay it past the grace."""
    caplog.set_level(logging.INFO)
    params = params_for(tmp_path / "run", keywords_task_dir, tiny_t5_dir, save_total_limit=3)
    with SigtermAt("step 7/16 "), pytest.raises(Preempted) as stop:
        train(params)
    assert stop.value.step == 8  # the last step of epoch 1
    assert caplog.text.count("Checkpoint checkpoint-8 complete") == 1
    assert "eval_loss" not in caplog.text
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-8"]
    caplog.clear()
    resumed = train(params)
    assert "(step 8, local)" in caplog.text and resumed["global_step"] == 16
    assert [e["step"] for e in resumed["evaluations"]] == [16]  # the skipped one is not made up afterwards


# ------------------------------------------------------------------------------------ finding the checkpoint
def fake_checkpoint(folder: Path, step: int, *, complete: bool = True) -> Path:
    """A checkpoint-N folder with real files and (if complete) a real manifest."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(os.urandom(256))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if complete:
        manifest.write_manifest(path, kind="checkpoint")
    return path


def bare_params(tmp_path: Path, **extra: object) -> Seq2SeqParams:
    return Seq2SeqParams(data_path=str(tmp_path / "data.csv"), project_name=str(tmp_path / "out"), **extra)


def find(params: Seq2SeqParams, env: dict[str, str] | None = None) -> str | None:
    """resume.find_checkpoint as the job calls it, on a machine whose environment is ``env``."""
    kept = tuple(read_context(env or {}).kept_checkpoint_dirs)  # the platform's checkpoint folders
    return resume.find_checkpoint(resume.Scope(params, main_process=True, kept_dirs=kept))


def test_auto_takes_the_highest_complete_checkpoint_across_local_and_platform_folders(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    params = bare_params(tmp_path)
    own = params.resolved_checkpoint_dir
    fake_checkpoint(own, 4)
    fake_checkpoint(own, 12, complete=False)  # killed while saving
    damaged = fake_checkpoint(own, 10)
    (damaged / "model.safetensors").write_bytes(os.urandom(256))  # same size, other bytes
    platform = tmp_path / "aip-checkpoints"
    vertex = {"AIP_CHECKPOINT_DIR": str(platform)}
    fake_checkpoint(platform, 8)
    fake_checkpoint(platform, 14, complete=False)

    assert find(params, vertex) == str(platform / "checkpoint-8")
    assert "Resuming from" in caplog.text and "(step 8, platform)" in caplog.text
    assert len(re.findall(r"Skipping incomplete checkpoint", caplog.text)) == 3
    assert not (own / "checkpoint-12").exists() and not damaged.exists()  # ours: removed
    assert (platform / "checkpoint-14").exists()  # the platform's folder is only read

    assert find(params) == str(own / "checkpoint-4")  # not on Vertex: its folder is not searched
    assert find(bare_params(tmp_path, resume="never")) is None


def test_explicit_resume_path_folder_and_bad_values(tmp_path) -> None:
    store = tmp_path / "elsewhere"
    fake_checkpoint(store, 3)
    fake_checkpoint(store, 6)
    partial = fake_checkpoint(store, 9, complete=False)
    assert find(bare_params(tmp_path, resume=str(store / "checkpoint-3"))) == str(store / "checkpoint-3")
    assert find(bare_params(tmp_path, resume=str(store))) == str(store / "checkpoint-6")
    with pytest.raises(UserError, match=r"resume=.*checkpoint-9: no complete checkpoint there"):
        find(bare_params(tmp_path, resume=str(partial)))
    with pytest.raises(UserError, match=r"resume=.*nope: no such folder"):
        find(bare_params(tmp_path, resume=str(tmp_path / "nope")))
    with pytest.raises(UserError, match=r"resume=foo://x: unsupported scheme"):
        bare_params(tmp_path, resume="foo://x")
    assert bare_params(tmp_path, resume=" NEVER ").resume == "never"


def test_auto_downloads_the_newest_complete_remote_checkpoint(s3_bucket, tmp_path, caplog) -> None:
    """output_uri holds checkpoint-6 (complete), checkpoint-9 (upload cut off); this machine has checkpoint-4."""
    from job.storage import Publisher

    caplog.set_level(logging.INFO)
    uri = f"s3://{s3_bucket}/run"
    source = tmp_path / "first-machine"
    publisher = Publisher(uri, local_root=source, checkpoints_dir=source / "checkpoints", save_total_limit=None)
    publisher.publish_checkpoint(fake_checkpoint(source / "checkpoints", 6))
    publisher.wait()
    import boto3

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="run/checkpoints/checkpoint-9/model.safetensors", Body=b"x")
    params = bare_params(tmp_path, output_uri=uri)
    fake_checkpoint(params.resolved_checkpoint_dir, 4)

    found = find(params)
    assert found == str(params.resolved_checkpoint_dir / "checkpoint-6")
    assert manifest.verify(Path(found), checksums=True)
    assert f"Resuming from {uri}/checkpoints/checkpoint-6 (step 6, output_uri)" in caplog.text
    assert "checkpoint-9" not in caplog.text


# --------------------------------------------------------------------------------------- finished jobs, CLI
CLI_TASK = [
    "--valid-split",
    "validation[:8]",
    "--lr",
    "0.003",
    "--warmup-ratio",
    "0",
    "--early-stopping-patience",
    "0",
    "--logging-steps",
    "1",
]  # with tiny_train_args(max_samples=64): the same run as TASK


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_rerun_of_a_finished_job_exits_0_at_once_and_overwrite_trains_again(
    tiny_t5_dir, keywords_task_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    metrics = train(params_for(out, keywords_task_dir, tiny_t5_dir))
    before = snapshot(out)
    command = tiny_train_args(keywords_task_dir, tiny_t5_dir, out, *CLI_TASK, max_samples=64)

    rc, rerun = run_job(*command)
    assert rc == 0, rerun.tail()
    assert "already holds complete outputs (manifest verified): nothing to train" in rerun.text
    assert "Loaded train split" not in rerun.text and " step 1/" not in rerun.text  # nothing loaded or trained
    assert re.search(r'Final metrics: .*"global_step": 16', rerun.text)
    assert snapshot(out) == before  # not a single file rewritten
    assert train(params_for(out, keywords_task_dir, tiny_t5_dir))["eval_loss"] == metrics["eval_loss"]  # Python API

    rc, changed = run_job(*command, "--lr", "0.01")
    assert rc == 0 and "The finished run used other parameters (lr: 0.003 → 0.01); pass --overwrite" in changed.text

    shutil.copytree(out / "checkpoints" / "checkpoint-16", out / "checkpoints" / "checkpoint-99")  # old run's
    rc, again = run_job(*command, "--overwrite")
    assert rc == 0, again.tail()
    assert "overwrite=true: training" in again.text and " step 1/16 " in again.text
    assert "Resuming" not in again.text and not (out / "checkpoints" / "checkpoint-99").exists()
    assert manifest.verify(out, checksums=True)
    assert json.loads((out / "metrics.json").read_text())["train_runtime"] != metrics["train_runtime"]


def test_damaged_finished_outputs_are_not_trusted(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    params = bare_params(tmp_path)
    out = params.output_dir
    out.mkdir()
    (out / "model.safetensors").write_bytes(os.urandom(64))
    (out / "metrics.json").write_text('{"status": "completed"}')
    manifest.write_manifest(out, kind="model")
    assert resume.finished_outputs(params) == {"status": "completed"}
    (out / "model.safetensors").write_bytes(os.urandom(64))
    assert resume.finished_outputs(params) is None
    assert "does not match its files" in caplog.text
