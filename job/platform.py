"""Where the job runs, and what that platform hands it: topology, paths, parameters and the failure reason.

One image runs unchanged on Kubernetes, Amazon SageMaker, Google Vertex AI and a workstation. Each platform
describes the same few facts in its own way; this module reads them and hands the rest of the job plain values:

* :func:`detect_topology` → :class:`~job.topology.Topology` (nodes, this node's rank, master address/port), the
  input of :mod:`job.launch`, which turns it into explicit torchrun flags.
* :func:`detect_platform` → :class:`PlatformInfo` (model/checkpoint/tensorboard folders, SageMaker
  hyperparameters and data channels, where to write a failure reason).
* :func:`apply_platform` merges the platform's values under the user's own (see the priority below) for
  :mod:`job.cli`; :func:`write_failure` writes the one-line failure reason where the platform shows it.

Topology, first match wins (every value is node-level: one entry per machine/pod, never per process):

1. ``NNODES`` set: explicit override. ``NODE_RANK`` (default ``JOB_COMPLETION_INDEX``, so an Indexed Job
   needs only ``NNODES`` and ``MASTER_ADDR``), ``MASTER_ADDR``, ``MASTER_PORT``, ``NPROC_PER_NODE``.
2. SageMaker ``<root>/input/config/resourceconfig.json``: ``hosts`` in the order listed, the first is the master;
   this node's rank is the index of ``current_host``.
3. Vertex AI ``CLUSTER_SPEC``: ``workerpool0`` (or ``chief``/``master``) is node 0, ``workerpool1`` (``worker``)
   index *i* is node 1 + *i*; the master is ``workerpool0[0]``.
4. Kubeflow PyTorchJob with ``PET_NNODES`` (operator ≥ 1.7): ``PET_NNODES``, ``PET_NODE_RANK``,
   ``PET_MASTER_ADDR``/``MASTER_ADDR``, ``PET_MASTER_PORT``/``MASTER_PORT``, ``PET_NPROC_PER_NODE``.
5. ``MASTER_ADDR`` + ``WORLD_SIZE`` + ``RANK`` (Kubeflow PyTorchJob without ``PET_*``, Vertex without a
   ``CLUSTER_SPEC``): one pod per node, so ``WORLD_SIZE`` counts nodes and ``RANK`` is the node rank.
6. Otherwise one node (torchrun ``--standalone`` or a single process).

Parameter priority, highest first: CLI flags > SageMaker hyperparameters.json > ``SEQ2SEQ_*`` environment >
JSON (``--params``/``SEQ2SEQ_PARAMS``) > the platform's folders (SageMaker channels, ``/opt/ml/model``,
``/opt/ml/checkpoints``; Vertex ``AIP_*``) > built-in defaults.

Two variables exist only for tests and unusual setups: ``OPT_ML_ROOT`` (default ``/opt/ml``) and
``GCS_FUSE_ROOT`` (default ``/gcs``). ``TERMINATION_MESSAGE_PATH`` names the Kubernetes termination-message
file when a pod spec moves it from ``/dev/termination-log``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job import sagemaker
from job.errors import UserError
from job.topology import Topology

log = logging.getLogger(__name__)

SM_ROOT_ENV = "OPT_ML_ROOT"
GCS_ROOT_ENV = "GCS_FUSE_ROOT"
TERMINATION_LOG_ENV = "TERMINATION_MESSAGE_PATH"
DEFAULT_SM_ROOT = Path("/opt/ml")
DEFAULT_GCS_ROOT = Path("/gcs")
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
DEFAULT_MASTER_PORT = 29500
PYTORCHJOB_MASTER_PORT = 23456  # the Kubeflow training operator's default
FAILURE_MAX_CHARS = 1024  # SageMaker keeps the first 1024 characters of /opt/ml/output/failure as FailureReason

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}")


@dataclass(frozen=True)
class PlatformInfo:
    """What the platform provides; ``None`` where it provides nothing."""

    name: str  # sagemaker | vertex | kubernetes | local
    model_dir: str | None = None  # final model folder (a local path, or a gs:// URI when no FUSE mount exists)
    checkpoint_dir: str | None = None
    output_data_dir: str | None = None  # SageMaker /opt/ml/output/data (uploaded as output.tar.gz)
    tensorboard_dir: str | None = None
    failure_files: tuple[Path, ...] = ()
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # SageMaker, keys normalised to snake_case
    channels: dict[str, Path] = field(default_factory=dict)  # SageMaker data channels by name
    nccl_socket_ifname: str | None = None


# ------------------------------------------------------------------------------------------------ detection
def sagemaker_root(env: Mapping[str, str] | None = None, sm_root: Path | None = None) -> Path:
    """The SageMaker ``/opt/ml`` folder (``OPT_ML_ROOT`` moves it, for tests)."""
    env = os.environ if env is None else env
    return Path(sm_root or env.get(SM_ROOT_ENV) or DEFAULT_SM_ROOT)


def detect_platform(env: Mapping[str, str] | None = None, *, sm_root: Path | None = None) -> PlatformInfo:
    """Read the platform's contract from ``env`` (default ``os.environ``) and the SageMaker config files."""
    env = os.environ if env is None else env
    termination = _termination_log(env)
    root = sagemaker_root(env, sm_root)
    config = root / "input" / "config"
    resource_config = config / "resourceconfig.json"
    if resource_config.is_file() or (config / "hyperparameters.json").is_file():
        resource = sagemaker.read_resource_config(resource_config) if resource_config.is_file() else {}
        checkpoints = sagemaker.checkpoint_dir(config / "checkpointconfig.json", root)
        return PlatformInfo(
            name="sagemaker",
            model_dir=str(root / "model"),
            checkpoint_dir=checkpoints,
            output_data_dir=str(root / "output" / "data"),
            failure_files=(root / "output" / "failure", *termination),
            hyperparameters=sagemaker.read_hyperparameters(config / "hyperparameters.json"),
            channels=sagemaker.channels(root),
            nccl_socket_ifname=resource.get("network_interface_name") or None,
        )
    aip = {key: env.get(key) for key in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR")}
    if env.get("CLUSTER_SPEC") or env.get("CLOUD_ML_JOB_ID") or any(aip.values()):
        return PlatformInfo(
            name="vertex",
            model_dir=_vertex_dir(aip["AIP_MODEL_DIR"], env),
            checkpoint_dir=_vertex_dir(aip["AIP_CHECKPOINT_DIR"], env),
            tensorboard_dir=_vertex_dir(aip["AIP_TENSORBOARD_LOG_DIR"], env),
            failure_files=termination,
        )
    name = "kubernetes" if env.get("KUBERNETES_SERVICE_HOST") else "local"
    return PlatformInfo(name=name, failure_files=termination)


def detect_topology(env: Mapping[str, str] | None = None, *, sm_root: Path | None = None) -> Topology:
    """This node's place in the job, from the first platform contract that applies (see the module doc)."""
    env = os.environ if env is None else env
    nproc = _nproc(env)
    if env.get("NNODES"):
        return _checked(
            nnodes=_int(env, "NNODES", 1),
            node_rank=_int(env, "NODE_RANK", 0, default=env.get("JOB_COMPLETION_INDEX", "0")),
            master_addr=env.get("MASTER_ADDR") or None,
            master_port=_int(env, "MASTER_PORT", 1, default=str(DEFAULT_MASTER_PORT)),
            nproc_per_node=nproc,
            source="indexed-job" if env.get("JOB_COMPLETION_INDEX") else "env",
        )
    resource_config = sagemaker_root(env, sm_root) / "input" / "config" / "resourceconfig.json"
    if resource_config.is_file():
        resource = sagemaker.read_resource_config(resource_config)
        hosts = resource["hosts"]
        return _checked(
            nnodes=len(hosts),
            node_rank=hosts.index(resource["current_host"]),
            master_addr=hosts[0] if len(hosts) > 1 else None,
            master_port=_int(env, "MASTER_PORT", 1, default=str(DEFAULT_MASTER_PORT)),
            nproc_per_node=nproc,
            source="sagemaker",
        )
    if env.get("CLUSTER_SPEC"):
        return _vertex_topology(env, nproc)
    if env.get("PET_NNODES"):
        return _pet_topology(env, nproc)
    if env.get("MASTER_ADDR") and env.get("WORLD_SIZE"):
        return _checked(
            nnodes=_int(env, "WORLD_SIZE", 1),
            node_rank=_int(env, "RANK", 0, default="0"),
            master_addr=env["MASTER_ADDR"],
            master_port=_int(env, "MASTER_PORT", 1, default=str(PYTORCHJOB_MASTER_PORT)),
            nproc_per_node=nproc,
            source="pytorchjob",
        )
    if env.get("JOB_COMPLETION_INDEX", "0") != "0":
        raise UserError(
            f"JOB_COMPLETION_INDEX={env['JOB_COMPLETION_INDEX']} (an Indexed Job pod) but NNODES is not set: set "
            "NNODES to the Job's completions and MASTER_ADDR to the index-0 pod's host name (see k8s/indexed-job.yaml)"
        )
    return Topology(nproc_per_node=nproc, source="local")


def _vertex_topology(env: Mapping[str, str], nproc: int | None) -> Topology:
    spec = _json_env(env, "CLUSTER_SPEC")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError('CLUSTER_SPEC must hold "cluster" and "task" objects (Vertex AI sets it); got ' + _keys(spec))
    chief = _pool(cluster, ("workerpool0", "chief", "master"))
    workers = _pool(cluster, ("workerpool1", "worker"))
    if len(chief) != 1:
        raise UserError(f"CLUSTER_SPEC: workerpool0 must have exactly one replica (the master), found {len(chief)}")
    kind, index = task.get("type"), task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError(f"CLUSTER_SPEC: task.index must be a non-negative integer, got {index!r}")
    if kind in ("workerpool0", "chief", "master"):
        node_rank = 0
    elif kind in ("workerpool1", "worker"):
        if index >= len(workers):
            raise UserError(f"CLUSTER_SPEC: task {kind}[{index}] is not in cluster.{kind} ({len(workers)} replicas)")
        node_rank = 1 + index
    else:
        raise UserError(
            f"CLUSTER_SPEC: task type {kind!r} is not a training node; run this image in workerpool0 (one "
            "replica) and workerpool1 (more nodes); reduction servers (workerpool2) use their own image"
        )
    host, _, port = chief[0].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"CLUSTER_SPEC: workerpool0 address {chief[0]!r} must be host:port")
    return _checked(
        nnodes=1 + len(workers),
        node_rank=node_rank,
        master_addr=host if workers else None,
        master_port=_int(env, "MASTER_PORT", 1, default=port),
        nproc_per_node=nproc,
        source="vertex",
    )


