"""Where this node sits in a (possibly multi-node) job, in the terms torchrun understands.

Platforms describe topology in their own ways (SageMaker's resourceconfig.json, Vertex's CLUSTER_SPEC,
Kubeflow's MASTER_ADDR/RANK where RANK may count nodes); :mod:`job.platform` translates each into a
:class:`Topology`, and :mod:`job.launch` turns that into explicit torchrun flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None  # None on a single node (torchrun --standalone)
    master_port: int = 29500
    nproc_per_node: int | None = None  # None: one process per visible GPU, or one on CPU
    source: str = "local"  # which platform contract this came from, for the log

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1
