"""The run context: the machine and the platform, read once, frozen, and passed to whatever needs them.

:func:`environment` is the job's one read of ``os.environ`` (a frozen snapshot; :mod:`job.launch` builds the
workers' environment from it). :func:`read_context` turns that
snapshot into a :class:`RunContext`: the platform and its folders, this process's place in the job, the
storage settings and the secret values to mask. :func:`apply_process_env` makes the few writes the libraries
need before they are imported. Downstream modules take these values as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

from job.cpu import CpuBudget, read_cpu_budget
from job.platforms.detect import PlatformInfo, detect_platform
from job.secrets import secret_values
from job.storage.stores import StorageSettings
from job.tracking.settings import TrackingSettings

EXIT_CODE_DIR_ENV = "JOB_EXIT_CODE_DIR"  # set by job.launch: where each worker records its exit code
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun (or accelerate, deepspeed) gives each worker
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"  # TensorBoard's folder (job.tracking.settings)
# Set before datasets/huggingface_hub read them (users can override each): no telemetry on air-gapped clusters,
# no Hub ping to count loads of local files, no tokenizers fork warnings from datasets.map workers.
LIBRARY_DEFAULTS = {
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def environment() -> Mapping[str, str]:
    """A read-only snapshot of the process environment: the job's single read of ``os.environ``."""
    return MappingProxyType(dict(os.environ))


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the job, as the launcher (torchrun, accelerate, DeepSpeed) set it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    nnodes: int = 1  # torchrun's GROUP_WORLD_SIZE
    launched: bool = False  # started by a distributed launcher (RANK, WORLD_SIZE and LOCAL_RANK set)
    exit_code_dir: str | None = None  # job.launch reads the workers' exit codes from here

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only process that logs at INFO and writes metrics, cards and manifests."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the one process per node that downloads or builds shared inputs."""
        return self.local_rank == 0


@dataclass(frozen=True)
class RunContext:
    """Everything the job knows about where it runs; built once by :func:`read_context`."""

    env: Mapping[str, str] = field(repr=False)
    platform: PlatformInfo
    process: ProcessInfo
    storage: StorageSettings
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values masked in every log line and error
    tracking: TrackingSettings = field(default_factory=TrackingSettings)  # the experiment trackers' settings
    hub_offline: bool = False  # HF_HUB_OFFLINE=1: no Hub requests at all
    cpu: CpuBudget = field(default_factory=CpuBudget)  # cores, affinity, cgroup quota, OMP_NUM_THREADS (job.cpu)

    @cached_property
    def cuda_devices(self) -> int:
        """Visible CUDA GPUs (imports torch on first use only)."""
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    @property
    def device(self) -> str:
        return "cuda" if self.cuda_devices else "cpu"

    @cached_property
    def gpu_names(self) -> tuple[str, ...]:
        if not self.cuda_devices:
            return ()
        import torch

        return tuple(torch.cuda.get_device_name(i) for i in range(self.cuda_devices))

    @property
    def processes_per_node(self) -> int:
        return max(1, self.process.world_size // max(1, self.process.nnodes))

    @property
    def kept_checkpoint_dirs(self) -> list[Path]:
        """Checkpoint folders the platform keeps across restarts, where they exist (job.resume searches them)."""
        return self.platform.kept_checkpoint_dirs()


def read_context(env: Mapping[str, str] | None = None, *, sm_root: Path | None = None) -> RunContext:
    """The run context for ``env`` (default: this process's environment)."""
    env = environment() if env is None else MappingProxyType(dict(env))
    platform = detect_platform(env, sm_root=sm_root)
    return RunContext(
        env=env,
        platform=platform,
        process=_process(env),
        storage=storage_settings(env),
        secrets=tuple(secret_values(env)),
        tracking=tracking_settings(env, tensorboard_dir=platform.tensorboard_dir),
        hub_offline=env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"),
        cpu=read_cpu_budget(env.get("OMP_NUM_THREADS")),
    )


def storage_settings(env: Mapping[str, str], *, s3_endpoint_url: str | None = None) -> StorageSettings:
    """Object storage settings: the s3_endpoint_url param > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL; AWS_* tuning."""
    attempts = env.get("AWS_MAX_ATTEMPTS", "8").strip()
    return StorageSettings(
        s3_endpoint_url=s3_endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        retry_mode=env.get("AWS_RETRY_MODE", "standard"),
        max_attempts=int(attempts) if attempts.isdigit() else 8,
        request_checksum_calculation=env.get("AWS_REQUEST_CHECKSUM_CALCULATION") or None,
        response_checksum_validation=env.get("AWS_RESPONSE_CHECKSUM_VALIDATION") or None,
        gcp_project=env.get("GOOGLE_CLOUD_PROJECT") or None,
    )


def tracking_settings(env: Mapping[str, str], *, tensorboard_dir: str | None = None) -> TrackingSettings:
    """The trackers' settings (job.tracking.settings has the table); TensorBoard: the platform's folder wins."""
    host = (env.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://", 1)[-1].split("/")[0]
    local_tensorboard = tensorboard_dir if tensorboard_dir and "://" not in tensorboard_dir else None
    return TrackingSettings(
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        mlflow_experiment=env.get("MLFLOW_EXPERIMENT_NAME") or None,
        mlflow_allow_file_store=env.get("MLFLOW_ALLOW_FILE_STORE"),
        wandb_mode=env.get("WANDB_MODE") or None,
        wandb_project=env.get("WANDB_PROJECT") or None,
        wandb_entity=env.get("WANDB_ENTITY") or None,
        wandb_api_key=bool(env.get("WANDB_API_KEY")),
        wandb_host=host,
        tensorboard_dir=local_tensorboard or env.get(TENSORBOARD_ENV) or None,
    )


def _process(env: Mapping[str, str]) -> ProcessInfo:
    def number(name: str, default: int) -> int:
        value = env.get(name, "").strip()
        return int(value) if value.isdigit() else default

    return ProcessInfo(
        rank=number("RANK", 0),
        local_rank=number("LOCAL_RANK", 0),
        world_size=number("WORLD_SIZE", 1),
        nnodes=number("GROUP_WORLD_SIZE", 1),
        launched=all(name in env for name in LAUNCHER_ENV),
        exit_code_dir=env.get(EXIT_CODE_DIR_ENV) or None,
    )


def apply_library_defaults() -> None:
    """Environment defaults the HF libraries read at import time (each one the user set wins)."""
    for name, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def apply_process_env(ctx: RunContext, *, tracker: str = "none") -> None:
    """The writes a run makes to its own environment, before the training stack is imported."""
    apply_library_defaults()
    if tracker == "mlflow" and ctx.tracking.mlflow_file_store:  # mlflow ≥ 3 refuses a folder store without it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def name_deepspeed_accelerator() -> None:
    """Tell DeepSpeed there is no accelerator on a machine without one (``DS_ACCELERATOR=cpu``).

    accelerate imports DeepSpeed whenever it is installed, and DeepSpeed then probes for an accelerator and prints
    a warning outside the log format ("Setting accelerator to CPU…") into every CPU run. Call before importing
    transformers' Trainer stack; a ``DS_ACCELERATOR`` set by the user wins.
    """
    import torch

    accelerator = getattr(torch, "accelerator", None)
    none = accelerator.current_accelerator() is None if accelerator is not None else not torch.cuda.is_available()
    if none:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