def _pet_topology(env: Mapping[str, str], nproc: int | None) -> Topology:
    nnodes = env["PET_NNODES"]
    low, _, high = nnodes.partition(":")
    if high and low != high:
        raise UserError(f"PET_NNODES={nnodes} is an elastic range; this job needs a fixed node count (min = max)")
    return _checked(
        nnodes=_int({"PET_NNODES": low}, "PET_NNODES", 1),
        node_rank=_int(env, "PET_NODE_RANK", 0, default=env.get("RANK", "0")),
        master_addr=env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or None,
        master_port=_int(env, "PET_MASTER_PORT", 1, default=env.get("MASTER_PORT", str(PYTORCHJOB_MASTER_PORT))),
        nproc_per_node=nproc,
        source="pytorchjob",
    )


def _checked(*, nnodes: int, node_rank: int, master_addr: str | None, master_port: int,
             nproc_per_node: int | None, source: str) -> Topology:  # fmt: skip
    if node_rank >= nnodes:
        raise UserError(f"{source} topology: node rank {node_rank} is not below the node count {nnodes}")
    if master_port > 65535:
        raise UserError(f"{source} topology: master port {master_port} is above 65535")
    if nnodes > 1 and not master_addr:
        raise UserError(f"{source} topology: {nnodes} nodes need MASTER_ADDR (the host name of node 0)")
    return Topology(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr if nnodes > 1 else None,
                    master_port=master_port, nproc_per_node=nproc_per_node, source=source)  # fmt: skip


