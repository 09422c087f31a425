"""Every parameter of a job: a pure schema of fields, types, documentation and checks *between* fields.

Building a :class:`Seq2SeqParams` reads nothing but its arguments: no environment, no file system, no torch,
no package probes. Where values come from (CLI flags, ``SEQ2SEQ_*`` variables, JSON) is
:mod:`job.param_sources`; checks that depend on the machine (a CUDA GPU for fp16, installed packages, files
that must exist, the DeepSpeed JSON) run in :mod:`job.preflight`. Values may be strings ("3" → 3,
"true" → True, "none" → None), which is how environment variables and SageMaker hand them over. All problems
are collected and reported at once, as one :class:`~job.errors.UserError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from job import metric_sets
from job import param_checks as checks
from job.errors import UserError
from job.outputs.files import CHECKPOINTS
from job.param_choices import Optimizer, Scheduler, Strategy
from job.param_names import REDACTED, SECRET_FIELDS, format_validation_error, reject_unknown
from job.secrets import mask

ENV_PREFIX = "SEQ2SEQ_"  # SEQ2SEQ_LR=1e-4 (read by job.param_sources)
MAX_EPOCHS = 1000  # plausibility bound: more is a typo (epochs=1e9 would be billions of steps and checkpoints)
PARAMS_ENV = ENV_PREFIX + "PARAMS"  # path to a JSON file, or inline JSON
_LANG = "default tgt_lang, else the key of a translation.xx target column, else the references' script decides."


def _field(default: Any, group: str, description: str, **kwargs: Any) -> Any:
    return Field(default, description=description, json_schema_extra={"group": group}, **kwargs)


class Seq2SeqParams(BaseSettings):
    """All parameters of a fine-tuning job: exactly the keyword arguments given, over the defaults.

    ``job.param_sources.load_params`` merges CLI flags, the environment and JSON into those arguments.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        frozen=True,
        allow_inf_nan=False,  # lr=inf trains every weight to NaN: no float parameter may be inf or nan
    )

    # --- Data -------------------------------------------------------------------------------------------
    data_path: str = _field(
        ...,
        "Data",
        "CSV/TSV/JSONL/JSON/Parquet file, a folder of {split}.<ext> files, a save_to_disk folder, "
        "or a Hub dataset id (name or name:config).",
    )
    text_column: str = _field("text", "Data", "Column holding the input text.")
    target_column: str = _field("target", "Data", "Column holding the target text.")
    train_split: str = _field("train", "Data", "Training split; slices such as train[:5000] or train[:90%] work.")
    valid_split: str | None = _field(
        None, "Data", "Validation split (e.g. validation, validation[:500], train[90%:]); none = no evaluation."
    )
    max_samples: int | None = _field(None, "Data", "Keep at most this many rows of each split.", ge=1)
    source_prefix: str = _field("", "Data", "Prepended to every input, e.g. 'summarize: ' for T5.")
    max_seq_length: int = _field(128, "Data", "Inputs are truncated to this many tokens.", ge=1)
    max_target_length: int = _field(128, "Data", "Targets are truncated to this many tokens.", ge=1)
    preprocessing_num_workers: int | None = _field(None, "Data", "Processes for tokenization (datasets.map).", ge=1)

    # --- Model ------------------------------------------------------------------------------------------
    model: str = _field(
        "google/flan-t5-base",
        "Model",
        "Hub id or local folder of the base model; builtin:t5-tiny / "
        "builtin:bart-tiny build a tiny random model and a tokenizer trained on the data (demo only).",
    )
    peft: bool = _field(False, "Model", "Train LoRA adapters instead of all weights.")
    quantization: Literal["int4", "int8", "none"] = _field(
        "int8", "Model", "Load the base model in 8 or 4 bits (bitsandbytes); applies only with --peft."
    )
    lora_r: int = _field(16, "Model", "LoRA rank.", ge=1)
    lora_alpha: int = _field(32, "Model", "LoRA alpha (scaling = alpha / r).", ge=1)
    lora_dropout: float = _field(0.05, "Model", "LoRA dropout.", ge=0.0, lt=1.0)
    target_modules: Annotated[str, AfterValidator(checks.module_list)] = _field(
        "all-linear", "Model", "Modules that get LoRA adapters: all-linear, or a comma-separated list (q,v)."
    )
    merge_adapter: bool = _field(
        False, "Model", "With --peft, also save the base model with the adapter merged in (loadable without peft)."
    )
    src_lang: str | None = _field(None, "Model", "Source language code for mBART-50/M2M tokenizers, e.g. en_XX.")
    tgt_lang: str | None = _field(
        None, "Model", "Target language code, e.g. de_DE; also forced as the first generated token (mBART-50)."
    )

    # --- Training ---------------------------------------------------------------------------------------
    lr: float = _field(5e-5, "Training", "Peak learning rate.", gt=0)
    epochs: float = _field(3, "Training", f"Number of training epochs (at most {MAX_EPOCHS}).", gt=0, le=MAX_EPOCHS)
    batch_size: int = _field(2, "Training", "Per-device training batch size.", ge=1)
    gradient_accumulation: int = _field(1, "Training", "Steps to accumulate gradients over.", ge=1)
    optimizer: Optimizer | None = _field(
        None, "Training", "Any optimizer the Trainer supports; default adamw_torch_fused (CUDA, CPU), else adamw_torch."
    )
    scheduler: Scheduler = _field("linear", "Training", "Learning-rate schedule.")
    warmup_ratio: float = _field(0.1, "Training", "Share of steps used for linear warmup.", ge=0.0, le=1.0)
    weight_decay: float = _field(0.0, "Training", "Weight decay.", ge=0.0)
    max_grad_norm: float = _field(1.0, "Training", "Gradient clipping norm.", ge=0.0)
    seed: int = _field(42, "Training", "Random seed.")
    mixed_precision: Literal["fp16", "bf16"] | None = _field(
        None, "Training", "fp16 (CUDA only) or bf16 (CUDA Ampere+ or CPU); none = fp32."
    )
    auto_find_batch_size: bool = _field(False, "Training", "Halve the batch size on CUDA out-of-memory and retry.")
    # Performance knobs (job/training/microbatches.py, eval_batching.py, job/cpu.py; README "Speed").
    microbatch_by_length: bool = _field(
        True,
        "Training",
        "Run each step's random rows as length-sorted micro-batches: the gradient of one random batch, far less "
        "padding. --no-microbatch-by-length pads each batch to its longest row.",
    )
    group_by_length: bool = _field(
        False,
        "Training",
        "The Trainer's length-grouped batches (look-alike rows per step): 1.2-1.5x the default's samples/s on "
        "CPU, but slows learning where the kind of example goes with its length (measured: ROUGE-L 31 vs 92 at "
        "epoch 3).",
    )
    eval_max_samples: int | None = _field(
        None, "Training", "Evaluate on a fixed random subset of this many rows during training; all at the end.", ge=1
    )
    max_steps: int | None = _field(None, "Training", "Stop after this many optimizer steps (overrides epochs).", ge=1)
    warmup_steps: int | None = _field(None, "Training", "Warmup steps (instead of warmup_ratio).", ge=0)
    label_smoothing: float = _field(0.0, "Training", "Label smoothing of the cross-entropy loss.", ge=0.0, lt=1.0)
    gradient_checkpointing: bool | None = _field(
        None, "Training", "Recompute activations in backward (less memory, slower); default on for 8/4-bit LoRA."
    )
    torch_compile: bool = _field(False, "Training", "torch.compile the model (GPU; each new shape recompiles).")
    dataloader_num_workers: int | None = _field(
        None, "Training", "Data loader processes; default 0 on CPU, 2 per GPU process if CPUs allow.", ge=0
    )
    logging_steps: int = _field(-1, "Training", "Log every N steps; -1 picks an interval from the number of steps.")
    eval_strategy: Strategy = _field("epoch", "Training", "When to evaluate: epoch, steps or no.")
    eval_steps: int | None = _field(None, "Training", "Evaluate every N steps (with eval_strategy=steps).", ge=1)
    save_strategy: Strategy | None = _field(
        None, "Training", "When to save checkpoints: epoch, steps or no; default = same as eval_strategy."
    )
    save_steps: int | None = _field(None, "Training", "Save every N steps (with save_strategy=steps).", ge=1)
    save_total_limit: int = _field(1, "Training", "Keep at most this many checkpoints.", ge=1)
    load_best_model_at_end: bool = _field(
        True, "Training", "Finish with the best checkpoint by metric_for_best_model (needs evaluation)."
    )
    metric_for_best_model: Annotated[str, AfterValidator(checks.best_metric)] = _field(
        "loss", "Training", "Picks the best model, drives early stopping: " + metric_sets.BEST_METRIC_HELP
    )
    early_stopping_patience: int = _field(
        5, "Training", "Stop after this many evaluations without improvement; 0 = never stop early.", ge=0
    )
    early_stopping_threshold: float = _field(
        0.01, "Training", "Minimum improvement that resets early-stopping patience.", ge=0.0
    )

    # --- Evaluation -------------------------------------------------------------------------------------
    num_beams: int = _field(1, "Evaluation", "Beams for generation during evaluation.", ge=1)
    generation_max_length: int | None = _field(
        None, "Evaluation", "Max generated tokens during evaluation; default = max_target_length.", ge=1
    )
    eval_batch_size: int | None = _field(
        None,
        "Evaluation",
        "Per-device evaluation batch size; default: sized by tokens (CPU) or free memory (GPU).",
        ge=1,
    )
    sort_eval_by_length: bool = _field(
        True, "Evaluation", "Generate for the validation set in length order (less padding, faster evaluation)."
    )
    task: Annotated[str, AfterValidator(checks.task)] = _field("auto", "Evaluation", metric_sets.TASK_HELP)
    metrics: Annotated[str | None, AfterValidator(checks.metric_list)] = _field(
        None, "Evaluation", metric_sets.METRICS_HELP
    )
    target_language: str | None = _field(
        None, "Evaluation", "Targets' language for BLEU's tokenizer and ROUGE's stemmer (de, zh, ja_XX…); " + _LANG
    )
    length_penalty: float = _field(1.0, "Evaluation", "Beam search: > 1 favours longer outputs; needs num_beams > 1.")
    no_repeat_ngram_size: int = _field(0, "Evaluation", "Generate no n-gram of this size twice; 0 = off.", ge=0)
    test_split: str | None = _field(
        None, "Evaluation", "Held-out split the final model is scored on (test_* metrics, predictions.jsonl)."
    )

    # --- Output -----------------------------------------------------------------------------------------
    project_name: str = _field("seq2seq-output", "Output", "Output folder for the model, metrics and checkpoints.")
    checkpoint_dir: str | None = _field(
        None, "Output", "Checkpoint folder; default project_name/checkpoints (SageMaker: /opt/ml/checkpoints)."
    )
    log: Literal["none", "tensorboard", "wandb", "mlflow"] = _field("none", "Output", "Experiment tracker.")
    push_to_hub: bool = _field(False, "Output", "Push the final model to the Hub as username/project_name.")
    username: str | None = _field(None, "Output", "Hub user or organisation to push to.")
    token: SecretStr | None = _field(None, "Output", "Hub token (secret; HF_TOKEN works too). Never logged or saved.")

    # --- Storage: object storage and the Hub (job/storage/, job/hub.py, docs/storage.md) -----------------------
    output_uri: str | None = _field(
        None,
        "Storage",
        "Also publish outputs here: s3://bucket/prefix, gs://bucket/prefix or a local folder. "
        "Checkpoints as saved, metrics.json after each evaluation, the final model at the end; manifest.json last.",
    )
    cache_dir: str | None = _field(
        None,
        "Storage",
        "Local folder for s3:// and gs:// inputs (reused while unchanged); default $HF_HOME/seq2seq-job/remote.",
    )
    s3_endpoint_url: str | None = _field(
        None,
        "Storage",
        "S3-compatible endpoint (MinIO, Ceph, R2), e.g. http://minio:9000; default "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS.",
    )
    hub_private: bool = _field(True, "Output", "With push_to_hub: create the repo private (--no-hub-private: public).")

    # --- Resilience: preemption, resume, idempotent reruns (job/resume.py, job/preemption.py, docs/reliability.md)
    resume: Annotated[str, AfterValidator(checks.resume_spec)] = _field(
        "auto",
        "Resilience",
        "auto: continue from the latest complete checkpoint (checkpoint folder, platform "
        "checkpoint folder or output_uri); never: start from step 0; or a checkpoint folder/URI (or a folder of them).",
    )
    overwrite: bool = _field(
        False,
        "Resilience",
        "Train again even if project_name already holds complete outputs (otherwise the job "
        "exits 0 at once without training).",
    )
    job_id: str | None = _field(
        None,
        "Resilience",
        "This job's identity across retries (default: the platform's — SageMaker TRAINING_JOB_NAME, Vertex "
        "CLOUD_ML_JOB_ID; on Kubernetes set SEQ2SEQ_JOB_ID from the Job's uid). An attempt of the same job takes "
        "over the output lease at once; another job is refused (docs/reliability.md).",
    )
    lease_seconds: float = _field(
        60.0,
        "Resilience",
        "One writer per output: the holder renews its lease every lease_seconds/4; a lease not renewed for "
        "lease_seconds is stale and another job may take it over.",
        ge=1,
        le=3600,
    )

    # --- Distributed: processes, nodes, DeepSpeed (job/launch.py, job/distributed.py, docs/scaling.md) ---------
    num_processes: int | None = _field(
        None,
        "Distributed",
        "Processes per node that `python -m job.launch` starts; default one per GPU (1 on "
        "CPU). E.g. 2 on CPU runs two gloo processes.",
        ge=1,
    )
    deepspeed: str | None = _field(
        None,
        "Distributed",
        "DeepSpeed ZeRO: zero2, zero3, zero3_offload (deepspeed_configs/*.json) or a path to "
        'your own DeepSpeed JSON (use "auto" for values the Trainer owns). Needs job.launch.',
    )

    # --- validators -------------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _nones_and_lists(cls, data: Any) -> Any:
        """'none'/'null'/'' mean None for optional fields; JSON lists become comma-separated strings."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            info = cls.model_fields.get(key)
            if info is None:
                continue
            if isinstance(value, str) and value.strip().lower() in ("none", "null", "") and _accepts_none(info):
                out[key] = None
            elif key in ("target_modules", "metrics") and isinstance(value, list | tuple):
                out[key] = ",".join(str(v) for v in value)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Seq2SeqParams:
        """Checks between fields (job.param_checks), all reported at once."""
        if problems := checks.cross_field_problems(self):
            raise ValueError("; ".join(problems))
        return self

    # --- derived values ---------------------------------------------------------------------------------
    @property
    def evaluates(self) -> bool:
        return self.valid_split is not None and self.eval_strategy != "no"

    @property
    def resolved_save_strategy(self) -> Strategy:
        if self.save_strategy:
            return self.save_strategy
        return self.eval_strategy if self.valid_split and self.eval_strategy != "no" else "epoch"

    @property
    def resolved_generation_max_length(self) -> int:
        return self.generation_max_length or self.max_target_length

    @property
    def resolved_task(self) -> str | None:
        columns = (self.text_column, self.target_column)
        return metric_sets.resolve_task(self.task, languages=(self.src_lang, self.tgt_lang), columns=columns)

    @property
    def resolved_metrics(self) -> tuple[str, ...]:
        return metric_sets.resolve_metrics(self.metrics.split(",") if self.metrics else None, self.resolved_task)

    @property
    def resolved_target_language(self) -> str | None:
        return self.target_language or self.tgt_lang or metric_sets.column_language(self.target_column)

    @property
    def target_module_list(self) -> str | list[str]:
        return "all-linear" if self.target_modules == "all-linear" else self.target_modules.split(",")

    @property
    def quantized(self) -> bool:
        """Quantization applies only to LoRA training."""
        return self.peft and self.quantization != "none"

    @property
    def resolved_gradient_checkpointing(self) -> bool:
        """gradient_checkpointing, or on for quantized LoRA when it is unset."""
        return self.quantized if self.gradient_checkpointing is None else self.gradient_checkpointing

    def effective_batch_size(self, world_size: int) -> int:
        """Sequences per optimizer step: per-device batch × accumulation × processes."""
        return self.batch_size * self.gradient_accumulation * world_size

    @property
    def output_dir(self) -> Path:
        return Path(self.project_name)

    @property
    def resolved_checkpoint_dir(self) -> Path:
        """checkpoint_dir, or project_name/checkpoints when it is unset."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir else self.output_dir / CHECKPOINTS

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def redacted_dict(self) -> dict[str, Any]:
        """Every resolved parameter, JSON-able, secrets replaced by '***' (for training_params.json and logs)."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if data.get(name) is not None:
                data[name] = REDACTED
        # credentials inside URLs and paths (https://user:secret@minio:9000, ?token=…) are masked too
        return {k: mask(v) if isinstance(v, str) else v for k, v in data.items()}

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # pure: the environment and JSON are merged in by job.param_sources

    def __init__(self, **values: Any) -> None:
        """Validate ``values`` over the defaults; every problem is reported in one UserError."""
        reject_unknown(values.keys(), "parameter", valid=list(type(self).model_fields))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc)) from None


def _accepts_none(info: FieldInfo) -> bool:
    return not info.is_required() and (info.default is None or "None" in str(info.annotation))
