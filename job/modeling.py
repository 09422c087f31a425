"""Tokenizer and model: from the Hub or a local folder, optionally quantized (bitsandbytes) and wrapped in LoRA."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from job.builtin_models import build_builtin_model, is_builtin
from job.data import SOURCE, TARGET, DataBundle
from job.errors import UserError, first_line
from job.locks import build_once
from job.params import Seq2SeqParams

log = logging.getLogger(__name__)


def resolve_model_source(params: Seq2SeqParams, data: DataBundle, *, work_dir: Path) -> str:
    """The name or folder to load from. ``builtin:*`` demo models are built here, on the training texts."""
    if not is_builtin(params.model):
        return params.model
    out_dir = work_dir / "base_model"
    texts = [*data.train[SOURCE], *data.train[TARGET]]
    log.info("Building %s: a tiny random model with a tokenizer trained on the data (demo only)", params.model)
    # All processes of a node start here together: one builds (under a file lock), the others reuse its folder.
    key = hashlib.sha256(json.dumps([params.model, params.seed, texts]).encode()).hexdigest()
    build_once(
        out_dir,
        key=key,
        build=lambda: build_builtin_model(params.model, texts=texts, out_dir=out_dir, seed=params.seed),
    )
    return str(out_dir)


def load_tokenizer(source: str, params: Seq2SeqParams) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, token=params.token_value())
    except OSError as exc:
        raise UserError(_not_found(source, "tokenizer", exc)) from None
    if params.src_lang:
        _check_language(tokenizer, params.src_lang, "src_lang")
        _check_language(tokenizer, params.tgt_lang or "", "tgt_lang")
        tokenizer.src_lang, tokenizer.tgt_lang = params.src_lang, params.tgt_lang
    return tokenizer


def load_model(source: str, params: Seq2SeqParams, tokenizer: Any, *, local_rank: int = 0) -> PreTrainedModel:
    """The base model, quantized and LoRA-wrapped as the params say, ready for the Trainer."""
    kwargs: dict[str, Any] = {"token": params.token_value()}
    if params.quantized:
        kwargs["quantization_config"] = _quantization_config(params.quantization)
        kwargs["device_map"] = {"": _local_device(local_rank)}
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise UserError(_not_found(source, "model", exc)) from None
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UserError(f"model {source} is not an encoder-decoder (seq2seq) model: {exc}") from None
        raise
    _fit_embeddings(model, tokenizer)
    if params.tgt_lang:
        # mBART-50: the decoder must start with the target language code (run_translation.py does the same).
        lang_id = tokenizer.convert_tokens_to_ids(params.tgt_lang)
        model.config.decoder_start_token_id = lang_id
        model.generation_config.forced_bos_token_id = lang_id
    if params.resolved_gradient_checkpointing and not params.quantized:  # quantized: prepare_model_for_kbit_training
        enable_checkpointing(model)
    if params.peft:
        model = _wrap_lora(model, params)
    return model


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Gradient (activation) checkpointing, non-reentrant: it works with frozen embeddings (LoRA) as well."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    log.info("Gradient checkpointing on: activations are recomputed in the backward pass")


def _wrap_lora(model: PreTrainedModel, params: Seq2SeqParams) -> PreTrainedModel:
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if params.quantized:
        checkpointing = params.resolved_gradient_checkpointing  # on by default, as peft expects for k-bit
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        )
        if checkpointing:
            log.info("Gradient checkpointing on (8/4-bit LoRA); --no-gradient-checkpointing turns it off")
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=params.target_module_list,
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"target_modules={params.target_modules} does not fit this model: {exc}") from None
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s of %s parameters trainable (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def _quantization_config(quantization: str) -> Any:
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            f"quantization={quantization} needs bitsandbytes: pip install 'seq2seq-job[bitsandbytes]', "
            "or set quantization=none"
        )
    _check_bitsandbytes_device(quantization)
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )


def _check_bitsandbytes_device(quantization: str) -> None:
    """bitsandbytes ≥ 0.45 serves CUDA and CPU; other devices (or an old build) get a clear error, not a crash."""
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # a broken native library raises all sorts of errors at import
        raise UserError(
            f"quantization={quantization}: bitsandbytes failed to load ({exc}); set quantization=none"
        ) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = getattr(bnb, "supported_torch_devices", None)
    if backends is not None and device not in backends:
        raise UserError(
            f"quantization={quantization}: the installed bitsandbytes {bnb.__version__} does not support "
            f"device {device} (it supports {', '.join(sorted(backends))}); set quantization=none"
        )


def _local_device(local_rank: int) -> str:
    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def _fit_embeddings(model: PreTrainedModel, tokenizer: Any) -> None:
    """Grow the embeddings if the tokenizer has more tokens than the model (added tokens)."""
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        log.info("Resizing token embeddings from %d to %d to fit the tokenizer", size, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))


def _check_language(tokenizer: Any, code: str, field: str) -> None:
    token_id = tokenizer.convert_tokens_to_ids(code)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UserError(f"{field}={code} is not a language code of this tokenizer (e.g. en_XX, de_DE for mBART-50)")


def _not_found(source: str, what: str, exc: Exception) -> str:
    local = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or local.exists():
        if not local.exists():
            return f"model {source} does not exist; give a local folder made by save_pretrained or a Hub id"
        return f"model folder {source} has no usable {what} files ({first_line(exc)})"
    return (
        f"could not load {what} for model={source} from the Hub ({first_line(exc)}); check the id, set token/"
        "HF_TOKEN for private models, or use a local folder (air-gapped: set HF_HUB_OFFLINE=1 with a warm cache)"
    )


def save_merged(adapter_dir: Path, out_dir: Path, *, base_model: str, params: Seq2SeqParams) -> None:
    """Reload the base model in full precision, merge the adapter into it and save a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    base = AutoModelForSeq2SeqLM.from_pretrained(base_model, token=params.token_value())
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if (adapter_dir / "generation_config.json").is_file():  # the run's generation settings, not the base's
        merged.generation_config = GenerationConfig.from_pretrained(str(adapter_dir))
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    log.info("Merged model written to %s", out_dir)