def _nproc(env: Mapping[str, str]) -> int | None:
    """Processes per node when the user or the operator fixes it; None = one per visible GPU."""
    for name in ("NPROC_PER_NODE", "PET_NPROC_PER_NODE"):
        value = env.get(name, "").strip()
        if value and value not in ("auto", "gpu", "cpu"):
            return _int(env, name, 1)
    return None


def _int(env: Mapping[str, str], name: str, minimum: int, *, default: str | None = None) -> int:
    raw = env.get(name, default)
    text = "" if raw is None else str(raw).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise UserError(f"{name}={raw!r} must be an integer >= {minimum}")
    return int(text)


def _pool(cluster: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    for name in names:
        if name in cluster:
            hosts = cluster[name]
            if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
                raise UserError(f'CLUSTER_SPEC: cluster.{name} must be a list of "host:port" strings')
            return hosts
    return []


# ---------------------------------------------------------------------------------------------------- Vertex
def gcs_local_path(uri: str, env: Mapping[str, str] | None = None) -> str | None:
    """``gs://bucket/path`` → ``/gcs/bucket/path`` when the Cloud Storage FUSE mount exists, else ``None``."""
    env = os.environ if env is None else env
    if not uri.startswith("gs://"):
        return uri.rstrip("/") or uri
    root = Path(env.get(GCS_ROOT_ENV) or DEFAULT_GCS_ROOT)
    bucket_and_path = uri[len("gs://") :].strip("/")
    return str(root / bucket_and_path) if root.is_dir() and bucket_and_path else None


def _vertex_dir(value: str | None, env: Mapping[str, str]) -> str | None:
    if not value:
        return None
    local = gcs_local_path(value, env)
    return local if local is not None else value.rstrip("/")


# ---------------------------------------------------------------------------------------------- params merge
# PlatformInfo attribute → the parameter that takes a local folder, and the one that takes a remote URI
# (parameters are used only if Seq2SeqParams has them, so this module never runs ahead of params.py).
_FOLDER_PARAMS = {"model_dir": ("project_name", "output_uri"), "checkpoint_dir": ("checkpoint_dir", None)}
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"  # read by transformers' TensorBoardCallback


def platform_overrides(
    info: PlatformInfo, *, fields: Iterable[str] | None = None, skip: Iterable[str] = ()
) -> dict[str, str]:
    """The parameters the platform implies (folders, data channels), as lowest-priority values.

    ``fields`` are the parameter names that exist (default: Seq2SeqParams' fields); names in ``skip`` (set by
    the user) are left out. A gs:// folder without a FUSE mount goes to the remote-URI parameter when there
    is one; a folder that no parameter takes is logged.
    """
    if fields is None:
        from job.params import Seq2SeqParams

        fields = Seq2SeqParams.model_fields
    known = set(fields) - set(skip)
    out: dict[str, str] = {}
    for attr, (local_param, uri_param) in _FOLDER_PARAMS.items():
        value = getattr(info, attr)
        if not value:
            continue
        remote = "://" in value
        param = uri_param if remote else local_param
        if param and param in known:
            out[param] = value
        elif not (param and param in skip):
            log.warning("%s: %s=%s is not used (no parameter takes it in this version)", info.name, attr, value)
    if info.channels and "data_path" in known:
        data = sagemaker.channel_data_path(info.channels)
        if data is not None:
            out["data_path"] = data[0]
            if data[1] and "valid_split" in known:
                out["valid_split"] = data[1]
    return out


def apply_platform(
    overrides: Mapping[str, Any],
    *,
    params_file: str | None = None,
    env: Mapping[str, str] | None = None,
    sm_root: Path | None = None,
) -> dict[str, Any]:
    """CLI overrides completed with the platform's values, each below everything the user set explicitly."""
    env = os.environ if env is None else env
    info = detect_platform(env, sm_root=sm_root)
    if info.name == "local":
        return dict(overrides)
    explicit = set(overrides) | set(info.hyperparameters) | _env_param_names(env) | _json_param_names(params_file, env)
    implied = platform_overrides(info, skip=explicit)
    for name in ("project_name", "checkpoint_dir"):
        if name in implied:
            _check_writable(Path(implied[name]), what=f"{info.name} folder for {name}")
    if info.tensorboard_dir and "://" not in info.tensorboard_dir and env is os.environ:
        os.environ.setdefault(TENSORBOARD_ENV, info.tensorboard_dir)
    if implied or info.hyperparameters:
        log.info("Platform %s: %s; hyperparameters: %s", info.name,
                 ", ".join(f"{k}={v}" for k, v in sorted(implied.items())) or "no folders",
                 ", ".join(sorted(info.hyperparameters)) or "none")  # fmt: skip
    return {**implied, **info.hyperparameters, **overrides}


def _check_writable(folder: Path, *, what: str) -> None:
    """Fail at the start, not after hours of training, when a platform folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {folder} cannot be created: {exc.strerror}; see docs/platforms.md (user)") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"{what} {folder} is not writable by uid {os.getuid()}; mount it writable for that user or build "
            "the image with --build-arg RUN_AS=root (docs/platforms.md)"
        )


def _env_param_names(env: Mapping[str, str]) -> set[str]:
    return {k[len("SEQ2SEQ_") :].lower() for k in env if k.upper().startswith("SEQ2SEQ_")}


def _json_param_names(params_file: str | None, env: Mapping[str, str]) -> set[str]:
    """Keys of the JSON params (file or inline); unreadable JSON gives none (params.py reports it)."""
    spec = params_file or env.get("SEQ2SEQ_PARAMS")
    if not spec:
        return set()
    try:
        text = spec if spec.lstrip().startswith("{") else Path(spec).expanduser().read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError):
        return set()
    return {str(k).replace("-", "_") for k in data} if isinstance(data, dict) else set()


# ---------------------------------------------------------------------------------------- launch and failure
def launch_env(env: Mapping[str, str] | None = None, *, sm_root: Path | None = None) -> dict[str, str]:
    """Variables the launcher adds for the workers: the socket interface NCCL/Gloo must use on SageMaker."""
    env = os.environ if env is None else env
    info = detect_platform(env, sm_root=sm_root)
    out: dict[str, str] = {}
    if info.nccl_socket_ifname:
        for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
            if not env.get(name):
                out[name] = info.nccl_socket_ifname
    return out


def wait_for_host(host: str, timeout_s: float = 300.0, *, interval_s: float = 1.0) -> float:
    """Wait until ``host`` resolves (pod and SageMaker host names appear in DNS late); return seconds waited.

    Raises TimeoutError (a retryable failure, exit code 1) naming the host when it never resolves.
    """
    start = time.monotonic()
    delay = interval_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return time.monotonic() - start
        except (socket.gaierror, UnicodeError) as exc:
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise TimeoutError(f"master host {host!r} did not resolve within {timeout_s:.0f}s: {exc}") from None
            log.info("Waiting for %s to resolve (%.0fs so far): %s", host, waited, exc)
            time.sleep(min(delay, max(timeout_s - waited, 0.0)))
            delay = min(delay * 2, 10.0)


def failure_reason(reason: str, env: Mapping[str, str] | None = None) -> str:
    """One line of at most FAILURE_MAX_CHARS characters, with secret values and token patterns masked."""
    env = os.environ if env is None else env
    text = " ".join(str(reason).split())
    for name, value in env.items():
        if _SECRET_NAME.search(name) and value and len(value) >= 8:
            text = text.replace(value, "***")
    text = _SECRET_VALUE.sub("***", text)
    return text[:FAILURE_MAX_CHARS]


def write_failure(reason: str, *, env: Mapping[str, str] | None = None, sm_root: Path | None = None) -> list[Path]:
    """Append the reason to the platform's failure files (SageMaker's output/failure, Kubernetes'
    termination log); never raises. Returns the files written."""
    env = os.environ if env is None else env
    line = failure_reason(reason, env) + "\n"
    try:
        targets = _failure_files(env, sm_root)
    except Exception as exc:  # a broken platform config must not hide the original failure
        log.warning("Could not tell where to write the failure reason: %s", exc)
        return []
    written = []
    for path in targets:
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)
            written.append(path)
        except OSError as exc:
            log.warning("Could not write the failure reason to %s: %s", path, exc)
    return written


def _failure_files(env: Mapping[str, str], sm_root: Path | None) -> list[Path]:
    files = list(_termination_log(env))
    output = sagemaker_root(env, sm_root) / "output"
    if (output.parent / "input" / "config").is_dir():
        output.mkdir(parents=True, exist_ok=True)
        files.insert(0, output / "failure")
    return files


def _termination_log(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The kubelet creates the termination-message file; elsewhere it does not exist and is not created."""
    path = Path(env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    return (path,) if path.is_file() and os.access(path, os.W_OK) else ()


# ----------------------------------------------------------------------------------------------------- JSON
def _json_env(env: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        data = json.loads(env[name])
    except json.JSONDecodeError as exc:
        raise UserError(f"{name} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise UserError(f"{name} must hold a JSON object, got a JSON {type(data).__name__}")
    return data


def _keys(data: dict[str, Any]) -> str:
    return "keys " + (", ".join(sorted(data)) or "none")
