"""Several processes and nodes for real (torchrun, gloo, CPU): the same training as one process, one set of
outputs, and a failing rank that takes the whole job down promptly with the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_task
from launch_helpers import TINY_PARAMS, TINY_RUN, Launch, flags, free_port, run_launch, step_losses, without_dropout

from job import manifest
from job.errors import EXIT_PREEMPTED, EXIT_USER_ERROR
from job.exits import read_exit_codes, report_exit_code, resolve_exit_code
from job.params import Seq2SeqParams
from job.pipeline import train
from job.training.loss import token_mean_loss


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, tiny_t5_dir: Path) -> tuple[Path, Path]:
    """64 training rows, 16 validation rows, and the tiny T5 without dropout (so split batches can match)."""
    root = tmp_path_factory.mktemp("distributed")
    data = write_task(root / "data", kind="keywords", train_rows=64, valid_rows=16)
    return data, without_dropout(tiny_t5_dir, root / "t5")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_train_like_one_process_with_the_same_global_batch(task, tmp_path) -> None:
    data, model = task
    # the same evaluation batches too (8 rows): the eval loss is a mean of per-batch means
    common = dict(data_path=str(data), model=str(model), **TINY_PARAMS, eval_batch_size=8)
    train(Seq2SeqParams(**common, project_name=str(tmp_path / "one"), batch_size=16))  # one process (this one)
    two = run_launch(
        "train", *flags(**common, project_name=tmp_path / "two", batch_size=8, num_processes=2), log=tmp_path / "2.log"
    )
    assert two.rc == 0, two.tail()
    assert "torchrun --standalone --nproc_per_node 2" in two.text and "world size 2 on CPU (gloo), DDP" in two.text

    # 16 rows per optimizer step either way (16 × 1 process, 8 × 2 processes): the same loss at every step
    single, double = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert len(single) == len(double) == 8
    assert double == pytest.approx(single, rel=1e-3)
    assert single[-1] < single[0] - 0.5

    # one model, one metrics.json, one card, written once by rank 0; the folder is complete
    out = tmp_path / "two"
    assert manifest.verify(out, checksums=True)
    assert sorted(p.name for p in out.rglob("*.safetensors") if "checkpoints" not in p.parts) == ["model.safetensors"]
    assert [p.relative_to(out) for p in out.rglob("metrics.json")] == [Path("metrics.json")]
    assert two.text.count("Final metrics") == 1 and two.text.count("Outputs complete") == 1
    metrics = _metrics(out)
    assert metrics["status"] == "completed"
    assert metrics["distributed"] == {"world_size": 2, "nnodes": 1, "effective_batch_size": 16, "strategy": "ddp"}
    assert metrics["effective_batch_size"] == 16 and metrics["hardware"]["world_size"] == 2
    assert metrics["train_loss"] == pytest.approx(_metrics(tmp_path / "one")["train_loss"], rel=1e-3)

    # evaluation is split over both processes and gathered: the same figures as one process on all 16 rows
    reference = _metrics(tmp_path / "one")
    for key in ("eval_loss", "eval_rouge1", "eval_gen_len"):
        assert metrics[key] == pytest.approx(reference[key], rel=1e-3, abs=1e-4), key
    assert [e["eval_loss"] for e in metrics["evaluations"]] == pytest.approx(
        [e["eval_loss"] for e in reference["evaluations"]], rel=1e-3
    )

    # rank 0 marks a checkpoint complete only after every rank wrote its part of it
    checkpoint = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest.read_manifest(checkpoint)["files"])


def test_two_nodes_on_localhost_train_together(task, tmp_path) -> None:
    data, _ = task
    out = tmp_path / "run"
    port = str(free_port())
    # builtin:t5-tiny is built from the data by each node's first process: on this shared disk, exactly once
    args = (
        "train",
        "--data-path",
        str(data),
        "--model",
        "builtin:t5-tiny",
        *TINY_RUN,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--num-processes",
        "1",
        "--project-name",
        str(out),
    )
    nodes = [
        Launch(
            *args,
            log=tmp_path / f"node{rank}.log",
            env={"NNODES": "2", "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for rank in (0, 1)
    ]
    codes = [node.finish(timeout=300) for node in nodes]
    assert codes == [0, 0], "\n\n".join(node.tail() for node in nodes)
    assert f"--nnodes 2 --node_rank 1 --master_addr 127.0.0.1 --master_port {port} --nproc_per_node 1" in nodes[1].text
    assert "world size 2" in nodes[0].text and "topology from env" in nodes[0].text

    assert manifest.verify(out)
    metrics = _metrics(out)
    assert metrics["distributed"] == {"world_size": 2, "nnodes": 2, "effective_batch_size": 16, "strategy": "ddp"}
    assert len(step_losses(out)) == 4  # 64 rows / (8 × 2 processes)
    assert (out / "base_model" / ".built-by").is_file()
    assert nodes[0].text.count("Final metrics") == 1 and "Final metrics" not in nodes[1].text


# A rank that alone meets bad data. Injected through sitecustomize, which Python imports at start-up from
# PYTHONPATH: only the worker whose RANK is 1 patches training_step, so the job itself carries no test hook.
_FAIL_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import transformers
    from job.errors import UserError

    _step = transformers.Seq2SeqTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step >= 2:
            raise UserError("train.csv row 37: the target is empty (only rank 1 reads this row)")
        return _step(self, *args, **kwargs)

    transformers.Seq2SeqTrainer.training_step = training_step
"""


