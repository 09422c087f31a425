"""Load and check the training/validation splits.

:func:`load_data` turns ``data_path`` plus two split expressions into a :class:`DataBundle` whose datasets
have exactly two string columns, :data:`SOURCE` and :data:`TARGET`. ``data_path`` may be

1. a data file (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``): it holds one split, the one named
   by ``train_split``; a validation split can only be a slice of that same split
   (``train_split="train[:90%]"``, ``valid_split="train[90%:]"``);
2. a folder of ``{split}.csv|tsv|jsonl|json|parquet`` files (``train.csv``, ``validation.csv``);
3. a folder written by ``Dataset.save_to_disk`` (the train split) or ``DatasetDict.save_to_disk``;
4. otherwise a Hugging Face Hub dataset id, optionally ``name:config`` (``cnn_dailymail:3.0.0``).

Split expressions are ``name`` or ``name[start:end]`` with non-negative ints or percents (``train[:5000]``,
``train[10:20]``, ``train[90%:]``). They are parsed here and applied with ``Dataset.select`` after the base
split is loaded, so they behave the same for every kind of source.

Checks, per split: the two columns exist; their values are text (ints, floats and bools are converted with
``str()``, ClassLabel ids become their names, lists/dicts/other types are refused); rows whose text or target
is null, empty or whitespace-only are dropped and counted; ``max_samples`` keeps the first rows that remain.
Every mistake the user can fix raises :class:`~job.errors.UserError` with one line naming the culprit.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from job.errors import UserError, exception_chain

logger = logging.getLogger(__name__)

SOURCE = "source"
TARGET = "target"

DATA_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_EXTENSIONS_TEXT = "/".join(DATA_EXTENSIONS)
_LOCAL_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")
_TMP_SOURCE = "__job_data_source__"
_TMP_TARGET = "__job_data_target__"
_BATCH = 10_000
_REASON_MAX = 300

_SPLIT_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*"
    r"(?:\[\s*(?P<start>[^:\]\s]*)\s*:\s*(?P<end>[^:\]\s]*)\s*\])?\s*$"
)
_BOUND_RE = re.compile(r"^(?:(?P<int>\d+)|(?P<pct>\d+(?:\.\d+)?)%)$")


# --------------------------------------------------------------------------------------------------- results
@dataclass
class SplitReport:
    """What happened to one split between reading and training."""

    name: str  # the split expression as given, e.g. "train[:5000]"
    rows_read: int  # rows selected by the split expression
    dropped_empty: int  # rows whose text or target was null/empty/whitespace
    rows: int  # rows kept (after max_samples)


@dataclass
class DataBundle:
    """The checked splits: each dataset has exactly the columns ``SOURCE`` and ``TARGET``, both str."""

    train: datasets.Dataset
    valid: datasets.Dataset | None
    reports: dict[str, SplitReport]  # keys "train" and (when a validation split was asked for) "validation"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able summary for metrics.json: one entry per split (``None`` when absent)."""
        return {
            "train": asdict(self.reports["train"]),
            "validation": asdict(self.reports["validation"]) if "validation" in self.reports else None,
        }


