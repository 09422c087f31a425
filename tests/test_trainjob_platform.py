"""Kubeflow Trainer v2: the environment a TrainJob's pods get (torch runtime), through job.platform.detect_topology
and job.launch into explicit torchrun flags, and what of it reaches the workers.

What Trainer v2.2 sets (kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go, pkg/constants): PET_NNODES =
numNodes, PET_NPROC_PER_NODE = numProcPerNode, else "auto" when resourcesPerNode asks for GPUs, else the node's CPU
request; PET_NODE_RANK from the pod's job-completion-index annotation; PET_MASTER_ADDR = <trainjob>-node-0-0.<trainjob>
(JobSet's pod host name in its headless Service) and PET_MASTER_PORT = 29500. The Indexed Job adds
JOB_COMPLETION_INDEX; the TrainJobStatus plugin the three KUBEFLOW_TRAINER_SERVER_* variables.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from job.errors import UserError
from job.launch import build_command, clean_env, describe, processes_per_node
from job.params import Seq2SeqParams
from job.platforms.detect import detect_platform
from job.platforms.topology import Topology, detect_topology
from job.progress_status import StatusEndpoint

REPO = Path(__file__).resolve().parents[1]
PY = "/usr/bin/python3"
TRAINJOB = "seq2seq-train"
MASTER = f"{TRAINJOB}-node-0-0.{TRAINJOB}"


def trainjob_pod_env(*, num_nodes: int, node_rank: int, nproc: str = "auto", name: str = TRAINJOB) -> dict[str, str]:
    """The variables of node ``node_rank``'s pod of a TrainJob on a torch runtime with progress reporting on."""
    return {
        # Trainer's torch plugin
        "PET_NNODES": str(num_nodes),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NODE_RANK": str(node_rank),
        "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
        "PET_MASTER_PORT": "29500",
        # Trainer's TrainJobStatus plugin (a projected volume at /var/run/secrets/kubeflow/trainer)
        "KUBEFLOW_TRAINER_SERVER_URL": "https://kubeflow-trainer-controller-manager.kubeflow-system.svc:10443"
        f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs/{name}/status",
        "KUBEFLOW_TRAINER_SERVER_CA_CERT": "/var/run/secrets/kubeflow/trainer/ca.crt",
        "KUBEFLOW_TRAINER_SERVER_TOKEN": "/var/run/secrets/kubeflow/trainer/token",
        # the Job controller (an Indexed Job) and the kubelet
        "JOB_COMPLETION_INDEX": str(node_rank),
        "HOSTNAME": f"{name}-node-0-{node_rank}",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        # the TrainJob's spec.trainer.env and the runtime's container env (k8s/trainjob.yaml, trainingruntime.yaml)
        "SEQ2SEQ_PARAMS": "/etc/seq2seq/params.json",
        "PATH": "/usr/local/bin:/usr/bin",
    }


def plan(env: dict[str, str], *, gpus: int, tmp_path: Path, requested: int | None = None) -> tuple[Topology, list[str]]:
    """What job.launch decides on this node: the topology and the command it starts."""
    topology = detect_topology(env, sm_root=tmp_path / "no-sagemaker")
    nproc = processes_per_node(requested=requested, topology=topology, gpus=gpus)
    return topology, build_command(["train"], nproc_per_node=nproc, topology=topology, python=PY)


@pytest.mark.parametrize("rank", [0, 1])
def test_each_node_of_a_two_node_trainjob_gets_explicit_torchrun_flags(rank: int, tmp_path: Path) -> None:
    topology, command = plan(trainjob_pod_env(num_nodes=2, node_rank=rank), gpus=4, tmp_path=tmp_path)
    # PET_NPROC_PER_NODE=auto: no fixed count, one process per visible GPU
    assert topology == Topology(
        nnodes=2, node_rank=rank, master_addr=MASTER, master_port=29500, nproc_per_node=None, source="pytorchjob"
    )
    assert command == [
        PY,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--node_rank",
        str(rank),
        "--master_addr",
        MASTER,
        "--master_port",
        "29500",
        "--nproc_per_node",
        "4",
        "--max_restarts",
        "0",
        "-m",
        "job",
        "train",
    ]
    line = describe(command=command, nproc_per_node=4, topology=topology, gpus=4, params=Seq2SeqParams(data_path="d"))
    assert line.startswith("Launching 2 node(s) × 4 process(es) = world size 8 on 4 CUDA GPU(s), DDP")
    assert f"(node rank {rank})" in line


