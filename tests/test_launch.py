"""``python -m job.launch``: how many processes, which command, which environment; checks before any start;
SIGTERM passed through torchrun to every worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from conftest import write_task
from launch_helpers import TINY_RUN, Launch, launch_env

from job import manifest
from job.errors import EXIT_PREEMPTED, EXIT_USER_ERROR, UserError
from job.launch import build_command, clean_env, describe, processes_per_node
from job.params import Seq2SeqParams
from job.platforms.topology import Topology

PY = "/usr/bin/python3"
ARGV = ["train", "--params", "job.json"]


def test_processes_per_node_num_processes_then_platform_then_gpus_then_one() -> None:
    local = Topology()
    assert processes_per_node(requested=None, topology=local, gpus=0) == 1
    assert processes_per_node(requested=None, topology=local, gpus=8) == 8
    assert processes_per_node(requested=None, topology=Topology(nproc_per_node=4), gpus=8) == 4
    assert processes_per_node(requested=2, topology=Topology(nproc_per_node=4), gpus=8) == 2
    assert processes_per_node(requested=2, topology=local, gpus=0) == 2  # CPU processes (gloo)
    with pytest.raises(UserError, match="4 processes per node but only 2 CUDA GPU"):
        processes_per_node(requested=4, topology=local, gpus=2)


def test_one_process_on_one_node_is_the_job_itself() -> None:
    assert build_command(ARGV, nproc_per_node=1, topology=Topology(), python=PY) == [PY, "-m", "job", *ARGV]


def test_one_node_many_processes_is_standalone_torchrun() -> None:
    assert build_command(ARGV, nproc_per_node=8, topology=Topology(), python=PY) == [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "8",
        "--max_restarts",
        "0",
        "-m",
        "job",
        *ARGV,
    ]
    # DeepSpeed needs torchrun's environment even for a single process
    single = build_command(ARGV, nproc_per_node=1, topology=Topology(), needs_launcher=True, python=PY)
    assert single[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def test_many_nodes_get_explicit_rendezvous_flags() -> None:
    topology = Topology(nnodes=4, node_rank=3, master_addr="job-0.svc", master_port=23456, source="env")
    assert build_command(ARGV, nproc_per_node=8, topology=topology, python=PY) == [
        PY,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "4",
        "--node_rank",
        "3",
        "--master_addr",
        "job-0.svc",
        "--master_port",
        "23456",
        "--nproc_per_node",
        "8",
        "--max_restarts",
        "0",
        "-m",
        "job",
        *ARGV,
    ]
    # one process per node on several nodes still needs torchrun
    one_each = build_command(ARGV, nproc_per_node=1, topology=topology, python=PY)
    assert one_each[:3] == [PY, "-m", "torch.distributed.run"] and "--nnodes" in one_each


def test_node_level_rank_variables_never_reach_the_workers() -> None:
    platform = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "job-0",
        "MASTER_PORT": "23456",
        "NODE_RANK": "1",
        "NNODES": "2",
        "NPROC_PER_NODE": "8",
        "PET_NNODES": "2",
        "PET_RDZV_BACKEND": "c10d",
        "TORCHELASTIC_RUN_ID": "x",
        "GROUP_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "PATH": "/usr/bin",
        "SEQ2SEQ_LR": "1e-4",
        "HF_TOKEN": "hf_x",
        "NCCL_DEBUG": "INFO",
        "JOB_COMPLETION_INDEX": "1",
    }
    env = clean_env(platform, extra={"NCCL_SOCKET_IFNAME": "eth0"}, cpu_threads=4)
    assert env == {
        "PATH": "/usr/bin",
        "SEQ2SEQ_LR": "1e-4",
        "HF_TOKEN": "hf_x",
        "NCCL_DEBUG": "INFO",
        "JOB_COMPLETION_INDEX": "1",
        "NCCL_SOCKET_IFNAME": "eth0",
        "OMP_NUM_THREADS": "4",
    }
    assert clean_env({"OMP_NUM_THREADS": "2"}, cpu_threads=4)["OMP_NUM_THREADS"] == "2"  # the user's choice stays
    assert "OMP_NUM_THREADS" not in clean_env({}, cpu_threads=None)  # GPUs: torchrun's default


def test_the_launch_line_says_what_starts_and_the_effective_batch() -> None:
    params = Seq2SeqParams(data_path="d.csv", batch_size=4, gradient_accumulation=2, deepspeed="zero3")
    topology = Topology(nnodes=2, node_rank=1, master_addr="m", source="sagemaker")
    command = build_command(ARGV, nproc_per_node=8, topology=topology, needs_launcher=True, python=PY)
    line = describe(command=command, nproc_per_node=8, topology=topology, gpus=8, params=params)
    assert line.startswith("Launching 2 node(s) × 8 process(es) = world size 16 on 8 CUDA GPU(s), DeepSpeed zero3")
    assert "topology from sagemaker (node rank 1)" in line
    assert "torchrun --nnodes 2 --node_rank 1 --master_addr m --master_port 29500 --nproc_per_node 8" in line
    assert line.endswith("effective batch 128 = 4 per device × 2 accumulation × 16")


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "job.launch", *args], capture_output=True, text=True, env=launch_env(env), timeout=120
    )


def test_bad_params_and_topology_fail_before_anything_starts(tmp_path) -> None:
    started = time.monotonic()
    bad = _launch("train", "--data-path", "d.csv", "--deepspeed", "zero9", "--project-name", str(tmp_path / "o"))
    assert bad.returncode == EXIT_USER_ERROR
    assert "deepspeed=zero9 is neither zero2, zero3, zero3_offload nor a path" in bad.stderr
    assert "torch.distributed.run" not in bad.stderr and not (tmp_path / "o").exists()

    no_master = _launch("train", "--data-path", "d.csv", env={"NNODES": "2", "NODE_RANK": "1"})
    assert no_master.returncode == EXIT_USER_ERROR
    assert "2 nodes need MASTER_ADDR" in no_master.stderr
    assert time.monotonic() - started < 60
    # other commands go straight to the job, unchanged
    assert _launch("--version").stdout.startswith("seq2seq-job ")


def test_sigterm_reaches_every_worker_which_checkpoint_and_exit_143(tiny_t5_dir, tmp_path) -> None:
    data = write_task(tmp_path / "data", kind="keywords", train_rows=64, valid_rows=16)
    out = tmp_path / "run"
    job = Launch(
        "train",
        "--data-path",
        str(data),
        "--model",
        str(tiny_t5_dir),
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
        "epoch",
        log=tmp_path / "job.log",
    )
    job.wait_for(r"step 6/800 ")
    signalled = time.monotonic()
    job.process.send_signal(signal.SIGTERM)  # what Kubernetes/SageMaker do before they kill the container
    rc = job.finish(timeout=120)
    assert rc == EXIT_PREEMPTED, job.tail()
    assert time.monotonic() - signalled < 60
    assert "Received SIGTERM: passing it to torchrun" in job.text
    assert "Job stopped by SIGTERM: exit code 143 (torchrun exit 1; worker exit codes by rank:" in job.text
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and manifest.verify(checkpoints[-1])  # both ranks stopped at the same step and saved it
    assert int(checkpoints[-1].name.split("-")[1]) > 6
    assert not (out / "manifest.json").exists()
