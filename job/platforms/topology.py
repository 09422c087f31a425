"""Where this node sits in a (possibly multi-node) job, in the terms torchrun understands.

:func:`detect_topology` reads the first platform contract that applies (every value is node-level: one entry
per machine/pod, never per process); :mod:`job.launch` turns the :class:`Topology` into torchrun flags.

1. ``NNODES`` set: explicit override. ``NODE_RANK`` (default ``JOB_COMPLETION_INDEX``, so an Indexed Job
   needs only ``NNODES`` and ``MASTER_ADDR``), ``MASTER_ADDR``, ``MASTER_PORT``, ``NPROC_PER_NODE``.
2. SageMaker ``<root>/input/config/resourceconfig.json``: ``hosts`` in the order listed, the first is the master;
   this node's rank is the index of ``current_host``.
3. Vertex AI ``CLUSTER_SPEC``: ``workerpool0`` (or ``chief``/``master``) is node 0, ``workerpool1`` (``worker``)
   index *i* is node 1 + *i*; the master is ``workerpool0[0]``.
4. Kubeflow (PyTorchJob with ``PET_NNODES``, operator ≥ 1.7, and Trainer v2's torch runtime): ``PET_NNODES``,
   ``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``MASTER_ADDR``, ``PET_MASTER_PORT``/``MASTER_PORT``,
   ``PET_NPROC_PER_NODE``.
5. ``MASTER_ADDR`` + ``WORLD_SIZE`` + ``RANK`` (Kubeflow PyTorchJob without ``PET_*``, Vertex without a
   ``CLUSTER_SPEC``): one pod per node, so ``WORLD_SIZE`` counts nodes and ``RANK`` is the node rank.
6. Otherwise one node (torchrun ``--standalone`` or a single process).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.errors import UserError
from job.jsonfiles import parse_object
from job.platforms import sagemaker

DEFAULT_MASTER_PORT = 29500
PYTORCHJOB_MASTER_PORT = 23456  # the Kubeflow training operator's default


@dataclass(frozen=True)
class Topology:
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None  # None on a single node (torchrun --standalone)
    master_port: int = DEFAULT_MASTER_PORT
    nproc_per_node: int | None = None  # None: one process per visible GPU, or one on CPU
    source: str = "local"  # which platform contract this came from, for the log

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1


def detect_topology(env: Mapping[str, str], *, sm_root: Path | None = None) -> Topology:
    """This node's place in the job, from the first platform contract that applies (see the module doc)."""
    nproc = _nproc(env)
    resource_config = sagemaker.root(env, sm_root) / "input" / "config" / "resourceconfig.json"
    if env.get("NNODES"):
        return _explicit_topology(env, nproc)
    if resource_config.is_file():
        return _sagemaker_topology(env, resource_config, nproc)
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


def _explicit_topology(env: Mapping[str, str], nproc: int | None) -> Topology:
    return _checked(
        nnodes=_int(env, "NNODES", 1),
        node_rank=_int(env, "NODE_RANK", 0, default=env.get("JOB_COMPLETION_INDEX", "0")),
        master_addr=env.get("MASTER_ADDR") or None,
        master_port=_int(env, "MASTER_PORT", 1, default=str(DEFAULT_MASTER_PORT)),
        nproc_per_node=nproc,
        source="indexed-job" if env.get("JOB_COMPLETION_INDEX") else "env",
    )


def _sagemaker_topology(env: Mapping[str, str], resource_config: Path, nproc: int | None) -> Topology:
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


def _vertex_topology(env: Mapping[str, str], nproc: int | None) -> Topology:
    spec = parse_object(env["CLUSTER_SPEC"], where="CLUSTER_SPEC")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError('CLUSTER_SPEC must hold "cluster" and "task" objects (Vertex AI sets it); got ' + _keys(spec))
    chief = _pool(cluster, ("workerpool0", "chief", "master"))
    workers = _pool(cluster, ("workerpool1", "worker"))
    if len(chief) != 1:
        raise UserError(f"CLUSTER_SPEC: workerpool0 must have exactly one replica (the master), found {len(chief)}")
    node_rank = _vertex_node_rank(task, workers)
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


def _vertex_node_rank(task: dict[str, Any], workers: list[str]) -> int:
    kind, index = task.get("type"), task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError(f"CLUSTER_SPEC: task.index must be a non-negative integer, got {index!r}")
    if kind in ("workerpool0", "chief", "master"):
        return 0
    if kind in ("workerpool1", "worker"):
        if index >= len(workers):
            raise UserError(f"CLUSTER_SPEC: task {kind}[{index}] is not in cluster.{kind} ({len(workers)} replicas)")
        return 1 + index
    raise UserError(
        f"CLUSTER_SPEC: task type {kind!r} is not a training node; run this image in workerpool0 (one "
        "replica) and workerpool1 (more nodes); reduction servers (workerpool2) use their own image"
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


def _checked(
    *, nnodes: int, node_rank: int, master_addr: str | None, master_port: int, nproc_per_node: int | None, source: str
) -> Topology:
    if node_rank >= nnodes:
        raise UserError(f"{source} topology: node rank {node_rank} is not below the node count {nnodes}")
    if master_port > 65535:
        raise UserError(f"{source} topology: master port {master_port} is above 65535")
    if nnodes > 1 and not master_addr:
        raise UserError(f"{source} topology: {nnodes} nodes need MASTER_ADDR (the host name of node 0)")
    return Topology(
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr if nnodes > 1 else None,
        master_port=master_port,
        nproc_per_node=nproc_per_node,
        source=source,
    )


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


def _keys(data: dict[str, Any]) -> str:
    return "keys " + (", ".join(sorted(data)) or "none")
