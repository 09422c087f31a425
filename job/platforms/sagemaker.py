"""SageMaker's training contract, read from the files it mounts (the ``SM_*`` variables exist only when the
sagemaker-training-toolkit is installed in the image, so nothing here relies on them)::

    /opt/ml/input/config/hyperparameters.json   {"epochs": "3", ...}: every value a string
    /opt/ml/input/config/resourceconfig.json    {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
                                                 "network_interface_name": "eth0", ...}
    /opt/ml/input/config/inputdataconfig.json   {"train": {"TrainingInputMode": "File", ...}, ...}
    /opt/ml/input/config/checkpointconfig.json  {"LocalPath": "/opt/ml/checkpoints", "S3Uri": ...} (when set)
    /opt/ml/input/data/<channel>/               the channel's S3 objects
    /opt/ml/model/                              uploaded as model.tar.gz when the job ends
    /opt/ml/checkpoints/                        mirrored to checkpoint_s3_uri while the job runs, deletions included
    /opt/ml/output/failure                      its first 1024 characters become the job's FailureReason

Malformed files are :class:`~job.errors.UserError`\\ s naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from job.data.formats import DATA_EXTENSIONS as DATA_SUFFIXES
from job.errors import UserError
from job.jsonfiles import read_object

log = logging.getLogger(__name__)

ROOT_ENV = "OPT_ML_ROOT"  # moves /opt/ml, for tests and unusual setups
DEFAULT_ROOT = Path("/opt/ml")
DEFAULT_CHECKPOINTS = DEFAULT_ROOT / "checkpoints"  # synced from checkpoint_s3_uri by SageMaker

# Channel names understood as the training and validation data (SageMaker's examples use both spellings).
TRAIN_CHANNELS = ("train", "training")
VALID_CHANNELS = ("validation", "valid", "val", "eval", "evaluation")
# Keys that the SageMaker SDK and automatic model tuning add to hyperparameters.json; they are not job params.
RESERVED_PREFIXES = ("sagemaker_", "_")


def root(env: Mapping[str, str], sm_root: Path | None = None) -> Path:
    """The SageMaker ``/opt/ml`` folder (``OPT_ML_ROOT`` moves it)."""
    return Path(sm_root or env.get(ROOT_ENV) or DEFAULT_ROOT)


def is_sagemaker(root: Path) -> bool:
    config = root / "input" / "config"
    return (config / "resourceconfig.json").is_file() or (config / "hyperparameters.json").is_file()


def read_resource_config(path: Path) -> dict[str, Any]:
    """SageMaker's resourceconfig.json, checked: ``hosts`` (non-empty list) and ``current_host`` (one of them)."""
    data = read_object(path)
    hosts, current = data.get("hosts"), data.get("current_host")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise UserError(f"{path}: 'hosts' must be a non-empty list of host names, got {hosts!r}")
    if len(set(hosts)) != len(hosts):
        raise UserError(f"{path}: 'hosts' lists a host twice: {hosts}")
    if current not in hosts:
        raise UserError(f"{path}: current_host {current!r} is not one of hosts {hosts}")
    return data


def read_hyperparameters(path: Path) -> dict[str, Any]:
    """SageMaker's hyperparameters.json as job parameters: names in snake_case, values ready for validation.

    Values arrive as strings ("3", "true", "none"); Seq2SeqParams parses them into their types. Framework
    estimators JSON-encode every value, so a string that is a JSON string or list ('"t5-small"', '["q","v"]')
    is decoded once. Keys added by the SDK or automatic model tuning (``sagemaker_*``, ``_*``) are dropped.
    """
    if not path.is_file():
        return {}
    data = read_object(path)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith(RESERVED_PREFIXES):
            log.info("Ignoring SageMaker's own hyperparameter %s", key)
            continue
        if isinstance(value, dict):
            raise UserError(f"{path}: hyperparameter {key!r} is a JSON object; give a string value")
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                decoded = None
            value = decoded if isinstance(decoded, str | list) else value
        out[key.replace("-", "_")] = value
    return out


