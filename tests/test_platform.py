"""Platform contracts (job.platforms): topology, folders, hyperparameters, channels, failure files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from job.data import load_data
from job.errors import UserError
from job.launch import wait_for_host, worker_env
from job.params import Seq2SeqParams
from job.platforms import failure, sagemaker
from job.platforms.detect import detect_platform
from job.platforms.overrides import apply_platform
from job.platforms.topology import DEFAULT_MASTER_PORT, Topology, detect_topology


def apply(overrides: dict, *, env: dict, sm_root: Path | None = None, params_file: str | None = None) -> dict:
    """What preflight does with the CLI overrides on this platform."""
    info = detect_platform(env, sm_root=sm_root)
    return apply_platform(overrides, info, env=env, params_file=params_file)


def launch_env(env: dict) -> dict:
    return worker_env(detect_platform(env), env)


# --------------------------------------------------------------------------------------------------- helpers
def sm_layout(
    root: Path,
    *,
    hyper: dict | str | None = None,
    hosts=("algo-1",),
    current="algo-1",
    resource: dict | str | None = None,
    channels: dict[str, dict[str, str]] | None = None,
    input_config: dict | None = None,
) -> Path:
    """A SageMaker /opt/ml tree under ``root``: config files, channels {name: {file: text}}, output folders."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    if resource is None:
        resource = {
            "current_host": current,
            "current_group_name": "homogeneousCluster",
            "hosts": list(hosts),
            "current_instance_type": "ml.g5.2xlarge",
            "network_interface_name": "eth0",
        }
    (config / "resourceconfig.json").write_text(resource if isinstance(resource, str) else json.dumps(resource))
    if hyper is not None:
        (config / "hyperparameters.json").write_text(hyper if isinstance(hyper, str) else json.dumps(hyper))
    if input_config is not None:
        (config / "inputdataconfig.json").write_text(json.dumps(input_config))
    for name, files in (channels or {}).items():
        folder = root / "input" / "data" / name
        folder.mkdir(parents=True)
        for file, text in files.items():
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_text(text)
    for sub in ("model", "output", "checkpoints"):
        (root / sub).mkdir()
    return root


CSV = "text,target\nthe red cat sat,red cat\na blue dog ran,blue dog\n"
JSONL = '{"text": "one green bird", "target": "green bird"}\n'


# -------------------------------------------------------------------------------------------------- topology
def test_local_is_one_node() -> None:
    assert detect_topology({}) == Topology(nnodes=1, node_rank=0, master_addr=None, source="local")
    assert detect_platform({}).name == "local"
    assert detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).name == "kubernetes"


def test_sagemaker_first_host_is_master_and_rank_is_index_of_current_host(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, hosts=("algo-1", "algo-2", "algo-3"), current="algo-3")
    topo = detect_topology({}, sm_root=root)
    assert (topo.nnodes, topo.node_rank, topo.master_addr, topo.source) == (3, 2, "algo-1", "sagemaker")
    assert topo.master_port == DEFAULT_MASTER_PORT
    # OPT_ML_ROOT moves /opt/ml; one host means a single node with no master address
    single = sm_layout(tmp_path / "one")
    assert detect_topology({"OPT_ML_ROOT": str(single)}) == Topology(source="sagemaker")
    assert launch_env({"OPT_ML_ROOT": str(root)}) == {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0"}
    assert launch_env({"OPT_ML_ROOT": str(root), "NCCL_SOCKET_IFNAME": "ens5"}) == {"GLOO_SOCKET_IFNAME": "eth0"}


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ('{"hosts": ["algo-1"], "current_host": ', "is not valid JSON"),
        ('["algo-1"]', "must hold a JSON object"),
        ({"hosts": [], "current_host": "algo-1"}, "'hosts' must be a non-empty list"),
        ({"hosts": ["algo-1", "algo-1"], "current_host": "algo-1"}, "lists a host twice"),
        ({"hosts": ["algo-1", "algo-2"], "current_host": "algo-9"}, "current_host 'algo-9' is not one of hosts"),
    ],
)
def test_malformed_resourceconfig_is_a_user_error_naming_the_file(tmp_path: Path, resource, message) -> None:
    root = sm_layout(tmp_path, resource=resource)
    with pytest.raises(UserError, match=message) as err:
        detect_topology({}, sm_root=root)
    assert "resourceconfig.json" in str(err.value)


