"""The model, checked before any data is read: what transformers would otherwise accept and train wrong.

transformers loads a folder without tokenizer files by building an empty tokenizer (every word becomes
``<unk>``, and the job trains on that); a missing ``config.json`` or a truncated ``model.safetensors`` fails with
a traceback deep in the loader; a ``max_seq_length`` beyond a model's learned or sinusoidal position table
(BART, mBART, Marian, Pegasus: ``max_position_embeddings``) is an ``IndexError`` in the first forward pass. Each
of these is one line here, exit code 2:

* :func:`folder_problems` — a local model folder (also an ``s3://`` model once downloaded): config, weights
  (safetensors headers against the file sizes), tokenizer files, position limits.
* :func:`hub_problems` — a Hub id: the Hub must answer quickly (else "set HF_HUB_OFFLINE=1", instead of a
  minute of retries), the repo must exist and hold a config, weights and tokenizer files.
* :func:`tokenizer_problem` — after loading: a tokenizer that turns most of the training text into ``<unk>``.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# A tokenizer needs one of these (vocab.json only with merges.txt, as BPE, or with Marian's *.spm files).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "vocab.txt")
# Relative position biases: no hard limit on the sequence length (n_positions in old T5 configs is not one).
RELATIVE_POSITIONS = ("t5", "mt5", "umt5", "longt5", "switch_transformers")
HUB_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header is JSON describing the tensors: megabytes at most
UNK_SHARE_LIMIT = 0.5


def looks_local(model: str) -> bool:
    """A path rather than a Hub id: it exists, or is written as one (./x, /x, ~/x)."""
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def model_lengths(params: Any) -> dict[str, int]:
    """The token lengths a run asks of the model (checked against its position table)."""
    lengths = {"max_seq_length": params.max_seq_length, "max_target_length": params.max_target_length}
    if params.generation_max_length:
        lengths["generation_max_length"] = params.generation_max_length
    return lengths


# ------------------------------------------------------------------------------------------------ local folders
def folder_problems(folder: Path, *, lengths: Mapping[str, int], name: str | None = None) -> list[str]:
    """Why the model folder ``folder`` cannot train correctly ([] when it can); ``lengths`` are the token limits
    the run asks for (``max_seq_length=…``) to check against the model's position table."""
    shown = name or str(folder)
    if not folder.exists():
        return [f"model={shown}: no such folder; give a folder written by save_pretrained, an s3:// URI or a Hub id"]
    if not folder.is_dir():
        return [f"model={shown} is a file, not a model folder (one written by save_pretrained)"]
    files = {p.name for p in folder.iterdir()}
    if ADAPTER_CONFIG in files and CONFIG not in files:  # a LoRA adapter: its base model is checked on load
        weights = [] if files & set(ADAPTER_WEIGHTS) else [f"model folder {shown} has no adapter weights"]
        return weights + _tokenizer_files_problem(files, shown)
    config, problem = _read_config(folder / CONFIG, shown)
    problems = [problem] if problem else []
    problems += _weights_problems(folder, files, shown)
    problems += _tokenizer_files_problem(files, shown)
    if config is not None:
        problems += position_problems(config, lengths=lengths, name=shown)
    return problems


