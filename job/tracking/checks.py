"""Logger misconfigurations, found before training starts (called by :mod:`job.preflight`).

Each problem is one line naming the variable and the fix: the tracker's package missing, an MLflow tracking
URI of an unknown scheme, a database URI without the SQLAlchemy store (``mlflow-skinny`` has none), a tracking
server that does not answer, W&B online without a login or an unknown ``WANDB_MODE``.
"""

from __future__ import annotations

import importlib.util
import netrc
import socket
from urllib.parse import urlsplit

from job.tracking.settings import (
    DATABASE_SCHEMES,
    FILE_SCHEMES,
    OTHER_SCHEMES,
    SERVER_SCHEMES,
    WANDB_LOCAL_MODES,
    WANDB_MODES,
    TrackingSettings,
    shown_uri,
)

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # log → the module it needs
CONNECT_TIMEOUT_S = 3.0


def tracking_problems(log: str, settings: TrackingSettings) -> list[str]:
    """What keeps ``log`` (none, tensorboard, mlflow, wandb) from working on this machine."""
    if log == "none":
        return []
    if importlib.util.find_spec(PACKAGES[log]) is None:
        return [f"log={log} needs the {log} package: pip install 'seq2seq-job[loggers]'"]
    if log == "mlflow":
        return mlflow_problems(settings)
    if log == "wandb":
        return wandb_problems(settings)
    return []


def mlflow_problems(settings: TrackingSettings) -> list[str]:
    uri, scheme = settings.mlflow_tracking_uri, settings.mlflow_scheme
    allow = settings.mlflow_allow_file_store
    if settings.mlflow_file_store and allow is not None and allow.strip().lower() not in ("true", "1"):
        store = f"MLFLOW_TRACKING_URI={uri}" if uri else "the default folder project_name/logs/mlruns"
        return [
            f"MLFLOW_ALLOW_FILE_STORE={allow} refuses MLflow's folder store, which {store} needs: unset it (the job "
            "sets true), or use a tracking server (MLFLOW_TRACKING_URI=http://…)"
        ]
    if uri is None or scheme in FILE_SCHEMES or scheme in OTHER_SCHEMES:
        return []
    name = f"MLFLOW_TRACKING_URI={shown_uri(uri)}"
    if scheme.split("+")[0] in DATABASE_SCHEMES:
        if importlib.util.find_spec("sqlalchemy") is None:
            return [
                f"{name} needs MLflow's database store, which mlflow-skinny (the [loggers] extra) does not have: "
                "pip install mlflow, or use a folder (MLFLOW_TRACKING_URI=file:/path/mlruns, or leave it unset)"
            ]
        return []
    if scheme in SERVER_SCHEMES:
        problem = _unreachable(uri)
        return [f"{name}: the tracking server does not answer ({problem}); start it or fix the URI"] if problem else []
    known = ", ".join(("a folder (file:/path)", "sqlite:///x.db", "http(s)://server", "databricks"))
    return [f"{name}: unknown scheme {scheme}:; use {known}"]


def wandb_problems(settings: TrackingSettings) -> list[str]:
    mode = (settings.wandb_mode or "online").lower()
    if mode not in WANDB_MODES:
        return [f"WANDB_MODE={settings.wandb_mode} is not a W&B mode; use online, offline or disabled"]
    if mode in WANDB_LOCAL_MODES or settings.wandb_api_key or _netrc_login(settings.wandb_host):
        return []
    return [
        f"log=wandb (WANDB_MODE={mode}) needs a W&B login: set WANDB_API_KEY (or run `wandb login`), or set "
        "WANDB_MODE=offline to log into project_name/logs/wandb and `wandb sync` later"
    ]


def _unreachable(uri: str) -> str | None:
    """Why nothing listens at the URI's host and port (None: a TCP connection opened)."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return "no host in the URI"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"


def _netrc_login(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
