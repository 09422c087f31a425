"""Preflight: read the run context, load the parameters, and run every check that depends on the machine.

Every entry point goes through :func:`preflight` (the CLI's train and validate, the launcher) or, for a
:class:`~job.params.Seq2SeqParams` built in Python, :func:`check`. The schema checks *between* fields live in
:mod:`job.params`; the checks here need the machine: a CUDA GPU for fp16, installed packages, files that must
exist, the DeepSpeed JSON against the params, a distributed launcher for DeepSpeed. All problems are reported
at once, on one line, before any data or model is loaded.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from job.builtin_models import is_builtin
from job.context import RunContext, read_context
from job.errors import UserError
from job.model_checks import folder_problems, looks_local, model_lengths
from job.param_names import SECRET_FIELDS
from job.param_sources import load_params
from job.params import Seq2SeqParams
from job.platforms.overrides import apply_platform
from job.secrets import remember
from job.storage.uris import is_remote
from job.tracking.checks import tracking_problems
from job.training.deepspeed import deepspeed_problems

log = logging.getLogger(__name__)


def preflight(
    overrides: Mapping[str, Any] | None = None,
    *,
    params_file: str | None = None,
    env: Mapping[str, str] | None = None,
    sm_root: Path | None = None,
) -> tuple[RunContext, Seq2SeqParams]:
    """The run context and the checked params, from CLI-style overrides, the environment and the platform."""
    ctx = read_context(env, sm_root=sm_root)
    remember([str(v) for k, v in (overrides or {}).items() if k in SECRET_FIELDS])  # masked even if rejected
    merged = apply_platform(dict(overrides or {}), ctx.platform, env=ctx.env, params_file=params_file)
    params = load_params(merged, env=ctx.env, params_file=params_file)
    remember([params.token_value()])  # from any source: masked in every log line and error from now on
    check(params, ctx)
    return ctx, params


def check(params: Seq2SeqParams, ctx: RunContext) -> None:
    """Every machine-dependent problem with ``params``, raised as one UserError line."""
    problems = machine_problems(params, ctx)
    if problems:
        raise UserError("invalid parameters: " + "; ".join(problems))


def machine_problems(params: Seq2SeqParams, ctx: RunContext) -> list[str]:
    problems: list[str] = []
    needs_cuda = params.mixed_precision == "fp16" or (params.deepspeed and params.mixed_precision)
    cuda = bool(ctx.cuda_devices) if needs_cuda else False  # torch is imported only when the answer matters
    if params.mixed_precision == "fp16" and not cuda:
        problems.append("mixed_precision=fp16 needs a CUDA GPU and none is visible; use bf16 or none")
    local_resume = params.resume not in ("auto", "never") and "://" not in params.resume
    if local_resume and not Path(params.resume).expanduser().exists():
        problems.append(
            f"resume={params.resume}: no such folder; give a checkpoint-N folder (or a folder of them), an "
            "s3:// URI, auto or never"
        )
    problems += tracking_problems(params.log, ctx.tracking)
    installed = importlib.util.find_spec("deepspeed") is not None if params.deepspeed else True
    problems += deepspeed_problems(params, cuda=cuda, installed=installed)
    problems += output_problems(params)
    problems += model_problems(params, ctx)
    return problems


def model_problems(params: Seq2SeqParams, ctx: RunContext) -> list[str]:
    """A local model folder is checked whole (job.model_checks); a Hub id is checked by the run itself
    (job.pipeline.prepare: it needs the network), an s3:// model once downloaded, a builtin one is built."""
    model = params.model
    if is_builtin(model) or is_remote(model) or not looks_local(model):
        return []
    return folder_problems(Path(model).expanduser(), lengths=model_lengths(params), name=model)


def output_problems(params: Seq2SeqParams) -> list[str]:
    """The output and checkpoint folders must be folders the job can create and write (not a file, not read-only)."""
    problems = []
    folders = [("project_name", params.output_dir)]
    if params.checkpoint_dir:  # the default lies inside project_name
        folders.append(("checkpoint_dir", Path(params.checkpoint_dir)))
    for param, folder in folders:
        if problem := _writable_problem(folder.expanduser()):
            problems.append(f"{param}={folder}: {problem}")
    return problems


def _writable_problem(folder: Path) -> str | None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{existing} is a file, not a folder; choose another path"
    try:  # os.access is not enough: root may write anywhere except on a read-only mount
        with tempfile.TemporaryFile(dir=existing, prefix=".seq2seq-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc}); mount it writable or choose another path"
    return None


def check_launched(params: Seq2SeqParams, ctx: RunContext) -> None:
    """DeepSpeed needs the process group a launcher sets up; say how to start it if it is missing."""
    if params.deepspeed and not ctx.process.launched:
        raise UserError(
            f"deepspeed={params.deepspeed} needs a distributed launcher: start the job with "
            "`python -m job.launch train ...` (or the container entrypoint), which runs torchrun"
        )
    if params.num_processes and params.num_processes > 1 and not ctx.process.launched:
        log.warning(
            "num_processes=%d is used only by `python -m job.launch`; this process runs alone (WORLD_SIZE=1)",
            params.num_processes,
        )
