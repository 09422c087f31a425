"""The parameters a platform implies (its folders, SageMaker hyperparameters and channels), under the user's own.

Priority, highest first: CLI flags > SageMaker hyperparameters.json > ``SEQ2SEQ_*`` environment > JSON
(``--params``/``SEQ2SEQ_PARAMS``) > the platform's folders (SageMaker channels, ``/opt/ml/model``,
``/opt/ml/checkpoints``; Vertex ``AIP_*``) > built-in defaults.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from job.errors import UserError
from job.param_sources import user_set_names
from job.params import Seq2SeqParams
from job.platforms import sagemaker
from job.platforms.detect import PlatformInfo

log = logging.getLogger(__name__)

# PlatformInfo attribute → the parameter that takes a local folder, and the one that takes a remote URI.
_FOLDER_PARAMS = {"model_dir": ("project_name", "output_uri"), "checkpoint_dir": ("checkpoint_dir", None)}


def platform_overrides(
    info: PlatformInfo, *, fields: Iterable[str] | None = None, skip: Iterable[str] = ()
) -> dict[str, str]:
    """The parameters the platform implies (folders, data channels), as lowest-priority values.

    ``fields`` are the parameter names that exist (default: Seq2SeqParams' fields); names in ``skip`` (set by
    the user) are left out. A gs:// folder without a FUSE mount goes to the remote-URI parameter when there
    is one; a folder that no parameter takes is logged.
    """
    known = set(Seq2SeqParams.model_fields if fields is None else fields) - set(skip)
    out: dict[str, str] = {}
    for attr, (local_param, uri_param) in _FOLDER_PARAMS.items():
        value = getattr(info, attr)
        if not value:
            continue
        param = uri_param if "://" in value else local_param
        if param and param in known:
            out[param] = value
        elif not (param and param in skip):
            log.warning("%s: %s=%s is not used (no parameter takes it in this version)", info.name, attr, value)
    if info.channels and "data_path" in known:
        data = sagemaker.channel_data_path(info.channels)
        if data is not None:
            out["data_path"] = data[0]
            if data[1] and "valid_split" in known:
                out["valid_split"] = data[1]
    return out


def apply_platform(
    overrides: Mapping[str, Any], info: PlatformInfo, *, env: Mapping[str, str], params_file: str | None = None
) -> dict[str, Any]:
    """CLI overrides completed with the platform's values, each below everything the user set explicitly."""
    if info.name == "local":
        return dict(overrides)
    explicit = user_set_names(overrides, env, params_file) | set(info.hyperparameters)
    implied = platform_overrides(info, skip=explicit)
    for name in ("project_name", "checkpoint_dir"):
        if name in implied:
            check_writable(Path(implied[name]), what=f"{info.name} folder for {name}")
    if implied or info.hyperparameters:
        log.info(
            "Platform %s: %s; hyperparameters: %s",
            info.name,
            ", ".join(f"{k}={v}" for k, v in sorted(implied.items())) or "no folders",
            ", ".join(sorted(info.hyperparameters)) or "none",
        )
    return {**implied, **info.hyperparameters, **overrides}


def check_writable(folder: Path, *, what: str) -> None:
    """Fail at the start, not after hours of training, when a folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {folder} cannot be created: {exc.strerror}; see docs/platforms.md (user)") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"{what} {folder} is not writable by uid {os.getuid()}; mount it writable for that user or build "
            "the image with --build-arg RUN_AS=root (docs/platforms.md)"
        )