def test_vertex_cluster_spec_chief_and_workers() -> None:
    pool = "cmle-training-workerpool{}-ab-{}:2222"
    cluster = {"workerpool0": [pool.format(0, 0)], "workerpool1": [pool.format(1, 0), pool.format(1, 1)]}

    def spec(kind: str, index: int) -> dict[str, str]:
        return {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}

    chief = detect_topology(spec("workerpool0", 0))
    assert (chief.nnodes, chief.node_rank, chief.master_addr, chief.master_port, chief.source) == (
        3,
        0,
        "cmle-training-workerpool0-ab-0",
        2222,
        "vertex",
    )
    # Vertex's own WORLD_SIZE/RANK (nodes) do not change the answer; MASTER_PORT overrides the spec's port
    worker = detect_topology({**spec("workerpool1", 1), "WORLD_SIZE": "3", "RANK": "2", "MASTER_PORT": "7777"})
    assert (worker.nnodes, worker.node_rank, worker.master_port) == (3, 2, 7777)
    legacy = {
        "CLUSTER_SPEC": json.dumps(
            {"cluster": {"chief": ["c-0:2222"], "worker": ["w-0:2222"]}, "task": {"type": "worker", "index": 0}}
        )
    }
    assert detect_topology(legacy).node_rank == 1
    alone = {"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["c-0:2222"]}, "task": {"type": "workerpool0"}})}
    assert detect_topology(alone) == Topology(master_port=2222, source="vertex")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "CLUSTER_SPEC is not valid JSON"),
        ('["a"]', "CLUSTER_SPEC must hold a JSON object"),
        ('{"cluster": {"workerpool0": ["c:1"]}}', 'must hold "cluster" and "task"'),
        ('{"cluster": {"workerpool0": ["a:1", "b:1"]}, "task": {"type": "workerpool0"}}', "exactly one replica"),
        (
            '{"cluster": {"workerpool0": ["c:1"], "workerpool2": ["r:1"]}, "task": {"type": "workerpool2"}}',
            "not a training node",
        ),
        (
            '{"cluster": {"workerpool0": ["c:1"], "workerpool1": ["w:1"]}, '
            '"task": {"type": "workerpool1", "index": 3}}',
            r"workerpool1\[3\] is not in cluster",
        ),
        ('{"cluster": {"workerpool0": ["c"]}, "task": {"type": "workerpool0"}}', "must be host:port"),
        ('{"cluster": {"workerpool0": "c:1"}, "task": {"type": "workerpool0"}}', "must be a list"),
    ],
)
def test_malformed_cluster_spec_is_a_user_error(value: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        detect_topology({"CLUSTER_SPEC": value})


def test_pytorchjob_world_size_and_rank_count_nodes() -> None:
    # Training operator >= 1.7: PET_* are node-level; WORLD_SIZE there counts processes and must be ignored
    pet = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_NPROC_PER_NODE": "4",
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "8",
        "RANK": "1",
    }
    expected = Topology(
        nnodes=2, node_rank=1, master_addr="job-master-0", master_port=23456, nproc_per_node=4, source="pytorchjob"
    )
    assert detect_topology(pet) == expected
    assert detect_topology({**pet, "PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "auto"}).nproc_per_node is None
    with pytest.raises(UserError, match="elastic range"):
        detect_topology({**pet, "PET_NNODES": "1:4"})
    # Older operators: one pod per node, WORLD_SIZE = pods, RANK = pod index
    old = {"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"}
    assert detect_topology(old) == Topology(
        nnodes=3, node_rank=2, master_addr="job-master-0", master_port=23456, source="pytorchjob"
    )


def test_indexed_job_and_explicit_override() -> None:
    env = {"NNODES": "3", "JOB_COMPLETION_INDEX": "2", "MASTER_ADDR": "train-0.train", "MASTER_PORT": "29400"}
    assert detect_topology(env) == Topology(
        nnodes=3, node_rank=2, master_addr="train-0.train", master_port=29400, source="indexed-job"
    )
    with pytest.raises(UserError, match=r"JOB_COMPLETION_INDEX=1 .* NNODES is not set"):
        detect_topology({"JOB_COMPLETION_INDEX": "1"})
    assert detect_topology({"JOB_COMPLETION_INDEX": "0"}).nnodes == 1


def test_explicit_env_wins_over_platform_files(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, hosts=("algo-1", "algo-2"), current="algo-2")
    env = {"NNODES": "1", "NPROC_PER_NODE": "2", "OPT_ML_ROOT": str(root)}
    assert detect_topology(env) == Topology(nproc_per_node=2, source="env")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NNODES": "two"}, r"NNODES='two' must be an integer >= 1"),
        ({"NNODES": "0"}, r"NNODES='0' must be an integer >= 1"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "m"}, "node rank 2 is not below the node count 2"),
        ({"NNODES": "2", "NODE_RANK": "1"}, "2 nodes need MASTER_ADDR"),
        ({"NNODES": "2", "MASTER_ADDR": "m", "MASTER_PORT": "70000"}, "above 65535"),
        ({"NNODES": "1", "NPROC_PER_NODE": "-1"}, "NPROC_PER_NODE='-1' must be an integer >= 1"),
        ({"MASTER_ADDR": "m", "WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' must be an integer"),
    ],
)
def test_bad_topology_values_are_user_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        detect_topology(env)