def _read_config(path: Path, shown: str) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, (
            f"model folder {shown} has no config.json, so it is not a model saved with save_pretrained "
            "(for a Trainer checkpoint, use its checkpoint-N folder)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"model folder {shown}: config.json is not valid JSON ({exc}); save the model again"
    if not isinstance(config, dict) or not config.get("model_type"):
        return None, f"model folder {shown}: config.json has no model_type, so transformers cannot tell the model"
    if not config.get("is_encoder_decoder"):
        return config, (
            f"model {shown} (model_type {config['model_type']}) is not an encoder-decoder (seq2seq) model; use T5, "
            "BART, mBART, Pegasus, Marian or another encoder-decoder"
        )
    return config, None


def _weights_problems(folder: Path, files: set[str], shown: str) -> list[str]:
    present = [name for name in WEIGHT_FILES if name in files]
    if not present:
        return [
            f"model folder {shown} has no weights ({', '.join(WEIGHT_FILES[:2])} or a sharded index); save the "
            "model with save_pretrained"
        ]
    name = present[0]
    if name.endswith(".index.json"):
        return _shards_problems(folder / name, shown)
    problem = weights_file_problem(folder / name)
    return [f"model folder {shown}: {name} {problem}; copy or save the model again"] if problem else []


def _shards_problems(index: Path, shown: str) -> list[str]:
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [f"model folder {shown}: {index.name} is not a valid shard index; save the model again"]
    problems = []
    for shard in shards:
        path = index.parent / shard
        problem = "is missing" if not path.is_file() else weights_file_problem(path)
        if problem:
            problems.append(f"model folder {shown}: shard {shard} {problem}; copy or save the model again")
    return problems


def weights_file_problem(path: Path) -> str | None:
    """Why a weights file cannot be loaded (None when it looks whole): safetensors header against the size."""
    size = path.stat().st_size
    if path.suffix == ".bin":
        if size == 0:
            return "is empty"
        return None if not zipfile.is_zipfile(path) or _zip_has_pickle(path) else "is a zip without a pickle"
    if size < 8:
        return f"is truncated ({size} bytes)"
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length < 2 or length > min(MAX_HEADER_BYTES, size - 8):
            return "is not a safetensors file (damaged, or another format saved under this name)"
        try:
            header = json.loads(handle.read(length))
            ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "has a damaged header (not a safetensors file)"
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        how = "truncated" if size < expected else "longer than its header says"
        return f"is {how}: {size} bytes, its header describes {expected}"
    return None


def _zip_has_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _tokenizer_files_problem(files: Iterable[str], shown: str) -> list[str]:
    names = set(files)
    if names & set(TOKENIZER_FILES) or any(n.endswith((".spm", ".model")) for n in names):
        return []
    if "vocab.json" in names and "merges.txt" in names:
        return []
    return [
        f"model folder {shown} has no tokenizer files (tokenizer.json, spiece.model, vocab.json + merges.txt, "
        "…): transformers would build an empty tokenizer that turns every word into <unk>; save the tokenizer "
        "into the folder (tokenizer.save_pretrained)"
    ]


def position_problems(config: Mapping[str, Any], *, lengths: Mapping[str, int], name: str) -> list[str]:
    """Lengths beyond the model's position table (absolute positions only)."""
    limit = config.get("max_position_embeddings")
    model_type = str(config.get("model_type", ""))
    if not isinstance(limit, int) or model_type in RELATIVE_POSITIONS:
        return []
    over = [f"{param}={value}" for param, value in lengths.items() if value > limit]
    if not over:
        return []
    return [
        f"{', '.join(over)} exceeds what model {name} can take: its position embeddings hold "
        f"max_position_embeddings={limit} tokens ({model_type}); set them to at most {limit}"
    ]


# -------------------------------------------------------------------------------------------------------- Hub
def hub_problems(model: str, *, token: str | None, endpoint: str | None = None) -> list[str]:
    """The Hub must answer, and ``model`` must be a repo with a config, weights and tokenizer files."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import get_session

    endpoint = endpoint or constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # httpx / requests connection errors: no retries, one line
        return [
            f"model={model}: cannot reach the Hub at {endpoint} ({type(exc).__name__}: {_first(exc)}); on a "
            "machine without internet set HF_HUB_OFFLINE=1 with the model in the cache (HF_HOME), or use a local "
            "folder or an s3:// model"
        ]
    try:
        files = HfApi(endpoint=endpoint).list_repo_files(model, token=token)
    except Exception as exc:
        kind = type(exc).__name__
        if kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "HFValidationError"):
            return [
                f"model={model}: no such model on the Hub, or it is private or gated ({kind}); check the id, and "
                "set HF_TOKEN for private models"
            ]
        log.warning("Could not list the files of %s on the Hub (%s: %s); loading it anyway", model, kind, _first(exc))
        return []
    names = {f.rsplit("/", 1)[-1] for f in files if "/" not in f}
    problems = [] if CONFIG in names or ADAPTER_CONFIG in names else [f"Hub model {model} has no config.json"]
    if not names & {*WEIGHT_FILES, *ADAPTER_WEIGHTS}:
        problems.append(f"Hub model {model} has no PyTorch weights (model.safetensors or pytorch_model.bin)")
    return problems + _tokenizer_files_problem(names, f"Hub model {model}")


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------- after loading
def tokenizer_problem(tokenizer: Any, texts: list[str], *, model: str) -> str | None:
    """A tokenizer that maps most of the training text to <unk> (an empty or wrong tokenizer) is refused."""
    unk = getattr(tokenizer, "unk_token_id", None)
    sample = [t for t in texts[:200] if t]
    if unk is None or not sample:
        return None
    ids = [i for row in tokenizer(sample, add_special_tokens=False)["input_ids"] for i in row]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    # word-boundary pieces ("▁" alone in sentencepiece, "Ġ" in byte-level BPE) carry no text: not counted
    counted = [i for i, piece in zip(ids, pieces, strict=True) if str(piece).strip("▁Ġ \t\n")]
    share = sum(1 for i in counted if i == unk) / max(1, len(counted))
    if share <= UNK_SHARE_LIMIT:
        return None
    return (
        f"the tokenizer of model {model} turns {share:.0%} of the training text into its unknown token "
        f"({tokenizer.unk_token}; vocabulary of {len(tokenizer)} tokens): it is empty or meant for another "
        "language; give a model folder with its own tokenizer files"
    )


def check_hub_model(params: Any, *, offline: bool) -> None:
    """Before the data: a Hub id must be reachable and hold a model (one line at once, not a minute of retries).

    When the Hub does not answer but the model is in the local cache, the run goes on with the cached copy.
    """
    from job.builtin_models import is_builtin
    from job.errors import UserError
    from job.storage.uris import is_remote

    model = params.model
    if offline or is_builtin(model) or is_remote(model) or looks_local(model):
        return
    problems = hub_problems(model, token=params.token_value())
    if problems and problems[0].startswith(f"model={model}: cannot reach the Hub") and _cached(model):
        log.warning("%s; using the copy of %s in the local cache", problems[0].split(";")[0], model)
        return
    if problems:
        raise UserError("invalid model: " + "; ".join(problems))


def _cached(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, CONFIG)
    return isinstance(found, str)


def check_model_source(source: str, params: Any, *, downloaded_from: str | None = None) -> None:
    """The folder a run loads from, once it is local (an s3:// model after download); a Hub id's position limit."""
    from job.builtin_models import is_builtin
    from job.errors import UserError

    if is_builtin(params.model):
        return
    if downloaded_from or looks_local(source):
        problems = folder_problems(Path(source), lengths=model_lengths(params), name=downloaded_from or source)
    else:
        problems = _hub_position_problems(source, params, lengths=model_lengths(params))
    if problems:
        raise UserError("invalid model: " + "; ".join(problems))


def _hub_position_problems(model: str, params: Any, *, lengths: Mapping[str, int]) -> list[str]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, token=params.token_value()).to_dict()
    except (OSError, ValueError):
        return []  # the model load that follows reports it with its own message
    return position_problems(config, lengths=lengths, name=model)


def check_tokenizer(tokenizer: Any, data: Any, *, model: str) -> None:
    from job.data import SOURCE, TARGET
    from job.errors import UserError

    texts = [*data.train[SOURCE][:100], *data.train[TARGET][:100]]
    if problem := tokenizer_problem(tokenizer, texts, model=model):
        raise UserError(problem)
