"""DeepSpeed ZeRO: the bundled presets, their checks against the params, and their place in the Trainer's args.

``deepspeed=zero2|zero3|zero3_offload`` picks a config from ``deepspeed_configs/`` (or give a path to your own
JSON). Those configs say ``"auto"`` for every value the Trainer owns (batch size, accumulation, learning rate,
clipping, precision), so the params stay the one source of truth; :func:`deepspeed_problems` checks a config
against the params before any model is loaded (run by :mod:`job.preflight`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from job.errors import UserError
from job.jsonfiles import parse_object
from job.params import Seq2SeqParams

log = logging.getLogger(__name__)

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "deepspeed_configs"
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")

# Values the Trainer fills into a DeepSpeed config: key path → (param name, how to read it from the params).
_TRAINER_OWNED = {
    "train_micro_batch_size_per_gpu": ("batch_size", lambda p: p.batch_size),
    "gradient_accumulation_steps": ("gradient_accumulation", lambda p: p.gradient_accumulation),
    "gradient_clipping": ("max_grad_norm", lambda p: p.max_grad_norm),
    "optimizer.params.lr": ("lr", lambda p: p.lr),
    "optimizer.params.weight_decay": ("weight_decay", lambda p: p.weight_decay),
    "bf16.enabled": ("mixed_precision", lambda p: p.mixed_precision == "bf16"),
    "fp16.enabled": ("mixed_precision", lambda p: p.mixed_precision == "fp16"),
}
_ADAMW_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def deepspeed_config_path(value: str) -> Path:
    """``zero2`` → the bundled ``deepspeed_configs/zero2.json``; anything else is a path to a JSON file."""
    if value in DEEPSPEED_PRESETS:
        return DEEPSPEED_CONFIG_DIR / f"{value}.json"
    return Path(value).expanduser()


def load_deepspeed_config(value: str) -> dict[str, Any]:
    """The DeepSpeed config named by the ``deepspeed`` parameter, as a dict; UserError if it is unusable."""
    path = deepspeed_config_path(value)
    if value not in DEEPSPEED_PRESETS and not value.endswith(".json") and not path.exists():
        raise UserError(
            f"deepspeed={value} is neither {', '.join(DEEPSPEED_PRESETS)} nor a path to a DeepSpeed JSON file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"deepspeed config {path} cannot be read ({exc.strerror}); give an existing file") from None
    return parse_object(text, where=f"deepspeed config {path}")


def deepspeed_problems(params: Seq2SeqParams, *, cuda: bool, installed: bool) -> list[str]:
    """Everything wrong with the DeepSpeed choice on this machine, found before any model is loaded."""
    problems: list[str] = []
    if not params.deepspeed:
        return problems
    if params.mixed_precision and not cuda:
        problems.append(
            f"deepspeed with mixed_precision={params.mixed_precision} needs a CUDA GPU (transformers allows bf16 "
            "on CPU only without DeepSpeed); set mixed_precision=none"
        )
    if not installed:
        problems.append("deepspeed needs the deepspeed package: pip install 'seq2seq-job[deepspeed]'")
    try:
        config = load_deepspeed_config(params.deepspeed)
    except UserError as exc:
        return [*problems, str(exc)]
    return problems + _config_mismatches(config, params)


def _config_mismatches(config: dict[str, Any], params: Seq2SeqParams) -> list[str]:
    where = f"deepspeed config {params.deepspeed}"
    problems = []
    for key, (param, read) in _TRAINER_OWNED.items():
        value = _get(config, key)
        if value is None or value == "auto":
            continue
        if value != read(params):
            problems.append(
                f"{where} sets {key}={value!r} but {param}={getattr(params, param)!r}; "
                f'set "{key}": "auto" so the value comes from the parameters'
            )
    zero = config.get("zero_optimization") or {}
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        problems.append(
            f"{where} is ZeRO-3 without zero_optimization.stage3_gather_16bit_weights_on_model_save=true: the final "
            "model would be saved as shards that from_pretrained cannot load; set it to true"
        )
    if "optimizer" in config and params.optimizer not in (None, *_ADAMW_OPTIMIZERS):  # None: the default AdamW
        problems.append(
            f"{where} brings its own optimizer ({config['optimizer'].get('type')}), so optimizer={params.optimizer} "
            "would be ignored; use optimizer=adamw_torch or a config without an optimizer section (e.g. zero3)"
        )
    return problems


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def zero_stage(params: Seq2SeqParams) -> int | None:
    if not params.deepspeed:
        return None
    return (load_deepspeed_config(params.deepspeed).get("zero_optimization") or {}).get("stage")


def training_args_overrides(params: Seq2SeqParams, *, world_size: int, on_cpu: bool) -> dict[str, Any]:
    """Seq2SeqTrainingArguments values for the distributed setup (DeepSpeed, multi-process CPU)."""
    out: dict[str, Any] = {}
    if params.deepspeed:
        config = load_deepspeed_config(params.deepspeed)
        # transformers 5 fills train_batch_size while building the arguments, before torch.distributed is up (so
        # with world size 1), and then it or DeepSpeed rejects the value under N processes. Left out, DeepSpeed
        # derives it: micro batch × accumulation × world size.
        total = config.pop("train_batch_size", "auto")
        if total != "auto" and total != params.effective_batch_size(world_size):
            raise UserError(
                f"deepspeed config {params.deepspeed} sets train_batch_size={total!r} but batch_size × "
                f'gradient_accumulation × processes = {params.effective_batch_size(world_size)}; set it to "auto"'
            )
        out["deepspeed"] = config
    elif on_cpu:
        # accelerate starts torch.distributed (gloo) for CPU processes only when told it runs on CPU (without
        # this every torchrun worker would silently train alone on the whole dataset), and transformers
        # accepts bf16 on CPU only then.
        out["use_cpu"] = True
    return out


def patch_cpu_deepspeed_state(args: Any, *, local_rank: int) -> None:
    """Make accelerate see all processes when DeepSpeed runs on CPU (CI and tests; a no-op with CUDA).

    accelerate 1.15 supports DeepSpeed only on accelerators: on CPU it lets DeepSpeed start torch.distributed
    (gloo) but records one process, so every rank would read the whole dataset and evaluation's gathers
    would fail. Once the arguments have set the process group up, tell its shared state the truth.
    """
    import torch

    if not getattr(args, "deepspeed", None) or torch.cuda.is_available():
        return
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    _ = args.device  # builds PartialState, which initialises DeepSpeed's process group
    state = PartialState()
    if state.distributed_type == DistributedType.DEEPSPEED and dist.is_initialized() and state.num_processes == 1:
        state.backend = dist.get_backend()
        state.num_processes = dist.get_world_size()
        state.process_index = dist.get_rank()
        state.local_process_index = local_rank
        log.info("DeepSpeed on CPU: %d processes, backend %s", state.num_processes, state.backend)
