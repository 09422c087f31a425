"""entrypoint.sh as the container runs it: real processes, simulated SageMaker / Vertex AI / PyTorchJob contracts.

The image's Python is this test's Python (its folder goes first on PATH), the SageMaker /opt/ml root moves with
OPT_ML_ROOT and Vertex's /gcs FUSE root with GCS_FUSE_ROOT; everything else is what the platforms provide.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from job import manifest

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "entrypoint.sh"
# Variables of the surrounding machine that would change the platform or topology the job detects.
PLATFORM_VARS = (
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "JOB_COMPLETION_INDEX",
    "CLUSTER_SPEC",
    "CLOUD_ML_JOB_ID",
    "OPT_ML_ROOT",
    "GCS_FUSE_ROOT",
    "TERMINATION_MESSAGE_PATH",
    "KUBERNETES_SERVICE_HOST",
    "TENSORBOARD_LOGGING_DIR",
    "NCCL_SOCKET_IFNAME",
    "GLOO_SOCKET_IFNAME",
)
# A run of a few seconds: the built-in tiny T5 learns nothing in it, but every step and output is real.
FAST = {
    "model": "builtin:t5-tiny",
    "epochs": "1",
    "batch_size": "16",
    "max_samples": "32",
    "max_seq_length": "32",
    "max_target_length": "8",
    "early_stopping_patience": "0",
    "save_total_limit": "1",
}

pytestmark = pytest.mark.skipif(not (REPO / "job" / "launch.py").exists(), reason="job.launch is not there yet")


def container_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS and not k.startswith(("PET_", "AIP_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # tiny models on a shared CI machine: more threads only contend
    env.update(extra)
    return env


def entrypoint(*args: str, env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        env=container_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def as_env(params: dict[str, str]) -> dict[str, str]:
    return {f"SEQ2SEQ_{k.upper()}": v for k, v in params.items()}


def sagemaker_root(tmp_path: Path, task_dir: Path, hyperparameters: dict[str, str]) -> Path:
    """/opt/ml as SageMaker lays it out for one host with train and validation channels."""
    root = tmp_path / "opt_ml"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": "algo-1",
                "current_group_name": "homogeneousCluster",
                "hosts": ["algo-1"],
                "current_instance_type": "ml.g5.2xlarge",
                "network_interface_name": "eth0",
            }
        )
    )
    channels = {"train": "train.csv", "validation": "validation.csv"}
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                name: {
                    "TrainingInputMode": "File",
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None",
                }
                for name in channels
            }
        )
    )
    for name, file in channels.items():
        (root / "input" / "data" / name).mkdir(parents=True)
        shutil.copy(task_dir / file, root / "input" / "data" / name / f"part-0000-{name}.csv")
    for sub in ("model", "output", "checkpoints"):
        (root / sub).mkdir()
    return root


def assert_complete_model(folder: Path) -> None:
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "metrics.json"} <= {
        p.name for p in folder.iterdir()
    }, sorted(p.name for p in folder.iterdir())
    assert manifest.verify(folder, checksums=True)


def test_sagemaker_string_hyperparameters_and_channels_give_a_model_in_opt_ml_model(keywords_task_dir, tmp_path):
    hyper = {k: json.dumps(v) if k == "model" else v for k, v in FAST.items()}  # a framework-estimator-style value
    root = sagemaker_root(tmp_path, keywords_task_dir, {**hyper, "sagemaker_job_name": "seq2seq-1"})
    done = entrypoint("train", env={"OPT_ML_ROOT": str(root), "TRAINING_JOB_NAME": "seq2seq-1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_model(root / "model")
    assert [p.name for p in (root / "checkpoints").iterdir()] and not (root / "model" / "checkpoints").exists()
    saved = json.loads((root / "model" / "training_params.json").read_text())
    assert (saved["epochs"], saved["batch_size"], saved["model"]) == (1.0, 16, "builtin:t5-tiny")
    assert saved["valid_split"] == "validation" and saved["checkpoint_dir"] == str(root / "checkpoints")
    assert sorted(p.name for p in Path(saved["data_path"]).iterdir()) == ["train.csv", "validation.csv"]
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert metrics["data"]["splits"]["validation"]["rows"] == 32
    assert not (root / "output" / "failure").exists()


def test_sagemaker_bad_hyperparameter_exits_2_with_the_reason_in_the_failure_file(keywords_task_dir, tmp_path):
    root = sagemaker_root(tmp_path, keywords_task_dir, {**FAST, "learning_rate": "0.1"})
    done = entrypoint(env={"OPT_ML_ROOT": str(root)}, cwd=tmp_path)  # no arguments: SageMaker's `train`
    assert done.returncode == 2, done.stderr[-3000:]
    reason = (root / "output" / "failure").read_text()
    assert "unknown parameter learning_rate: did you mean lr?" in reason
    assert reason.count("\n") == 1 and len(reason) <= 1025
    assert not list((root / "model").iterdir())


def test_vertex_outputs_go_where_aip_variables_say(keywords_task_dir, tmp_path):
    gcs = tmp_path / "gcs"
    (gcs / "bucket").mkdir(parents=True)
    base = "gs://bucket/jobs/run1"
    env = {
        **as_env({**FAST, "data_path": str(keywords_task_dir / "train.csv"), "log": "tensorboard"}),
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
        "GCS_FUSE_ROOT": str(gcs),
        "CLOUD_ML_JOB_ID": "123",
        "CLUSTER_SPEC": json.dumps(
            {"cluster": {"workerpool0": ["localhost:2222"]}, "task": {"type": "workerpool0", "index": 0}, "job": "{}"}
        ),
    }
    done = entrypoint("train", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = gcs / "bucket" / "jobs" / "run1"
    assert_complete_model(run / "model")
    assert list((run / "checkpoints").glob("checkpoint-*"))
    assert list((run / "logs").rglob("events.out.tfevents.*"))
    assert not (tmp_path / "seq2seq-output").exists()


def test_pytorchjob_two_nodes_train_together_and_write_one_model(keywords_task_dir, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "shared" / "model"
    params = as_env({**FAST, "data_path": str(keywords_task_dir / "train.csv"), "project_name": str(out)})
    # What the Kubeflow training operator sets in each pod: node-level WORLD_SIZE and RANK
    nodes = []
    for rank in (0, 1):
        env = container_env(
            {**params, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)}
        )
        (tmp_path / f"node{rank}").mkdir()
        log = (tmp_path / f"node{rank}.log").open("w")
        nodes.append(
            (
                subprocess.Popen(
                    ["bash", str(ENTRYPOINT), "train"],
                    env=env,
                    cwd=tmp_path / f"node{rank}",
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    for process, log in nodes:
        try:
            process.wait(timeout=300)
        finally:
            process.kill() if process.poll() is None else None
            log.close()
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert [p.returncode for p, _ in nodes] == [0, 0], "\n=====\n".join(text[-3000:] for text in logs)
    assert "topology from pytorchjob (node rank 1)" in logs[1] and "--nnodes 2 --node_rank 1" in logs[1]
    assert_complete_model(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hardware"]["world_size"] == 2
    # 32 rows, batch 16 per process, 2 processes: 1 optimizer step (one process would take 2)
    assert metrics["global_step"] == 1
    assert not list(tmp_path.glob("node*/seq2seq-output"))


def test_other_commands_run_as_given_in_place_of_the_entrypoint(tmp_path):
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "python", "-c", "import os; print(os.getpid())"],
        env=container_env({}),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert int(stdout) == process.pid  # exec: the command *is* the container's process and gets its signals
    done = entrypoint("bash", "-c", "exit 7", env={}, cwd=tmp_path)
    assert done.returncode == 7


def test_no_arguments_means_train_and_kubernetes_gets_the_reason(tmp_path):
    termination = tmp_path / "termination-log"
    termination.write_text("")
    done = entrypoint(
        env={"TERMINATION_MESSAGE_PATH": str(termination), "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "data_path is required" in termination.read_text()
    flags_only = entrypoint("--epochs", "-1", env={}, cwd=tmp_path, timeout=120)  # flags alone: train
    assert flags_only.returncode == 2 and "epochs='-1'" in flags_only.stderr, flags_only.stderr[-3000:]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_train_through_the_entrypoint_on_gpus_in_bf16(keywords_task_dir, tmp_path):
    out = tmp_path / "gpu-model"
    params = {
        **FAST,
        "max_samples": "400",
        "epochs": "2",
        "data_path": str(keywords_task_dir),
        "valid_split": "validation",
        "mixed_precision": "bf16",
        "project_name": str(out),
    }
    done = entrypoint("train", env=as_env(params), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_model(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hardware"]["device"] == "cuda" and metrics["peak_gpu_memory_mb"] > 0
    import torch

    assert metrics["hardware"]["world_size"] == torch.cuda.device_count()  # one process per visible GPU
    print(
        "GPU run:",
        json.dumps(
            {
                k: metrics.get(k)
                for k in (
                    "train_runtime",
                    "train_samples_per_second",
                    "train_tokens_per_second",
                    "eval_loss",
                    "peak_gpu_memory_mb",
                    "hardware",
                )
            }
        ),
    )