def test_a_one_node_trainjob_is_standalone_torchrun_or_the_job_itself(tmp_path: Path) -> None:
    env = trainjob_pod_env(num_nodes=1, node_rank=0)
    topology, command = plan(env, gpus=4, tmp_path=tmp_path)
    assert (topology.nnodes, topology.master_addr) == (1, None)  # no rendezvous with itself
    assert command == [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "4",
        "--max_restarts",
        "0",
        "-m",
        "job",
        "train",
    ]
    assert plan(env, gpus=1, tmp_path=tmp_path)[1] == [PY, "-m", "job", "train"]  # one GPU: one plain process


def test_num_proc_per_node_of_the_trainjob_caps_the_processes_and_num_processes_wins(tmp_path: Path) -> None:
    env = trainjob_pod_env(num_nodes=2, node_rank=1, nproc="2")  # spec.trainer.numProcPerNode: 2
    topology, command = plan(env, gpus=4, tmp_path=tmp_path)
    assert topology.nproc_per_node == 2 and command[command.index("--nproc_per_node") + 1] == "2"
    assert plan(env, gpus=4, tmp_path=tmp_path, requested=1)[1][command.index("--nproc_per_node") + 1] == "1"
    with pytest.raises(UserError, match="8 processes per node but only 4 CUDA GPU"):
        plan(trainjob_pod_env(num_nodes=2, node_rank=0, nproc="8"), gpus=4, tmp_path=tmp_path)


def test_a_trainjob_without_gpus_runs_the_cpu_count_trainer_sets_unless_num_processes_says_otherwise(
    tmp_path: Path,
) -> None:
    # Trainer sets PET_NPROC_PER_NODE to the CPU request when resourcesPerNode has no GPUs: that many gloo
    # processes, each with one thread; num_processes=1 (a parameter) runs one process with every thread.
    env = trainjob_pod_env(num_nodes=1, node_rank=0, nproc="16")
    assert plan(env, gpus=0, tmp_path=tmp_path)[1][3:6] == ["--standalone", "--nproc_per_node", "16"]
    assert plan(env, gpus=0, tmp_path=tmp_path, requested=1)[1] == [PY, "-m", "job", "train"]


def test_workers_get_no_node_level_variables_but_keep_the_status_endpoint(tmp_path: Path) -> None:
    env = trainjob_pod_env(num_nodes=2, node_rank=0)
    workers = clean_env(env)
    assert not [name for name in workers if name.startswith("PET_")]  # torchrun's flags say it all
    assert StatusEndpoint.from_env(workers) == StatusEndpoint.from_env(env) is not None  # rank 0 reports progress
    assert workers["SEQ2SEQ_PARAMS"] == "/etc/seq2seq/params.json"
    assert detect_platform(env, sm_root=tmp_path).name == "kubernetes"


def test_trainer_never_sends_an_elastic_node_range_but_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="PET_NNODES=1:2 is an elastic range"):
        detect_topology({**trainjob_pod_env(num_nodes=2, node_rank=0), "PET_NNODES": "1:2"}, sm_root=tmp_path)


def test_the_shipped_trainjob_gives_the_topology_its_manifest_asks_for(tmp_path: Path) -> None:
    trainjob = yaml.safe_load((REPO / "k8s" / "trainjob.yaml").read_text())
    name, trainer = trainjob["metadata"]["name"], trainjob["spec"]["trainer"]
    gpus = int(trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"])
    nproc = str(trainer.get("numProcPerNode", "auto"))
    for rank in range(trainer["numNodes"]):
        topology, command = plan(
            trainjob_pod_env(num_nodes=trainer["numNodes"], node_rank=rank, nproc=nproc, name=name),
            gpus=gpus,
            tmp_path=tmp_path,
        )
        assert topology.nnodes == trainer["numNodes"] and topology.node_rank == rank
        assert topology.master_addr == f"{name}-node-0-0.{name}" and len(f"{name}-node-0-0") <= 63
        assert command[command.index("--nproc_per_node") + 1] == str(gpus)