# ------------------------------------------------------------------------------------------ split expressions
@dataclass(frozen=True)
class _Bound:
    value: float
    percent: bool

    def resolve(self, n: int) -> int:
        if self.percent:
            return min(n, int(self.value * n / 100 + 0.5))
        return min(n, int(self.value))


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split expression ``name[start:end]``."""

    expr: str
    base: str
    start: _Bound | None = None
    end: _Bound | None = None

    @property
    def is_whole(self) -> bool:
        """Whether the expression selects the whole base split."""
        return self.start is None and self.end is None

    def bounds(self, n: int) -> tuple[int, int]:
        """Return ``(start, end)`` row indices for a base split of ``n`` rows (clamped like Python slices)."""
        start = self.start.resolve(n) if self.start else 0
        end = self.end.resolve(n) if self.end else n
        return start, end


def parse_split(expr: str, param: str) -> SplitSpec:
    """Parse ``train``, ``train[:5000]``, ``train[10:20]``, ``train[90%:]``…; a bad one is a UserError."""
    example = "use 'train', 'train[:5000]', 'train[10:20]', 'train[:90%]' or 'train[90%:]'"
    if not isinstance(expr, str):
        raise UserError(f"{param}={expr!r} is not a split expression; {example}")
    match = _SPLIT_RE.match(expr)
    if not match:
        raise UserError(f"{param}={expr!r} is not a valid split expression; {example}")
    bounds: list[_Bound | None] = []
    for key in ("start", "end"):
        text = match.group(key)
        if not text:
            bounds.append(None)
            continue
        bound = _BOUND_RE.match(text)
        if not bound:
            raise UserError(
                f"{param}={expr!r}: slice bound {text!r} must be a non-negative integer or a percent "
                f"like 90%; {example}"
            )
        if bound.group("int") is not None:
            bounds.append(_Bound(float(bound.group("int")), percent=False))
        else:
            pct = float(bound.group("pct"))
            if pct > 100:
                raise UserError(f"{param}={expr!r}: percent {text!r} is above 100%")
            bounds.append(_Bound(pct, percent=True))
    start, end = bounds
    if start and end and start.percent == end.percent and start.value >= end.value:
        raise UserError(f"{param}={expr!r} selects no rows: the slice start must be below its end")
    return SplitSpec(expr=expr, base=match.group("name"), start=start, end=end)


# ----------------------------------------------------------------------------------------------- diagnostics
def _short(exc: BaseException, *, innermost: bool = True) -> str:
    """One short line describing ``exc``: its innermost (or outermost) cause that has a message."""
    chain = exception_chain(exc)
    for err in reversed(chain) if innermost else chain:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if lines:
            text = lines[0]
            if len(text) > _REASON_MAX:
                text = text[: _REASON_MAX - 3] + "..."
            return f"{type(err).__name__}: {text}"
    return type(exc).__name__


def _first_invalid_utf8(path: Path) -> tuple[int, int] | None:
    """Return ``(line, byte_offset)`` (1-based line, 0-based offset) of the first invalid UTF-8 byte."""
    offset = 0
    with path.open("rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return lineno, offset + err.start
            offset += len(line)
    return None


def _utf8_error(path: Path | None, where: str) -> UserError:
    """The UserError for text that is not valid UTF-8 (with line and byte offset when ``path`` is a file)."""
    bad = _first_invalid_utf8(path) if path is not None and path.suffix.lower() != ".parquet" else None
    if bad is None:
        return UserError(f"{where} holds text that is not valid UTF-8; the data must be UTF-8: re-save it")
    line, offset = bad
    return UserError(
        f"data file '{path}' is not valid UTF-8 (first bad byte at line {line}, byte offset {offset}); "
        "the file must be UTF-8: re-save it as UTF-8"
    )


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _scan_json_lines(path: Path) -> str | None:
    """Describe the first line of a JSON Lines file that is not a JSON object, or ``None``."""
    with path.open(encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                return f"line {lineno} is not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(value, dict):
                return (
                    f"line {lineno} is a JSON {_json_type(value)}, but every line must be one JSON object "
                    'like {"text": ..., "target": ...}'
                )
    return None


def _scan_json_document(path: Path) -> str | None:
    """Describe what is wrong with a ``.json`` file (a list of objects, or JSON Lines), or ``None``."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            value = json.load(handle)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # more than one document: JSON Lines in a .json file
            return _scan_json_lines(path)
        return f"line {err.lineno} is not valid JSON ({err.msg} at column {err.colno})"
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return f"item {index} of the top-level list is a JSON {_json_type(item)}, not an object"
        return None
    if not isinstance(value, dict):
        return f"the file holds a JSON {_json_type(value)}; it must be a list of objects or JSON Lines"
    return None


