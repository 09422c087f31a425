"""What the experiment trackers take from the environment, read once into :class:`TrackingSettings`.

:func:`job.context.tracking_settings` builds it from the run context's environment snapshot; the trackers
(:mod:`job.tracking`) and the preflight checks (:mod:`job.tracking.checks`) take it as an argument. No
third-party imports.

===========================  =====================================================================
variable                     meaning
===========================  =====================================================================
``MLFLOW_TRACKING_URI``      a folder (``file:/path`` or a plain path), ``sqlite:///x.db`` (needs the full
                             ``mlflow`` package), ``http(s)://server``, ``databricks``; unset:
                             ``file:<project_name>/logs/mlruns``
``MLFLOW_EXPERIMENT_NAME``   the experiment of the run (default ``Default``)
``WANDB_MODE``               ``online`` (default: needs ``WANDB_API_KEY`` or ``wandb login``), ``offline``
                             (into ``<project_name>/logs/wandb``, ``wandb sync`` later), ``disabled``
``WANDB_PROJECT``            the W&B project (default ``seq2seq-job``); ``WANDB_ENTITY`` the team
``TENSORBOARD_LOGGING_DIR``  TensorBoard's folder (default ``<project_name>/logs``; Vertex: its FUSE path)
===========================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

FILE_SCHEMES = ("", "file")  # a plain path or file:/path: MLflow's file store
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # SQLAlchemy stores: the full mlflow package
SERVER_SCHEMES = ("http", "https")
OTHER_SCHEMES = ("databricks", "databricks-uc")
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")


@dataclass(frozen=True)
class TrackingSettings:
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str | None = None
    mlflow_allow_file_store: str | None = None  # MLFLOW_ALLOW_FILE_STORE as the user set it (the job sets true)
    wandb_mode: str | None = None
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_api_key: bool = False  # WANDB_API_KEY is set (its value is a secret: never kept here)
    wandb_host: str = "api.wandb.ai"  # from WANDB_BASE_URL, for the netrc login check
    tensorboard_dir: str | None = None

    @property
    def mlflow_scheme(self) -> str:
        """The tracking URI's scheme ('' for a plain path or none at all)."""
        uri = self.mlflow_tracking_uri or ""
        if len(uri) > 1 and uri[1] == ":" and uri[0].isalpha():
            return ""  # C:\\path
        return urlsplit(uri).scheme.lower()

    @property
    def mlflow_file_store(self) -> bool:
        """Whether runs go to MLflow's file store (mlflow ≥ 3 then needs MLFLOW_ALLOW_FILE_STORE=true)."""
        return self.mlflow_scheme in FILE_SCHEMES


def shown_uri(uri: str) -> str:
    """``uri`` without a user or password (``http://user:secret@host`` → ``http://host``), for messages."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
