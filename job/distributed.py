"""Several processes, one job: DeepSpeed configs, correct losses, once-per-node work, exit codes for the launcher.

* **DeepSpeed.** ``deepspeed=zero2|zero3|zero3_offload`` picks a config from ``deepspeed_configs/`` (or give a
  path to your own JSON). Those configs say ``"auto"`` for every value the Trainer owns (batch size,
  accumulation, learning rate, clipping, precision), so our params stay the one source of truth;
  :func:`deepspeed_problems` checks a config against the params before any model is loaded.
* **Loss.** :func:`token_mean_loss` keeps the loss exact whatever the number of processes and accumulation steps.
* **Once per node.** :func:`node_lock` is an inter-process file lock: the first process builds a shared input,
  the others wait and reuse it.
* **Exit codes.** torchrun exits 1 whatever its workers exited with. Each worker records its own exit code in
  ``$JOB_EXIT_CODE_DIR`` (:func:`report_exit_code`), and :func:`resolve_exit_code` lets ``job.launch`` exit
  with the code that tells the platform what happened (2: bad input, don't retry; 143: preempted).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job import ranks
from job.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, UserError

if TYPE_CHECKING:
    from job.params import Seq2SeqParams

log = logging.getLogger(__name__)

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "deepspeed_configs"
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")
EXIT_CODE_DIR_ENV = "JOB_EXIT_CODE_DIR"  # set by job.launch for its workers
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun (or accelerate, deepspeed) gives each worker

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


# ------------------------------------------------------------------------------------------------ DeepSpeed
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"deepspeed config {path} cannot be read ({exc.strerror}); give an existing file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"deepspeed config {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise UserError(f"deepspeed config {path} must hold a JSON object")
    return data


def deepspeed_problems(params: Seq2SeqParams) -> list[str]:
    """Everything wrong with the DeepSpeed choice, found before any model is loaded (one line each)."""
    problems: list[str] = []
    if not params.deepspeed:
        return problems
    if params.quantized:
        problems.append(
            f"deepspeed does not train {params.quantization}-quantized (bitsandbytes) models: set quantization=none "
            "(LoRA on a ZeRO-sharded model) or drop deepspeed (quantized LoRA on one GPU per process)"
        )
    if params.mixed_precision and not _cuda():
        problems.append(
            f"deepspeed with mixed_precision={params.mixed_precision} needs a CUDA GPU (transformers allows bf16 "
            "on CPU only without DeepSpeed); set mixed_precision=none"
        )
    if importlib.util.find_spec("deepspeed") is None:
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
    if "optimizer" in config and params.optimizer not in _ADAMW_OPTIMIZERS:
        problems.append(
            f"{where} brings its own optimizer ({config['optimizer'].get('type')}), so optimizer={params.optimizer} "
            "would be ignored; use optimizer=adamw_torch or a config without an optimizer section (e.g. zero3)"
        )
    return problems


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def training_args_overrides(params: Seq2SeqParams) -> dict[str, Any]:
    """Seq2SeqTrainingArguments values for the distributed setup (DeepSpeed, multi-process CPU)."""
    import torch

    out: dict[str, Any] = {}
    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    if params.deepspeed:
        config = load_deepspeed_config(params.deepspeed)
        # transformers 5 fills train_batch_size while building the arguments, before torch.distributed is up (so
        # with world size 1), and then it or DeepSpeed rejects the value under N processes. Left out, DeepSpeed
        # derives it: micro batch × accumulation × world size.
        total = config.pop("train_batch_size", "auto")
        if total != "auto" and total != params.effective_batch_size:
            raise UserError(
                f"deepspeed config {params.deepspeed} sets train_batch_size={total!r} but batch_size × "
                f'gradient_accumulation × processes = {params.effective_batch_size}; set it to "auto"'
            )
        out["deepspeed"] = config
    elif on_cpu:
        # accelerate starts torch.distributed (gloo) for CPU processes only when told it runs on CPU (without
        # this every torchrun worker would silently train alone on the whole dataset), and transformers
        # accepts bf16 on CPU only then.
        out["use_cpu"] = True
    return out


def patch_cpu_deepspeed_state(args: Any) -> None:
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
        state.local_process_index = ranks.local_rank()
        log.info("DeepSpeed on CPU: %d processes, backend %s", state.num_processes, state.backend)


def describe(params: Seq2SeqParams) -> dict[str, Any]:
    """The distributed setup of this run, for metrics.json."""
    info: dict[str, Any] = {
        "world_size": ranks.world_size(),
        "nnodes": int(os.environ.get("GROUP_WORLD_SIZE") or 1),  # torchrun: the number of nodes
        "effective_batch_size": params.effective_batch_size,
        "strategy": "deepspeed" if params.deepspeed else "ddp" if ranks.world_size() > 1 else "single process",
    }
    if params.deepspeed:
        config = load_deepspeed_config(params.deepspeed)
        stage = (config.get("zero_optimization") or {}).get("stage")
        info["deepspeed"] = {"config": params.deepspeed, "zero_stage": stage}
    return info


def check_launch(params: Seq2SeqParams) -> None:
    """DeepSpeed needs the process group a launcher sets up; say how to start it if it is missing."""
    launched = all(name in os.environ for name in LAUNCHER_ENV)
    if params.deepspeed and not launched:
        raise UserError(
            f"deepspeed={params.deepspeed} needs a distributed launcher: start the job with "
            "`python -m job.launch train ...` (or the container entrypoint), which runs torchrun"
        )
    if params.num_processes and params.num_processes > 1 and not launched:
        log.warning(
            "num_processes=%d is used only by `python -m job.launch`; this process runs alone (WORLD_SIZE=1)",
            params.num_processes,
        )


# ------------------------------------------------------------------------------------------------------ loss
def token_mean_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy summed over the target tokens and divided by the target tokens of the whole optimizer step.

    The Trainer's ``compute_loss_func``. transformers 5 multiplies the loss by the number of processes and skips
    the division by gradient-accumulation steps for any model whose ``forward`` takes ``**kwargs``, assuming
    the model divides by ``num_items_in_batch`` (the step's token count over all processes and micro-batches).
    T5, BART, mBART and Marian take ``**kwargs`` but return a per-batch mean, so their loss and gradients came
    out N× too large with N processes or N accumulation steps. Dividing by ``num_items_in_batch`` here makes
    the loss exact: every target token weighs the same, however the step is split over processes.
    """
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    if num_items_in_batch is None:  # e.g. a caller outside the Trainer's training step
        return total / labels.ne(-100).sum().clamp(min=1)
    return total / num_items_in_batch