def _file_error(path: Path, exc: BaseException) -> UserError | None:
    """Turn a failure to read data file ``path`` into a UserError (``None``: not the data's fault)."""
    ext = path.suffix.lower()
    chain = exception_chain(exc)
    if any(
        isinstance(err, (pd.errors.EmptyDataError, StopIteration))
        or (isinstance(err, ValueError) and "corresponds to no data" in str(err))
        for err in chain
    ):
        return UserError(f"data file '{path}' has no rows; add rows below the header (or JSON objects)")
    system = next((err for err in chain if isinstance(err, MemoryError) or _is_system_error(err)), None)
    if system is not None:
        if isinstance(system, OSError) and system.filename and Path(system.filename) == path:
            return UserError(f"cannot read data file '{path}': {system.strerror}; check its permissions")
        return None  # disk, cache folder or memory trouble: not something the data can fix, let it through
    if ext != ".parquet" and _first_invalid_utf8(path) is not None:
        return _utf8_error(path, f"data file '{path}'")
    if ext in (".csv", ".tsv"):
        kind = ext[1:].upper()
        parser = next((err for err in chain if isinstance(err, (pd.errors.ParserError, csv.Error))), None)
        if parser is not None:
            reason = " ".join(str(parser).split()).replace("Error tokenizing data. C error: ", "")
            eof = re.search(r"EOF inside string starting at row (\d+)", reason)
            if eof:  # pandas counts rows from 0 (the header); people count lines from 1
                reason = f'a quoted field opened near line {int(eof.group(1)) + 1} is never closed (missing ")'
            delimiter = "commas" if ext == ".csv" else "tabs"
            return UserError(
                f"data file '{path}' is not a valid {kind} file: {reason}; fix that line (quote fields that "
                f"contain {delimiter}, quotes or newlines, and give every row the header's number of fields)"
            )
    elif ext in (".jsonl", ".json"):
        problem = _scan_json_lines(path) if ext == ".jsonl" else _scan_json_document(path)
        if problem is not None:
            return UserError(f"data file '{path}': {problem}; fix the file")
    if ext == ".parquet":
        return UserError(f"data file '{path}' is not a valid Parquet file ({_short(exc)}); re-export it")
    return UserError(f"could not read data file '{path}': {_short(exc)}")


def _is_system_error(err: BaseException) -> bool:
    """An error of the operating system (it carries an errno), not pyarrow's OSError for corrupt data."""
    return isinstance(err, OSError) and err.errno is not None


# -------------------------------------------------------------------------------------------------- sources
def _looks_local(data_path: str) -> bool:
    """Whether ``data_path`` is clearly meant as a local path (never a Hub id)."""
    return (
        data_path in (".", "..")
        or data_path.startswith(_LOCAL_PREFIXES)
        or Path(data_path).suffix.lower() in DATA_EXTENSIONS
    )


def _missing_path_error(data_path: str, path: Path) -> UserError:
    hint = ""
    parent = path.parent
    if parent.is_dir():
        found = sorted(p.name for p in parent.iterdir() if p.suffix.lower() in DATA_EXTENSIONS)
        if found:
            shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
            hint = f" (data files in '{parent}': {shown})"
        else:
            hint = f" (folder '{parent}' exists but holds no {_EXTENSIONS_TEXT} files)"
    else:
        hint = f" (folder '{parent}' does not exist either)"
    return UserError(f"data_path '{data_path}': file not found at '{path}'{hint}; check the path")


