"""Which process am I? Read from the launcher's environment (torchrun, accelerate, DeepSpeed all set these)."""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Global rank 0: the only process that logs at INFO and writes metrics, cards and manifests."""
    return rank() == 0


def is_local_main_process() -> bool:
    """Local rank 0: the one process per node that downloads or builds shared inputs."""
    return local_rank() == 0