# ------------------------------------------------------------------------------------------ hyperparameters
def test_sagemaker_hyperparameters_arrive_as_strings_and_validate_into_types(tmp_path: Path) -> None:
    hyper = {
        "data_path": "/data",
        "epochs": "2",
        "batch-size": "16",
        "lr": "3e-4",
        "peft": "false",
        "model": '"builtin:t5-tiny"',
        "target_modules": '["q", "v"]',
        "valid_split": "none",
        "source_prefix": "summarize: ",
        "text_column": "123",
        "sagemaker_program": "train.py",
        "_tuning_objective_metric": "eval_loss",
    }
    (tmp_path / "hp.json").write_text(json.dumps(hyper))
    values = sagemaker.read_hyperparameters(tmp_path / "hp.json")
    assert "sagemaker_program" not in values and "_tuning_objective_metric" not in values
    assert values["batch_size"] == "16" and values["model"] == "builtin:t5-tiny"
    params = Seq2SeqParams(**values)
    assert (params.epochs, params.batch_size, params.lr, params.peft) == (2.0, 16, 3e-4, False)
    assert (params.model, params.target_modules, params.valid_split) == ("builtin:t5-tiny", "q,v", None)
    assert (params.source_prefix, params.text_column) == ("summarize: ", "123")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"epochs": "1",}', "is not valid JSON"),
        ('["epochs", "1"]', "must hold a JSON object"),
        ('{"lr": {"value": "1"}}', "hyperparameter 'lr' is a JSON object"),
    ],
)
def test_malformed_hyperparameters_are_user_errors(tmp_path: Path, text: str, message: str) -> None:
    root = sm_layout(tmp_path, hyper=text)
    with pytest.raises(UserError, match=message) as err:
        detect_platform({}, sm_root=root)
    assert "hyperparameters.json" in str(err.value)


def test_unknown_hyperparameter_is_named_with_a_hint(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, hyper={"learning_rate": "0.1"}, channels={"train": {"train.csv": CSV}})
    overrides = apply({}, env={}, sm_root=root)
    with pytest.raises(UserError, match="unknown parameter learning_rate: did you mean lr"):
        Seq2SeqParams(**overrides)


# -------------------------------------------------------------------------------------------------- channels
def test_train_channel_with_one_file_is_the_data_path(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, channels={"train": {"part/data.csv": CSV}})
    assert sagemaker.channel_data_path(sagemaker.channels(root)) == (str(root / "input/data/train/part/data.csv"), None)


def test_train_and_validation_channels_become_one_folder_of_splits(tmp_path: Path) -> None:
    root = sm_layout(
        tmp_path, channels={"train": {"data.csv": CSV}, "validation": {"valid.jsonl": JSONL}, "test": {"test.csv": CSV}}
    )
    data_path, valid_split = sagemaker.channel_data_path(sagemaker.channels(root), work_dir=tmp_path / "work")
    assert valid_split == "validation"
    assert sorted(p.name for p in Path(data_path).iterdir()) == ["train.csv", "validation.jsonl"]
    # built once: a second process of the node gets the same folder
    assert sagemaker.channel_data_path(sagemaker.channels(root), work_dir=tmp_path / "work")[0] == data_path
    bundle = load_data(data_path=data_path, valid_split=valid_split)
    assert (len(bundle.train), len(bundle.valid)) == (2, 1)


def test_train_channel_folder_of_splits_is_passed_whole(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, channels={"training": {"train.csv": CSV, "validation.csv": CSV}})
    assert sagemaker.channel_data_path(sagemaker.channels(root)) == (str(root / "input/data/training"), None)


def test_bad_channels_are_user_errors(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, channels={"train": {"a.csv": CSV, "b.csv": CSV}, "validation": {"v.csv": CSV}})
    with pytest.raises(UserError, match=r"channel 'train' .* must hold one data file .* found: a.csv, b.csv"):
        sagemaker.channel_data_path(sagemaker.channels(root), work_dir=tmp_path / "w")
    piped = sm_layout(tmp_path / "pipe", input_config={"train": {"TrainingInputMode": "Pipe"}})
    with pytest.raises(UserError, match="uses Pipe mode"):
        sagemaker.channels(piped)
    missing = sm_layout(tmp_path / "missing", input_config={"train": {"TrainingInputMode": "File"}})
    with pytest.raises(UserError, match=r"channel 'train' folder .* does not exist"):
        sagemaker.channel_data_path(sagemaker.channels(missing))


