"""Trusted checkpoints: loading one to resume runs no code from it, and its states are usable.

The trust model (docs/reliability.md, "Trusted checkpoints"):

* A checkpoint is **data, never code**. Every pickle in it (``*.pt``, ``*.pth``, ``*.bin``, ``*.pkl``: optimizer,
  scheduler, RNG and scaler states, DeepSpeed's ``global_stepN/*_states.pt``) is opened with PyTorch's
  restricted unpickler (``torch.load(weights_only=True)``: tensors, containers, numbers, strings) plus an
  explicit allow-list of the plain data classes DeepSpeed pickles (:data:`DEEPSPEED_GLOBALS`), before the
  checkpoint is handed to the Trainer. A pickle that names anything else (``os.system``, ``builtins.exec``, any
  class with a ``__reduce__``) is refused without being run, and the checkpoint is skipped like a corrupt one.
  This matters because DeepSpeed loads its states with ``weights_only=False`` on every rank: whoever can write
  to ``output_uri`` could otherwise run code in the job. (The Trainer's own loads of ``rng_state.pth``,
  ``optimizer.pt`` and ``scheduler.pt`` already use ``weights_only=True`` in transformers 5.24.)
* ``training_args.bin`` (pickled ``TrainingArguments``) is written for reference and never loaded on resume,
  so it is not opened either; DeepSpeed's ``latest`` must name a ``global_stepN`` folder of the checkpoint
  itself (not ``../elsewhere``), and ``zero_to_fp32.py`` is never run by the job.
* The manifest's checksums prove that files are *as written*, not *who* wrote them: they catch damage, not an
  attacker who rewrites the manifest too. The states are therefore also checked for shape: an RNG state that
  ``random``/``numpy``/``torch`` would refuse, an optimizer state without ``state``/``param_groups``, a scheduler
  state that is not a dict — a checkpoint that would crash every retry — is skipped with a warning and the
  previous complete checkpoint is used.
* Model weights are safetensors (no code by design); a ``pytorch_model.bin`` is checked like any pickle.
"""

from __future__ import annotations

import importlib
import logging
import random
import re
from pathlib import Path
from typing import Any

from job.errors import first_line

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
NOT_LOADED = ("training_args.bin",)  # pickled TrainingArguments: never loaded when resuming
DEEPSPEED_LATEST = "latest"
# Plain data classes DeepSpeed 0.19 pickles into its checkpoint states (module:name). Allowing a class lets the
# unpickler build an instance and set its attributes: none of these runs code on construction or __setstate__.
DEEPSPEED_GLOBALS = (  # found in ZeRO-2 and ZeRO-3 (offload) checkpoints; DynamicLossScaler with fp16
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.runtime.zero.config:ZeroStageEnum",
    "deepspeed.utils.tensor_fragment:fragment_address",
)
_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+)")


def problem(folder: Path) -> str | None:
    """Why the checkpoint ``folder`` must not be resumed from (unsafe or unusable state), or None."""
    if (latest := folder / DEEPSPEED_LATEST).is_file() and (issue := _latest_problem(folder, latest)):
        return issue
    deepspeed = any(p.is_dir() for p in folder.glob("global_step*"))  # import DeepSpeed's classes only then
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix not in PICKLE_SUFFIXES or path.name in NOT_LOADED:
            continue
        rel = path.relative_to(folder).as_posix()
        try:
            state = safe_load(path, deepspeed=deepspeed)
        except UnsafePickle as exc:
            return f"{rel} is not plain data: its pickle refers to {exc.target} (refused without running it)"
        except Exception as exc:  # any reason torch cannot read it: truncated, garbage, not a torch file
            return f"{rel} cannot be read ({type(exc).__name__}: {first_line(exc, 160)})"
        if issue := state_problem(path.name, state):
            return f"{rel} {issue}"
    return None


class UnsafePickle(Exception):
    """A pickle that names a global outside the allow-list (it would run code if loaded normally)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def safe_load(path: Path, *, deepspeed: bool = False) -> Any:
    """``path`` loaded with the restricted unpickler (tensors memory-mapped, not read); UnsafePickle if refused.

    ``deepspeed``: also allow DeepSpeed's plain data classes (imports DeepSpeed).
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_allowed_globals(deepspeed=deepspeed)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED.search(str(exc))  # torch names the refused global in its message
        if found:
            raise UnsafePickle(found.group(1)) from None
        raise


def _allowed_globals(*, deepspeed: bool) -> list[Any]:
    """numpy's RNG state (as transformers allows it for rng_state.pth) and DeepSpeed's plain data classes."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    if deepspeed:
        from job.context import name_deepspeed_accelerator

        name_deepspeed_accelerator()  # no accelerator probe warning on a CPU machine
    for spec in DEEPSPEED_GLOBALS if deepspeed else ():
        module_name, name = spec.split(":")
        try:
            allowed.append(getattr(importlib.import_module(module_name), name))
        except (ImportError, AttributeError):  # no DeepSpeed here: its checkpoints cannot be resumed anyway
            continue
    return allowed


def _latest_problem(folder: Path, latest: Path) -> str | None:
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not re.fullmatch(r"global_step\d+", tag) or not (folder / tag).is_dir():
        return f"{DEEPSPEED_LATEST} names {tag[:80]!r}, not a global_stepN folder of this checkpoint"
    return None


# ------------------------------------------------------------------------------------------- usable states
def state_problem(name: str, state: Any) -> str | None:
    """Why a Trainer state file would fail to load (by its file name), or None."""
    if name.startswith("rng_state"):
        return _rng_problem(state)
    if name == "optimizer.pt":
        return _optimizer_problem(state)
    if name in ("scheduler.pt", "scaler.pt") and not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a state dict"
    return None


def _rng_problem(state: Any) -> str | None:
    import numpy as np
    import torch

    if not isinstance(state, dict) or not {"python", "numpy", "cpu"} <= set(state):
        return "is not an RNG state (python, numpy and cpu generator states)"
    try:
        random.Random().setstate(state["python"])
        np.random.RandomState().set_state(state["numpy"])
        generator = torch.Generator()
        cpu = state["cpu"]
        if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8:
            raise TypeError("the cpu state is not a uint8 tensor")
        generator.set_state(cpu.clone())
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as exc:
        return f"holds an RNG state that cannot be restored ({first_line(exc, 160)})"
    return None


def _optimizer_problem(state: Any) -> str | None:
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or not isinstance(state.get("state"), dict):
        return "is not an optimizer state (state and param_groups)"
    ids: set[int] = set()
    for group in groups:
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(isinstance(i, int) for i in params):
            return "has a parameter group without its parameter list"
        ids.update(params)
    if not set(state["state"]) <= ids:
        return "has states for parameters that are in no parameter group"
    return None
