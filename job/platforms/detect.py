"""Which platform this is, and the folders, parameters and failure files it provides (:class:`PlatformInfo`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.platforms import sagemaker, vertex
from job.platforms.failure import termination_log

SAGEMAKER_JOB_ENV = "TRAINING_JOB_NAME"  # kept across managed-spot restarts of one training job
VERTEX_JOB_ENV = "CLOUD_ML_JOB_ID"  # the CustomJob's id, kept when Vertex restarts its workers


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
    job_id: str | None = None  # the same for every retry of one job (job.lease): SageMaker's or Vertex's job name

    def kept_checkpoint_dirs(self) -> list[Path]:
        """Local checkpoint folders the platform keeps across restarts (SageMaker's, Vertex's), where they exist."""
        folders = [sagemaker.DEFAULT_CHECKPOINTS]
        if self.name == "vertex" and self.checkpoint_dir and "://" not in self.checkpoint_dir:
            folders.append(Path(self.checkpoint_dir))  # gs://… is searched through output_uri, /gcs/… is local
        elif self.name == "sagemaker" and self.checkpoint_dir:
            folders.append(Path(self.checkpoint_dir))
        unique = list(dict.fromkeys(folders))
        return [f for f in unique if f.is_dir()]


def detect_platform(env: Mapping[str, str], *, sm_root: Path | None = None) -> PlatformInfo:
    """Read the platform's contract from ``env`` and the SageMaker config files."""
    termination = termination_log(env)
    root = sagemaker.root(env, sm_root)
    if sagemaker.is_sagemaker(root):
        return _sagemaker(root, termination, job_id=env.get(SAGEMAKER_JOB_ENV) or None)
    if vertex.is_vertex(env):
        return PlatformInfo(
            name="vertex",
            job_id=env.get(VERTEX_JOB_ENV) or None,
            model_dir=vertex.folder(env.get("AIP_MODEL_DIR"), env),
            checkpoint_dir=vertex.folder(env.get("AIP_CHECKPOINT_DIR"), env),
            tensorboard_dir=vertex.folder(env.get("AIP_TENSORBOARD_LOG_DIR"), env),
            failure_files=termination,
        )
    name = "kubernetes" if env.get("KUBERNETES_SERVICE_HOST") else "local"
    return PlatformInfo(name=name, failure_files=termination)


def _sagemaker(root: Path, termination: tuple[Path, ...], *, job_id: str | None) -> PlatformInfo:
    config = root / "input" / "config"
    resource_config = config / "resourceconfig.json"
    resource = sagemaker.read_resource_config(resource_config) if resource_config.is_file() else {}
    return PlatformInfo(
        name="sagemaker",
        job_id=job_id,
        model_dir=str(root / "model"),
        checkpoint_dir=sagemaker.checkpoint_dir(config / "checkpointconfig.json", root),
        output_data_dir=str(root / "output" / "data"),
        failure_files=(root / "output" / "failure", *termination),
        hyperparameters=sagemaker.read_hyperparameters(config / "hyperparameters.json"),
        channels=sagemaker.channels(root),
        nccl_socket_ifname=resource.get("network_interface_name") or None,
    )
