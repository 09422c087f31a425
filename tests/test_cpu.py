"""CPU threads and worker processes from the cgroup quota, the affinity and the processes per node (job.cpu)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from job.context import read_context
from job.cpu import CpuBudget, cgroup_cpu_quota, read_cpu_budget
from job.launch import clean_env


def cgroup_v2(root: Path, cpu_max: dict[str, str], path: str = "/kubepods/pod1/ctr") -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup (v2) with ``cpu.max`` in the given folders, and a /proc/self/cgroup naming ``path``."""
    for folder, text in cpu_max.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def cgroup_v1(root: Path, quota: str, period: str = "100000", path: str = "/docker/abc") -> tuple[Path, Path]:
    folder = root / "cpu,cpuacct" / path.strip("/")
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"12:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n")
    return root, proc


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"kubepods/pod1/ctr": "50000 100000"}, 0.5),  # a 500m CPU limit
        ({"kubepods/pod1/ctr": "max 100000"}, None),  # no limit
        ({"kubepods/pod1": "200000 100000", "kubepods/pod1/ctr": "max 100000"}, 2.0),  # the pod's limit binds
        ({"kubepods/pod1": "400000 100000", "kubepods/pod1/ctr": "150000 100000"}, 1.5),  # the tightest wins
        ({"": "300000 100000"}, 3.0),  # a container that sees its own cgroup at the mount point
        ({"kubepods/pod1/ctr": "garbage"}, None),
    ],
)
def test_cgroup_v2_quota(tmp_path, files, quota) -> None:
    root, proc = cgroup_v2(tmp_path / "cgroup", files)
    assert cgroup_cpu_quota(root, proc) == quota


@pytest.mark.parametrize(("quota_us", "quota"), [("50000", 0.5), ("250000", 2.5), ("-1", None)])
def test_cgroup_v1_quota(tmp_path, quota_us, quota) -> None:
    root, proc = cgroup_v1(tmp_path / "cgroup", quota_us)
    assert cgroup_cpu_quota(root, proc) == quota


def test_no_cgroup_files_means_no_quota(tmp_path) -> None:
    assert cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "no-proc-file") is None


def test_read_cpu_budget_reads_the_fake_files_and_this_process_affinity(tmp_path) -> None:
    import os

    root, proc = cgroup_v2(tmp_path / "cgroup", {"kubepods/pod1/ctr": "50000 100000"})
    budget = read_cpu_budget("3", cgroup_root=root, proc_self_cgroup=proc)
    assert budget.quota == 0.5 and budget.host_cpus == os.cpu_count()
    assert budget.affinity == len(os.sched_getaffinity(0)) and budget.omp_num_threads == "3"


@pytest.mark.parametrize(
    ("budget", "nproc", "threads", "reason"),
    [
        (CpuBudget(host_cpus=64), 1, 64, "64 usable CPUs (64 host cores)"),
        (CpuBudget(host_cpus=64, quota=0.5), 1, 1, "1 usable CPUs (64 host cores, cgroup quota 0.5 CPUs)"),
        (CpuBudget(host_cpus=64, quota=6.0), 2, 3, "6 usable CPUs (64 host cores, cgroup quota 6 CPUs) / 2 processes"),
        (CpuBudget(host_cpus=64, affinity=4), 1, 4, "4 usable CPUs (64 host cores, affinity 4)"),
        (CpuBudget(host_cpus=64, affinity=8, quota=2.5), 1, 2, "2 usable CPUs"),
        (CpuBudget(host_cpus=2), 4, 1, "2 usable CPUs (2 host cores) / 4 processes"),
        (CpuBudget(host_cpus=64, quota=0.5, omp_num_threads="8"), 1, 8, "OMP_NUM_THREADS=8 from the environment"),
        (CpuBudget(host_cpus=8, omp_num_threads="zero"), 1, 8, "8 usable CPUs"),  # not a number: ignored
    ],
)
def test_threads_per_process(budget, nproc, threads, reason) -> None:
    choice = budget.threads_per_process(nproc)
    assert choice.threads == threads and reason in choice.reason


def test_tokenize_workers_pay_only_for_many_rows() -> None:
    budget = CpuBudget(host_cpus=16, quota=4.0)
    assert budget.tokenize_workers(1_000) == 1
    assert budget.tokenize_workers(120_000) == 2
    assert budget.tokenize_workers(5_000_000) == 4


def test_launcher_gives_workers_the_same_decision_and_the_users_value_wins() -> None:
    choice = CpuBudget(host_cpus=64, quota=4.0).threads_per_process(2)
    assert clean_env({"PATH": "/bin"}, cpu_threads=choice.threads)["OMP_NUM_THREADS"] == "2"
    assert clean_env({"OMP_NUM_THREADS": "7"}, cpu_threads=choice.threads)["OMP_NUM_THREADS"] == "7"


def test_the_run_context_carries_the_budget_and_a_run_logs_its_threads(caplog) -> None:
    import torch

    from job.cpu import apply_threads

    ctx = read_context({"OMP_NUM_THREADS": "1"})
    assert ctx.cpu.user_threads() == 1 and ctx.processes_per_node == 1
    before = torch.get_num_threads()
    caplog.set_level(logging.INFO, logger="job.cpu")
    try:
        apply_threads(CpuBudget(host_cpus=4, quota=2.0).threads_per_process(1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 2 per process (2 usable CPUs (4 host cores, cgroup quota 2 CPUs))" in caplog.text