def channels(root: Path) -> dict[str, Path]:
    """Data channels: names from inputdataconfig.json when present, else the folders under input/data."""
    data_dir = root / "input" / "data"
    config = root / "input" / "config" / "inputdataconfig.json"
    if config.is_file():
        found: dict[str, Path] = {}
        for name, spec in read_object(config).items():
            mode = spec.get("TrainingInputMode", "File") if isinstance(spec, dict) else "File"
            if mode == "Pipe":
                raise UserError(f"SageMaker channel {name!r} uses Pipe mode; this job reads files: use File/FastFile")
            found[name] = data_dir / name
        return found
    if not data_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(data_dir.iterdir()) if p.is_dir()}


def channel_data_path(channels: Mapping[str, Path], *, work_dir: Path | None = None) -> tuple[str, str | None] | None:
    """``(data_path, valid_split)`` for the train/validation channels, or ``None`` without a train channel.

    A train channel alone is passed as it is (a file when it holds exactly one data file, otherwise the
    folder: {split}.csv files or a save_to_disk folder). With a validation channel too, the two files are
    linked as ``train.<ext>``/``validation.<ext>`` into one folder (job.data's folder layout) and the
    validation split is ``validation``.
    """
    train = next((channels[n] for n in TRAIN_CHANNELS if n in channels), None)
    valid = next((channels[n] for n in VALID_CHANNELS if n in channels), None)
    if train is None:
        return None
    for name in sorted(set(channels) - set(TRAIN_CHANNELS) - set(VALID_CHANNELS)):
        log.warning("SageMaker channel %r is not used (only train and validation channels are read)", name)
    if not train.is_dir():
        raise UserError(f"SageMaker channel 'train' folder {train} does not exist; check the channel's S3 input")
    if valid is None:
        files = _data_files(train)
        return (str(files[0]) if len(files) == 1 else str(train)), None
    links = {"train": _channel_file(train, "train"), "validation": _channel_file(valid, "validation")}
    return str(_link_folder(links, work_dir=work_dir)), "validation"


def _data_files(folder: Path) -> list[Path]:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return []  # a save_to_disk folder: pass the folder
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in DATA_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _channel_file(folder: Path, split: str) -> Path:
    if not folder.is_dir():
        raise UserError(f"SageMaker channel {split!r} folder {folder} does not exist; check the channel's S3 input")
    files = _data_files(folder)
    named = [f for f in files if f.stem == split]
    if len(files) == 1 or len(named) == 1:
        return files[0] if len(files) == 1 else named[0]
    found = ", ".join(str(f.relative_to(folder)) for f in files[:5]) or "none"
    raise UserError(
        f"SageMaker channel {split!r} ({folder}) must hold one data file ({'/'.join(DATA_SUFFIXES)}) or "
        f"{split}.<ext>; found: {found}"
    )


def _link_folder(links: Mapping[str, Path], *, work_dir: Path | None) -> Path:
    """A folder of symlinks ``{split}<ext>`` → file, the same for every process of the node (built once)."""
    digest = hashlib.sha256(json.dumps({k: str(v) for k, v in links.items()}).encode()).hexdigest()[:12]
    base = work_dir or Path(tempfile.gettempdir())
    final = base / f"seq2seq-channels-{os.getuid()}-{digest}"
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=base))
    for split, target in links.items():
        (staging / f"{split}{target.suffix.lower()}").symlink_to(target)
    try:
        staging.rename(final)  # atomic: a concurrent process either wins or finds the finished folder
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def checkpoint_dir(config: Path, root: Path) -> str:
    """checkpointconfig.json's LocalPath when checkpoint_s3_uri is set, else /opt/ml/checkpoints."""
    if config.is_file():
        local = read_object(config).get("LocalPath")
        if isinstance(local, str) and local:
            return local
    return str(root / "checkpoints")


def tensorboard_dir(root: Path) -> str:
    """Where SageMaker's TensorBoardOutputConfig picks up event files (its default LocalPath)."""
    return str(root / "output" / "tensorboard")