# ------------------------------------------------------------------------------------------- params priority
def test_sagemaker_values_fill_in_under_everything_the_user_set(tmp_path: Path) -> None:
    root = sm_layout(tmp_path, hyper={"epochs": "2", "lr": "0.01"}, channels={"train": {"train.csv": CSV}})
    merged = apply({}, env={}, sm_root=root)
    assert merged == {
        "project_name": str(root / "model"),
        "checkpoint_dir": str(root / "checkpoints"),
        "data_path": str(root / "input/data/train/train.csv"),
        "epochs": "2",
        "lr": "0.01",
    }
    # CLI flags > hyperparameters > SEQ2SEQ_* env > JSON > platform folders
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"data_path": "/mine", "project_name": "/json-out"}))
    env = {"SEQ2SEQ_CHECKPOINT_DIR": "/env-ckpt", "SEQ2SEQ_PARAMS": str(params_file)}
    merged = apply({"lr": "0.5"}, env=env, sm_root=root)
    assert merged == {"epochs": "2", "lr": "0.5"}
    inline = {"SEQ2SEQ_PARAMS": '{"checkpoint_dir": "/inline"}'}
    assert "checkpoint_dir" not in apply({}, env=inline, sm_root=root)


def test_vertex_folders_map_gs_uris_to_the_fuse_mount(tmp_path: Path) -> None:
    (tmp_path / "gcs").mkdir()
    env = {
        "AIP_MODEL_DIR": "gs://bucket/run/model/",
        "AIP_CHECKPOINT_DIR": "gs://bucket/run/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bucket/run/logs/",
        "GCS_FUSE_ROOT": str(tmp_path / "gcs"),
    }
    info = detect_platform(env)
    assert (info.name, info.model_dir) == ("vertex", str(tmp_path / "gcs/bucket/run/model"))
    assert info.tensorboard_dir == str(tmp_path / "gcs/bucket/run/logs")
    merged = apply({}, env=env)
    assert merged == {
        "project_name": str(tmp_path / "gcs/bucket/run/model"),
        "checkpoint_dir": str(tmp_path / "gcs/bucket/run/checkpoints"),
    }
    # no FUSE mount: the model folder is published to the gs:// URI; a gs:// checkpoint folder has no taker
    no_fuse = {**env, "GCS_FUSE_ROOT": str(tmp_path / "absent")}
    assert apply({}, env=no_fuse) == {"output_uri": "gs://bucket/run/model"}
    assert apply({}, env={"AIP_MODEL_DIR": "/gcs-style/local/model"}) == {"project_name": "/gcs-style/local/model"}


def test_unwritable_platform_folder_fails_at_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"vertex folder for project_name .* cannot be created"):
        apply({}, env={"AIP_MODEL_DIR": str(blocker / "model")})


# ----------------------------------------------------------------------------------------- failure and DNS
def test_failure_reason_goes_to_sagemaker_and_kubernetes_files(tmp_path: Path) -> None:
    root = sm_layout(tmp_path / "ml")
    termination = tmp_path / "termination-log"
    termination.write_text("")
    env = {"OPT_ML_ROOT": str(root), "TERMINATION_MESSAGE_PATH": str(termination), "HF_TOKEN": "s3cr3t-value"}
    reason = "bad\nthing with s3cr3t-value and hf_" + "a" * 30 + " " + "x" * 2000
    written = failure.write_failure(reason, env)
    assert written == [root / "output" / "failure", termination]
    for path in written:
        text = path.read_text()
        assert text.endswith("\n") and text.count("\n") == 1 and len(text) == failure.FAILURE_MAX_CHARS + 1
        assert text.startswith("bad thing with *** and *** xxx")
    # no platform: nothing is written, nothing is created
    assert failure.write_failure("x", {"TERMINATION_MESSAGE_PATH": str(tmp_path / "absent")}) == []
    assert not (tmp_path / "absent").exists()


def test_wait_for_host() -> None:
    assert wait_for_host("localhost", timeout_s=5) < 5
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"'no-such-host\.invalid' did not resolve within 1s"):
        wait_for_host("no-such-host.invalid", timeout_s=1, interval_s=0.2)
    assert time.monotonic() - start < 10
