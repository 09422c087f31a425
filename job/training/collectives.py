"""The two collectives the job needs across processes; both are no-ops in a single process."""

from __future__ import annotations

from typing import Any


def barrier() -> None:
    """Wait for every process of the job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(local: bool, device: Any = "cpu") -> bool:
    """True if any rank has ``local`` set (all-reduce MAX); just ``local`` without torch.distributed."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    # NCCL reduces CUDA tensors only; gloo (CPU, DeepSpeed on CPU) reduces CPU tensors.
    where = device if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=where)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