def name_deepspeed_accelerator() -> None:
    """Tell DeepSpeed there is no accelerator on a machine without one (``DS_ACCELERATOR=cpu``).

    accelerate imports DeepSpeed whenever it is installed, and DeepSpeed then probes for an accelerator and prints
    a warning outside the log format ("Setting accelerator to CPU…") into every CPU run. Call before importing
    transformers' Trainer stack; a ``DS_ACCELERATOR`` set by the user wins.
    """
    import torch

    accelerator = getattr(torch, "accelerator", None)
    none = accelerator.current_accelerator() is None if accelerator is not None else not torch.cuda.is_available()
    if none and "DS_ACCELERATOR" not in os.environ:
        os.environ["DS_ACCELERATOR"] = "cpu"


def barrier() -> None:
    """Wait for every process of the job (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_process_group() -> None:
    """Tear torch.distributed down before the interpreter exits (DeepSpeed's CPU workers abort otherwise)."""
    import sys

    dist = sys.modules.get("torch.distributed")  # never import torch just to find nothing to shut down
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_after_deepspeed() -> None:
    """After a successful DeepSpeed run, end the process without C++ static destructors (exit code 0).

    DeepSpeed's JIT-built CPU extensions can abort in their destructors when the interpreter exits ("terminate
    called without an active exception", seen once in about fifteen 2-process zero3_offload runs on CPU), which
    turned a finished job into a failed one. Everything is written and the process group is down by now, and
    the Trainer closed its loggers at the end of training; only Python's own exit-time clean-up is skipped.
    Without DeepSpeed this returns and the process exits normally.
    """
    import sys

    comm = sys.modules.get("deepspeed.comm.comm")
    if comm is None or getattr(comm, "cdb", None) is None:  # DeepSpeed's communication backend was never set up
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


# -------------------------------------------------------------------------------------------- once per node
@contextmanager
def node_lock(folder: Path) -> Iterator[None]:
    """Hold an inter-process lock on ``folder`` (created if missing), a folder one process fills for everyone.

    Processes on one node (and nodes sharing a file system) take turns: the first does the work, the others
    find it done. The lock dies with its process, so a crashed builder never blocks the rest.
    """
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        yield


def build_once(target: Path, *, key: str, build: Callable[[], object]) -> bool:
    """Run ``build()`` (which fills the folder ``target``) unless a process already did with the same ``key``.

    With N processes per node starting together, one builds and the others wait for it, then reuse the result;
    a folder left by an earlier run with another key is rebuilt. Returns True if this process built it.
    """
    marker = target / ".built-by"
    with node_lock(target):
        if marker.is_file() and marker.read_text(encoding="utf-8") == key:
            log.info("Reusing %s (built by another process of this job)", target)
            return False
        marker.unlink(missing_ok=True)
        build()
        marker.write_text(key, encoding="utf-8")
        return True


# ---------------------------------------------------------------------------------------------- exit codes
def report_exit_code(code: int, env: Mapping[str, str] | None = None) -> int:
    """Record this worker's exit code for job.launch (only when it set ``JOB_EXIT_CODE_DIR``); return ``code``."""
    env = os.environ if env is None else env
    folder = env.get(EXIT_CODE_DIR_ENV)
    if folder and code != EXIT_OK:
        try:
            path = Path(folder) / f"rank-{env.get('RANK', '0')}"
            path.write_text(str(code), encoding="utf-8")
        except OSError:
            pass  # the launcher then falls back to torchrun's own exit code
    return code


def read_exit_codes(folder: Path) -> dict[int, int]:
    """Non-zero exit codes the workers of this node recorded, by global rank, in the order they were written."""
    codes = []
    for path in folder.glob("rank-*"):
        try:
            codes.append((path.stat().st_mtime_ns, int(path.name.removeprefix("rank-")), int(path.read_text())))
        except (OSError, ValueError):
            continue
    return {rank: code for _, rank, code in sorted(codes)}


def resolve_exit_code(launcher_code: int, worker_codes: Mapping[int, int], *, signalled: int | None = None) -> int:
    """The exit code the platform should see when torchrun exited with ``launcher_code``.

    A user error on any rank wins (2: retrying cannot help); a job stopped by SIGTERM/SIGINT exits 128 + signal
    (143 = preempted, retry resumes); otherwise the first worker failure's code, else torchrun's (1).
    """
    if launcher_code == EXIT_OK:
        return EXIT_OK
    codes = list(worker_codes.values())
    if EXIT_USER_ERROR in codes:
        return EXIT_USER_ERROR
    if signalled is not None:
        return 128 + signalled
    if codes:
        return codes[0]
    if launcher_code < 0:  # torchrun itself was killed by a signal
        return 128 - launcher_code
    return launcher_code or EXIT_FAILURE
