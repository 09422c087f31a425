"""Column checks and coercion: make the two columns of a split text, and find the rows worth keeping.

Values are text already (nothing to do), or ints/floats/bools (converted with ``str()``), or ClassLabel ids
(they become their names); lists, dicts and other types are refused at the first such value, named by column
and row. Rows whose text or target is null (float NaN counts as null), empty or whitespace-only are found by
:func:`nonempty`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from job.data.splits import SplitSpec
from job.errors import UserError

logger = logging.getLogger("job.data")  # the package's name: log lines read "job.data: ..." wherever they come from

_NUMERIC_DTYPES = ("bool", "int", "uint", "float", "double")
_BATCH = 10_000
_COLUMN_PARAMS = ("text_column", "target_column")  # the parameter that named each of the two columns


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


def _to_text_batch(
    batch: dict[str, list[Any]], columns: list[str], labels: dict[str, list[str]], rules: int = 2
) -> dict:
    """``map`` function: make the values of ``columns`` str (None and NaN become None).

    ``rules`` is part of the datasets cache fingerprint: bump it when the conversion changes (2: NaN is missing),
    so a cache written by an older version is not reused.
    """
    out: dict[str, list[Any]] = {}
    for column in columns:
        names = labels.get(column)
        values = batch[column]
        if names is not None:
            out[column] = [None if v is None or v < 0 else names[v] for v in values]
        else:
            out[column] = [_scalar_text(v) for v in values]
    return out


def _scalar_text(value: Any) -> str | None:
    """A value as text; None and float NaN (Parquet NaN, JSON ``NaN``) are missing, not the word "nan"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _check_values(
    dataset: datasets.Dataset, column: str, *, param: str, spec: SplitSpec, where: str, offset: int
) -> None:
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


def nonempty(dataset: datasets.Dataset, columns: list[str]) -> np.ndarray:
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


def _to_convert(
    dataset: datasets.Dataset, spec: SplitSpec, *, where: str, offset: int
) -> tuple[list[str], dict[str, list[str]]]:
    """The columns to convert to text and the ClassLabel names among them; refuses values that are not scalars."""
    convert: list[str] = []
    labels: dict[str, list[str]] = {}
    for column, column_param in zip(dataset.column_names, _COLUMN_PARAMS, strict=True):
        feature = dataset.features[column]
        kind = _column_kind(feature)
        if kind == "string":
            continue
        if kind == "mixed":
            _check_values(dataset, column, param=column_param, spec=spec, where=where, offset=offset)
        if kind == "label":
            labels[column] = list(feature.names)
        convert.append(column)
    return convert, labels


def as_text(
    dataset: datasets.Dataset,
    spec: SplitSpec,
    *,
    role: str,
    where: str,
    offset: int,
    keep_in_memory: bool,
    num_proc: int | None,
) -> datasets.Dataset:
    """Make both columns (text first, then target) str: numbers and bools are converted, anything else is refused.

    ``offset`` is the row of the base split where ``dataset`` starts (for messages); ``keep_in_memory`` keeps
    the converted columns out of cache files (for data in the user's own folder).
    """
    convert, labels = _to_convert(dataset, spec, where=where, offset=offset)
    if not convert:
        return dataset
    logger.info("%s split %r: converting column(s) %s to text", role, spec.expr, ", ".join(convert))
    features = dataset.features.copy()
    for column in convert:
        features[column] = datasets.Value("string")
    return dataset.map(
        _to_text_batch,
        batched=True,
        fn_kwargs={"columns": convert, "labels": labels, "rules": 2},
        features=features,
        keep_in_memory=keep_in_memory,
        num_proc=num_proc,
        desc=f"Converting {role} columns to text",
    )
