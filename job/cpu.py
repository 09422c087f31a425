"""How many CPUs this process may really use, and the threads and worker processes that fit them.

torch sizes its thread pool from the host's cores (``os.cpu_count()``), not from the pod's CPU limit or the
process's CPU affinity. On a busy 2-core machine a demo run took 163 s with the default and 2.4 s with one
thread; under a 0.5-CPU quota its training took 12.2 s with the default and 7.1 s with one thread. The usable
CPUs are the smallest of: the host's cores, the CPUs the process may run on (``os.sched_getaffinity``) and the
CFS quota of its cgroup (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded down, at
least 1. Each of the node's processes gets an equal share; ``OMP_NUM_THREADS``, when the user sets it, wins.

:func:`read_cpu_budget` reads the machine (called by :func:`job.context.read_context`); everything else here
is a pure function of its arguments. :mod:`job.launch` gives torchrun's workers the same decision.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
ROWS_PER_TOKENIZE_WORKER = 50_000  # a worker process costs ~1 s to start; below this many rows it doesn't pay


@dataclass(frozen=True)
class ThreadChoice:
    """Intra-op threads for one process, and why (for the log)."""

    threads: int
    reason: str


@dataclass(frozen=True)
class CpuBudget:
    """What limits this process's CPUs: host cores, affinity, cgroup quota, and the user's OMP_NUM_THREADS."""

    host_cpus: int = 1
    affinity: int | None = None  # CPUs in os.sched_getaffinity(0)
    quota: float | None = None  # CPUs the cgroup quota allows (0.5 = half a CPU); None = no limit
    omp_num_threads: str | None = None  # OMP_NUM_THREADS as set in the environment

    @property
    def usable(self) -> int:
        """Whole CPUs this process can keep busy: the smallest limit, rounded down, at least 1."""
        limits = [self.host_cpus]
        if self.affinity:
            limits.append(self.affinity)
        if self.quota is not None:
            limits.append(math.floor(self.quota))
        return max(1, min(limits))

    def describe(self) -> str:
        parts = [f"{self.host_cpus} host cores"]
        if self.affinity is not None and self.affinity != self.host_cpus:
            parts.append(f"affinity {self.affinity}")
        if self.quota is not None:
            parts.append(f"cgroup quota {self.quota:g} CPUs")
        return ", ".join(parts)

    def user_threads(self) -> int | None:
        """OMP_NUM_THREADS when it is a positive integer (the user's choice wins), else None."""
        value = (self.omp_num_threads or "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    def threads_per_process(self, processes_per_node: int = 1) -> ThreadChoice:
        """Intra-op threads for each of ``processes_per_node`` processes sharing this machine."""
        given = self.user_threads()
        if given is not None:
            return ThreadChoice(given, f"OMP_NUM_THREADS={given} from the environment")
        nproc = max(1, processes_per_node)
        threads = max(1, self.usable // nproc)
        share = f" / {nproc} processes" if nproc > 1 else ""
        return ThreadChoice(threads, f"{self.usable} usable CPUs ({self.describe()}){share}")

    def tokenize_workers(self, rows: int) -> int:
        """Worker processes for tokenizing ``rows`` rows once per node: one per usable CPU, if the rows pay for it."""
        return max(1, min(self.usable, rows // ROWS_PER_TOKENIZE_WORKER))


def read_cpu_budget(
    omp_num_threads: str | None = None,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
) -> CpuBudget:
    """The CPU limits of this process: host cores, affinity and cgroup quota (files under ``cgroup_root``)."""
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = None
    return CpuBudget(
        host_cpus=os.cpu_count() or 1,
        affinity=affinity,
        quota=cgroup_cpu_quota(cgroup_root, proc_self_cgroup),
        omp_num_threads=omp_num_threads,
    )


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs allowed by the tightest CFS quota on this process's cgroup path (v2, else v1); None if unlimited.

    ``proc_self_cgroup`` lists the process's cgroup per hierarchy (``0::/kubepods/pod…`` for v2,
    ``4:cpu,cpuacct:/docker/…`` for v1). Inside a container the path often names the host's view while the
    container sees its own cgroup at the mount point, so every folder from the path's leaf up to the mount
    point is read, and the smallest quota wins (a parent's limit binds its children too).
    """
    paths = _cgroup_paths(proc_self_cgroup)
    quotas = [q for folder in _candidates(root, paths.get("v2")) if (q := _v2_quota(folder)) is not None]
    if not quotas:
        v1_root = next((root / name for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu") if (root / name).is_dir()), None)
        if v1_root is not None:
            quotas = [q for folder in _candidates(v1_root, paths.get("v1")) if (q := _v1_quota(folder)) is not None]
    return min(quotas) if quotas else None


def _cgroup_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path in the v2 hierarchy (``v2``) and in the v1 ``cpu`` controller (``v1``)."""
    try:
        text = proc_self_cgroup.read_text(encoding="utf-8")
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    return paths


def _candidates(mount: Path, path: str | None) -> list[Path]:
    """The folders from ``mount/path`` up to ``mount`` itself."""
    parts = [p for p in (path or "").split("/") if p and p not in (".", "..")]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max`` holds "QUOTA PERIOD" in microseconds, or "max PERIOD" for no limit."""
    fields = _read(folder / "cpu.max").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` is -1 for no limit; ``cpu.cfs_period_us`` is the period (usually 100000)."""
    return _ratio(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def apply_threads(choice: ThreadChoice) -> None:
    """Size torch's intra-op thread pool (imports torch) and log what was chosen."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    log.info("CPU threads: %d per process (%s)", choice.threads, choice.reason)