def _csv_header(path: Path, sep: str) -> list[str] | None:
    """The header row of a CSV/TSV file as pandas will name it, or ``None`` if there is no row at all."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle, delimiter=sep):
            if any(cell.strip() for cell in row):
                return [cell if cell else f"Unnamed: {index}" for index, cell in enumerate(row)]
    return None


@contextlib.contextmanager
def _no_download_count() -> Iterator[None]:
    """Stop ``load_dataset("csv"|"json"|"parquet")`` from pinging the Hub to count the load.

    datasets 5.2 sends a HEAD request (3 s timeout, errors ignored) on every packaged-builder load, even of
    local files; without network, resolving the host name alone can stall each load for seconds.
    """
    saved = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def _read_file(path: Path, *, cache_dir: str | None, num_proc: int | None) -> datasets.Dataset:
    """Read one data file with the ``datasets`` builders; any data mistake becomes a UserError."""
    ext = path.suffix.lower()
    if ext not in DATA_EXTENSIONS:
        raise UserError(
            f"data file '{path}' has unsupported extension '{path.suffix}'; use one of {', '.join(DATA_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"data file '{path}' is empty (0 bytes): it has no rows")
    try:
        kwargs: dict[str, Any] = {}
        if ext in (".csv", ".tsv"):
            builder = "csv"
            sep = "," if ext == ".csv" else "\t"
            header = _csv_header(path, sep)
            if header is None:
                raise UserError(f"data file '{path}' has no rows (only blank lines)")
            # Read every column as text: no "001" -> 1, no "NA"/"None"/"null" -> missing, no "True" -> bool.
            kwargs = {"sep": sep, "keep_default_na": False}
            if len(set(header)) == len(header):
                kwargs["features"] = datasets.Features({name: datasets.Value("string") for name in header})
        elif ext == ".parquet":
            builder = "parquet"
        else:
            builder = "json"
        with _no_download_count():
            dataset = datasets.load_dataset(
                builder,
                data_files={"train": str(path)},
                split="train",
                cache_dir=cache_dir,
                num_proc=num_proc,
                **kwargs,
            )
    except UserError:
        raise
    except Exception as exc:  # classified below; infrastructure errors re-raised
        error = _file_error(path, exc)
        if error is None:
            raise
        raise error from exc
    if not isinstance(dataset, datasets.Dataset):  # pragma: no cover - split= always gives a Dataset
        raise TypeError(f"expected a Dataset from {path}, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise UserError(f"data file '{path}' has no rows")
    return dataset


class _Source:
    """Where the splits come from; loads (and caches) base splits by name."""

    def __init__(
        self,
        data_path: str,
        *,
        token: str | None,
        cache_dir: str | None,
        num_proc: int | None,
    ) -> None:
        self.data_path = data_path
        self.token = token
        self.cache_dir = cache_dir
        self.num_proc = num_proc
        self.kind: str  # "file", "folder", "disk", "disk_dict" or "hub"
        self.path: Path | None = None
        self.files: dict[str, list[Path]] = {}
        self.disk_dict: datasets.DatasetDict | None = None
        self.hub_name = ""
        self.hub_config: str | None = None
        self._loaded: dict[str, datasets.Dataset] = {}
        self._resolve()

    # ------------------------------------------------------------------ resolution
    def _resolve(self) -> None:
        data_path = self.data_path
        if not isinstance(data_path, str) or not data_path.strip():
            raise UserError("data_path is empty; give a data file, a folder or a Hugging Face Hub dataset id")
        if "://" in data_path:
            raise UserError(
                f"data_path '{data_path}' is a URI; load_data reads local files, folders and Hub dataset "
                "ids: pass s3:// and gs:// through job.storage.localize first (train() does), download any "
                "other URI and pass the local path"
            )
        path = Path(os.path.expanduser(data_path)).absolute()
        if path.is_file():
            self.kind, self.path = "file", path
        elif path.is_dir():
            self.path = path
            self._resolve_folder(path)
        elif _looks_local(data_path):
            raise _missing_path_error(data_path, path)
        else:
            self.kind = "hub"
            name, _, config = data_path.partition(":")
            self.hub_name, self.hub_config = name.strip(), (config.strip() or None)

    def _resolve_folder(self, path: Path) -> None:
        if (path / "dataset_dict.json").is_file():
            self.kind = "disk_dict"
            self.disk_dict = self._load_disk(path, datasets.DatasetDict)
            return
        if (path / "state.json").is_file():
            self.kind = "disk"
            return
        self.kind = "folder"
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in DATA_EXTENSIONS:
                self.files.setdefault(child.name[: -len(child.suffix)], []).append(child)
        if not self.files:
            raise UserError(
                f"data_path folder '{path}' holds no {{split}}{_EXTENSIONS_TEXT} files (e.g. train.csv, "
                "validation.csv) and was not written by save_to_disk (no dataset_dict.json or state.json)"
            )

    def _load_disk(self, path: Path, expected: type) -> Any:
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # a broken save_to_disk folder is the user's to fix
            raise UserError(
                f"data_path folder '{path}' looks written by save_to_disk but could not be loaded "
                f"({_short(exc)}); save it again"
            ) from exc
        if not isinstance(loaded, expected):
            found = type(loaded).__name__
            raise UserError(f"data_path folder '{path}' holds a {found}, not a {expected.__name__}")
        return loaded

    # ------------------------------------------------------------------ facts
    @property
    def single_split(self) -> bool:
        """Whether the source holds exactly one split (a data file or a saved plain Dataset)."""
        return self.kind in ("file", "disk")

    def describe(self, base: str) -> str:
        """Where split ``base`` lives, for messages."""
        if self.kind == "file":
            return f"data file '{self.path}'"
        if self.kind == "folder":
            files = self.files.get(base)
            return f"data file '{files[0]}'" if files else f"folder '{self.path}'"
        if self.kind == "disk":
            return f"saved dataset '{self.path}'"
        if self.kind == "disk_dict":
            return f"split '{base}' of saved dataset '{self.path}'"
        config = f" (config '{self.hub_config}')" if self.hub_config else ""
        return f"split '{base}' of Hub dataset '{self.hub_name}'{config}"

    def file_for(self, base: str) -> Path | None:
        """The data file holding split ``base``, if it is a file."""
        if self.kind == "file":
            return self.path
        files = self.files.get(base) if self.kind == "folder" else None
        return files[0] if files else None

    # ------------------------------------------------------------------ loading
    def load(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        """Load the whole base split ``base`` (asked for by ``param=expr``)."""
        if base not in self._loaded:
            self._loaded[base] = self._load(base, param=param, expr=expr)
        return self._loaded[base]

    def _load(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        if self.kind == "file" and self.path is not None:
            return _read_file(self.path, cache_dir=self.cache_dir, num_proc=self.num_proc)
        if self.kind == "folder":
            files = self.files.get(base)
            if not files:
                found = ", ".join(sorted(self.files))
                raise UserError(
                    f"data_path folder '{self.path}' has no file for split '{base}' ({param}={expr!r}); "
                    f"splits found: {found}. Add {base}.csv (or .tsv/.jsonl/.json/.parquet) or set "
                    f"{param} to one of them"
                )
            if len(files) > 1:
                names = ", ".join(f.name for f in files)
                raise UserError(
                    f"data_path folder '{self.path}' has several files for split '{base}' ({names}); keep one"
                )
            return _read_file(files[0], cache_dir=self.cache_dir, num_proc=self.num_proc)
        if self.kind == "disk" and self.path is not None:
            return self._load_disk(self.path, datasets.Dataset)
        if self.kind == "disk_dict" and self.disk_dict is not None:
            if base not in self.disk_dict:
                found = ", ".join(sorted(self.disk_dict))
                raise UserError(
                    f"saved dataset '{self.path}' has no split '{base}' ({param}={expr!r}); splits found: "
                    f"{found}. Set {param} to one of them"
                )
            return self.disk_dict[base]
        return self._load_hub(base, param=param, expr=expr)

    def _load_hub(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        try:
            loaded = datasets.load_dataset(
                self.hub_name,
                self.hub_config,
                split=base,
                token=self.token,
                cache_dir=self.cache_dir,
                num_proc=self.num_proc,
            )
        except Exception as exc:  # every Hub failure is reported as a UserError
            if isinstance(exc, ValueError) and "Unknown split" in str(exc):
                raise UserError(
                    f"Hub dataset '{self.data_path}' has no split '{base}' ({param}={expr!r}): "
                    f"{_short(exc, innermost=False)}"
                ) from exc
            raise UserError(
                f"data_path '{self.data_path}' does not exist locally (relative paths start at {Path.cwd()}) and "
                f"the Hub dataset could not be loaded: {_short(exc, innermost=False)}"
            ) from exc
        if not isinstance(loaded, datasets.Dataset):
            raise UserError(
                f"Hub dataset '{self.data_path}' split '{base}' gave a {type(loaded).__name__}, not a Dataset"
            )
        return loaded


# ---------------------------------------------------------------------------------------- column checks
_NUMERIC_DTYPES = ("bool", "int", "uint", "float", "double")


def _column_kind(feature: object) -> str:
    """``string`` (nothing to do), ``scalar`` (str() every value), ``label`` (ClassLabel) or ``mixed``."""
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string"):
            return "string"
        if feature.dtype.startswith(_NUMERIC_DTYPES) or feature.dtype == "null":
            return "scalar"
    if isinstance(feature, datasets.ClassLabel):
        return "label"
    return "mixed"


def _to_text_batch(batch: dict[str, list[Any]], columns: list[str], labels: dict[str, list[str]]) -> dict:
    """``map`` function: make the values of ``columns`` str (None stays None)."""
    out: dict[str, list[Any]] = {}
    for column in columns:
        names = labels.get(column)
        values = batch[column]
        if names is not None:
            out[column] = [None if v is None or v < 0 else names[v] for v in values]
        else:
            out[column] = [v if v is None or isinstance(v, str) else str(v) for v in values]
    return out


def _check_values(dataset: datasets.Dataset, column: str, param: str, spec: SplitSpec, where: str, offset: int) -> None:
    """Raise a UserError at the first value of ``column`` that is not None/str/int/float/bool."""
    index = 0
    for batch in dataset.select_columns([column]).iter(batch_size=1000):
        for value in batch[column]:
            if value is not None and not isinstance(value, (str, int, float, bool)):
                base = f", row {offset + index} of split '{spec.base}'" if offset else ""
                raise UserError(
                    f"column '{column}' ({param}) of split '{spec.expr}' in {where} holds a "
                    f"{type(value).__name__} at row {index} (0-based{base}): {_preview(value)}; "
                    f"{param} must name a text column (strings; numbers are converted)"
                )
            index += 1


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _nonempty(dataset: datasets.Dataset, columns: list[str]) -> np.ndarray:
    """Indices of the rows whose ``columns`` are all non-null and not empty/whitespace-only."""
    keep: list[np.ndarray] = []
    offset = 0
    for table in dataset.with_format("arrow").iter(batch_size=_BATCH):
        mask: Any = None
        for column in columns:
            values = table[column]
            ok = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0), False)
            mask = ok if mask is None else pc.and_(mask, ok)
        flags = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
        keep.append(np.flatnonzero(flags) + offset)
        offset += table.num_rows
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def _as_text(
    dataset: datasets.Dataset, source: _Source, spec: SplitSpec, *, role: str, where: str, offset: int
) -> datasets.Dataset:
    """Make both columns str: numbers and bools are converted, anything else is refused."""
    columns = dataset.column_names
    convert: list[str] = []
    labels: dict[str, list[str]] = {}
    for column, column_param in zip(columns, ("text_column", "target_column"), strict=True):
        feature = dataset.features[column]
        kind = _column_kind(feature)
        if kind == "string":
            continue
        if kind == "mixed":
            _check_values(dataset, column, column_param, spec, where, offset)
        if kind == "label":
            labels[column] = list(feature.names)
        convert.append(column)
    if convert:
        logger.info("%s split %r: converting column(s) %s to text", role, spec.expr, ", ".join(convert))
        features = dataset.features.copy()
        for column in convert:
            features[column] = datasets.Value("string")
        dataset = dataset.map(
            _to_text_batch,
            batched=True,
            fn_kwargs={"columns": convert, "labels": labels},
            features=features,
            keep_in_memory=source.kind in ("disk", "disk_dict"),  # no cache files in the user's folder
            num_proc=source.num_proc,
            desc=f"Converting {role} columns to text",
        )
    return dataset


def _prepare(
    source: _Source,
    spec: SplitSpec,
    *,
    param: str,
    role: str,
    text_column: str,
    target_column: str,
    max_samples: int | None,
) -> tuple[datasets.Dataset, SplitReport, tuple[int, int]]:
    """Load, slice, check and trim one split; return it with its report and its row range in the base."""
    base = source.load(spec.base, param=param, expr=spec.expr)
    where = source.describe(spec.base)
    start, end = spec.bounds(len(base))
    if end <= start:
        raise UserError(f"{param}={spec.expr!r} selects no rows: split '{spec.base}' in {where} has {len(base)} rows")
    dataset = base if (start, end) == (0, len(base)) else base.select(range(start, end))
    rows_read = len(dataset)

    for column, column_param in ((text_column, "text_column"), (target_column, "target_column")):
        if column not in dataset.column_names:
            existing = ", ".join(repr(c) for c in dataset.column_names)
            raise UserError(
                f"column '{column}' ({column_param}) not found in {where}; columns are: {existing}. "
                f"Set {column_param} to one of them"
            )
    columns = [text_column, target_column]
    dataset = dataset.select_columns(columns)

    try:
        dataset = _as_text(dataset, source, spec, role=role, where=where, offset=start)
        # Null / empty / whitespace-only rows are dropped.
        keep = _nonempty(dataset, columns)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if "utf" not in str(exc).lower():
            raise
        raise _utf8_error(source.file_for(spec.base), where) from exc
    dropped = rows_read - len(keep)
    if dropped:
        mismatch = np.flatnonzero(keep != np.arange(len(keep)))
        first = int(mismatch[0]) if len(mismatch) else len(keep)  # the first dropped row
        logger.warning(
            "%s split %r in %s: dropped %d of %d rows whose '%s' or '%s' is null, empty or whitespace-only "
            "(first: row %d)",
            role,
            spec.expr,
            where,
            dropped,
            rows_read,
            text_column,
            target_column,
            first,
        )
        if len(keep) == 0:
            raise UserError(
                f"all {rows_read} rows of split '{spec.expr}' in {where} have a null, empty or "
                f"whitespace-only '{text_column}' (text_column) or '{target_column}' (target_column); "
                "no rows remain: fix the data or the column parameters"
            )
        dataset = dataset.select(keep, keep_in_memory=True)  # an in-memory index: no cache files written

    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))

    # Rename through temporary names: text_column may be "target" and target_column "text".
    dataset = dataset.rename_columns({text_column: _TMP_SOURCE, target_column: _TMP_TARGET})
    dataset = dataset.rename_columns({_TMP_SOURCE: SOURCE, _TMP_TARGET: TARGET})
    report = SplitReport(name=spec.expr, rows_read=rows_read, dropped_empty=dropped, rows=len(dataset))
    logger.info(
        "Loaded %s split %r from %s: %d rows read, %d dropped (empty), %d kept",
        role,
        spec.expr,
        where,
        report.rows_read,
        report.dropped_empty,
        report.rows,
    )
    return dataset, report, (start, end)


# ------------------------------------------------------------------------------------------------------ API
def load_data(
    *,
    data_path: str,
    train_split: str = "train",
    valid_split: str | None = None,
    text_column: str = "text",
    target_column: str = "target",
    max_samples: int | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> DataBundle:
    """Load, check and trim the training (and optional validation) split.

    Args:
        data_path: a data file, a folder of ``{split}.<ext>`` files, a ``save_to_disk`` folder, or a Hub
            dataset id (``name`` or ``name:config``).
        train_split: split expression for training, e.g. ``train`` or ``train[:90%]``.
        valid_split: split expression for validation, or ``None`` for no validation split.
        text_column: the input text column.
        target_column: the target text column.
        max_samples: keep at most this many rows of each split (the first ones, after dropping empty rows).
        token: Hugging Face token for private Hub datasets.
        cache_dir: the ``datasets`` cache folder.
        num_proc: processes for reading/converting.

    Returns:
        A :class:`DataBundle` whose datasets have exactly the columns ``SOURCE`` and ``TARGET`` (str).

    Raises:
        UserError: for any mistake in the parameters or the data; the message is one line.
    """
    train_spec = parse_split(train_split, "train_split")
    valid_spec = parse_split(valid_split, "valid_split") if valid_split is not None else None
    for value, param in ((text_column, "text_column"), (target_column, "target_column")):
        if not isinstance(value, str) or not value:
            raise UserError(f"{param} must be a non-empty column name, got {value!r}")
    if text_column == target_column:
        raise UserError(f"text_column and target_column are both '{text_column}'; they must name two different columns")
    bad_max = isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    if max_samples is not None and bad_max:
        raise UserError(f"max_samples must be a positive integer or unset, got {max_samples!r}")
    if num_proc is not None and num_proc < 1:
        raise UserError(f"num_proc must be a positive integer or unset, got {num_proc!r}")

    source = _Source(data_path, token=token, cache_dir=cache_dir, num_proc=num_proc)
    if source.single_split and valid_spec is not None and valid_spec.base != train_spec.base:
        raise UserError(
            f"data_path '{data_path}' is a single {'file' if source.kind == 'file' else 'saved Dataset'} and "
            f"holds only one split, so valid_split={valid_split!r} cannot be found; use a folder with "
            f"{{split}}.csv files (e.g. train.csv and validation.csv), or slice the same split "
            f"(train_split='{train_spec.base}[:90%]', valid_split='{train_spec.base}[90%:]')"
        )

    options = {"text_column": text_column, "target_column": target_column, "max_samples": max_samples}
    train, train_report, train_range = _prepare(source, train_spec, param="train_split", role="train", **options)
    reports = {"train": train_report}
    valid = None
    if valid_spec is not None:
        valid, valid_report, valid_range = _prepare(
            source, valid_spec, param="valid_split", role="validation", **options
        )
        reports["validation"] = valid_report
        if valid_spec.base == train_spec.base:
            low, high = max(train_range[0], valid_range[0]), min(train_range[1], valid_range[1])
            if low < high:
                logger.warning(
                    "train_split %r and valid_split %r overlap in %d rows (%d to %d of split '%s'): "
                    "validation scores will look better than they are",
                    train_split,
                    valid_split,
                    high - low,
                    low,
                    high - 1,
                    train_spec.base,
                )
    return DataBundle(train=train, valid=valid, reports=reports)