def test_a_user_error_on_one_rank_stops_every_rank_and_exits_2(task, tmp_path) -> None:
    data, model = task
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_FAIL_ON_RANK_1)
    out = tmp_path / "run"
    job = run_launch(
        "train",
        "--data-path",
        str(data),
        "--model",
        str(model),
        *TINY_RUN,
        "--batch-size",
        "8",
        "--num-processes",
        "2",
        "--project-name",
        str(out),
        log=tmp_path / "job.log",
        env={
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(hook), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
            )
        },
        timeout=240,
    )
    # rank 0 was waiting for rank 1 in the gradient all-reduce; torchrun stopped it, the launcher kept rank 1's code
    assert job.rc == EXIT_USER_ERROR, job.tail()
    assert "[rank 1] job: train.csv row 37: the target is empty" in job.text
    assert "Job failed: exit code 2 (torchrun exit 1; worker exit codes by rank: {1: 2" in job.text
    assert not (out / "manifest.json").exists()


def test_a_killed_worker_fails_the_whole_job_promptly(task, tmp_path) -> None:
    import psutil

    data, model = task
    out = tmp_path / "run"
    job = Launch(
        "train",
        "--data-path",
        str(data),
        "--model",
        str(model),
        *TINY_RUN,
        "--epochs",
        "200",
        "--batch-size",
        "8",
        "--num-processes",
        "2",
        "--project-name",
        str(out),
        "--eval-strategy",
        "no",
        "--save-strategy",
        "no",
        log=tmp_path / "job.log",
    )
    job.wait_for(r"step 3/800 ")
    workers = [p for p in psutil.Process(job.process.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert len(workers) == 1, workers
    killed = time.monotonic()
    workers[0].kill()  # SIGKILL: no Python handler, no exit code recorded, like the OOM killer
    rc = job.finish(timeout=120)
    stopped_after = time.monotonic() - killed
    assert rc != 0, job.tail()
    assert stopped_after < 60, f"the job took {stopped_after:.0f} s to stop after a worker died"
    assert not (out / "manifest.json").exists()
    assert not [p for p in psutil.Process().children(recursive=True) if str(out) in " ".join(p.cmdline())]


# ------------------------------------------------------------------------------------------------- units
def test_exit_code_of_the_whole_job() -> None:
    assert resolve_exit_code(0, {}) == 0
    assert resolve_exit_code(1, {1: EXIT_USER_ERROR, 0: 1}) == EXIT_USER_ERROR  # bad input anywhere: don't retry
    assert resolve_exit_code(1, {0: 1, 1: EXIT_USER_ERROR}) == EXIT_USER_ERROR
    assert resolve_exit_code(1, {0: EXIT_PREEMPTED, 1: EXIT_PREEMPTED}, signalled=15) == EXIT_PREEMPTED
    assert resolve_exit_code(1, {}, signalled=2) == 130
    assert resolve_exit_code(1, {1: 1}) == 1
    assert resolve_exit_code(1, {}) == 1  # e.g. a worker killed by SIGKILL records nothing
    assert resolve_exit_code(-9, {}) == 137  # torchrun itself killed


def test_workers_record_their_exit_codes_for_the_launcher(tmp_path) -> None:
    assert report_exit_code(2, {"JOB_EXIT_CODE_DIR": str(tmp_path), "RANK": "3"}) == 2
    assert report_exit_code(0, {"JOB_EXIT_CODE_DIR": str(tmp_path), "RANK": "0"}) == 0  # success records nothing
    assert report_exit_code(1, {}) == 1  # not under job.launch: nothing to write
    time.sleep(0.01)
    report_exit_code(1, {"JOB_EXIT_CODE_DIR": str(tmp_path), "RANK": "1"})
    assert read_exit_codes(tmp_path) == {3: 2, 1: 1}
    assert list(read_exit_codes(tmp_path)) == [3, 1]  # in the order they failed


_BUILD = """
import sys, time
from pathlib import Path
from job.locks import build_once

target = Path(sys.argv[1])
def build():
    with (target / "builds.txt").open("a") as handle:
        handle.write("built\\n")
    time.sleep(0.5)
print(build_once(target, key=sys.argv[2], build=build))
"""


def test_only_one_process_builds_a_shared_input(tmp_path) -> None:
    target = tmp_path / "base_model"

    def start(key: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _BUILD, str(target), key], stdout=subprocess.PIPE, text=True)

    results = [p.communicate(timeout=60)[0].strip() for p in [start("k1") for _ in range(3)]]
    assert sorted(results) == ["False", "False", "True"]
    assert (target / "builds.txt").read_text() == "built\n"
    # another key (other data or seed) means another build
    assert start("k2").communicate(timeout=60)[0].strip() == "True"
    assert (target / "builds.txt").read_text() == "built\nbuilt\n"


def test_token_mean_loss_weighs_every_target_token_the_same(tiny_t5_dir) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    batch = tokenizer(
        ["the red cat sat", "a dog"],
        text_target=["red cat", "dog ran over the big tree"],
        return_tensors="pt",
        padding=True,
    )
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        outputs = model(**batch)
    tokens = int(batch["labels"].ne(-100).sum())
    assert float(token_mean_loss(outputs, batch["labels"])) == pytest.approx(float(outputs.loss), rel=1e-5)
    # as the Trainer calls it: divided by the target tokens of the whole step (all processes, all micro-batches)
    whole_step = token_mean_loss(outputs, batch["labels"], num_items_in_batch=torch.tensor(4 * tokens))
    assert float(whole_step) == pytest.approx(float(outputs.loss) / 4, rel=1e-5)


def test_micro_batches_under_ddp_train_like_one_plain_process(tiny_t5_dir, tmp_path) -> None:
    """Mixed lengths, so each rank cuts its rows into length-sorted micro-batches (not necessarily as many as
    the other rank): all but the last run under DDP's no_sync, so gradients are exchanged once per step. The
    step losses are still those of one process on whole random batches of the same 16 rows."""
    from test_sampling import write_length_correlated_task

    data = write_length_correlated_task(tmp_path / "data", train_rows=64, valid_rows=8)
    model = without_dropout(tiny_t5_dir, tmp_path / "t5")
    common = dict(data_path=str(data), model=str(model), **TINY_PARAMS, eval_batch_size=8)
    train(Seq2SeqParams(**common, project_name=str(tmp_path / "plain"), batch_size=16, microbatch_by_length=False))
    split = run_launch(
        "train",
        *flags(**common, project_name=tmp_path / "split", batch_size=8, num_processes=2),
        log=tmp_path / "split.log",
        timeout=420,
    )
    assert split.rc == 0, split.tail()
    plain_losses, split_losses = step_losses(tmp_path / "plain"), step_losses(tmp_path / "split")
    assert len(plain_losses) == len(split_losses) == 8
    assert split_losses == pytest.approx(plain_losses, rel=1e-3)
    plain, ours = _metrics(tmp_path / "plain"), _metrics(tmp_path / "split")
    assert ours["train_padding_share"] < plain["train_padding_share"] - 0.1  # the micro-batches did cut padding
    assert ours["eval_loss"] == pytest.approx(plain["eval_loss"], rel=1e-3)


def test_deepspeed_runs_each_step_as_one_batch() -> None:
    from job.training.build import group_cost

    assert group_cost(Seq2SeqParams(data_path="d", deepspeed="zero2"), cuda=False) is None
    assert group_cost(Seq2SeqParams(data_path="d", microbatch_by_length=False), cuda=False) is None
    assert group_cost(Seq2SeqParams(data_path="d"), cuda=True).min_tokens > 0
