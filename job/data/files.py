"""Read one data file (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``) with the ``datasets`` builders.

CSV/TSV columns are read as text ("001" stays "001", "NA" stays "NA"); any mistake in the file becomes a
one-line :class:`~job.errors.UserError` (:func:`job.data.diagnostics.file_error` words it).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from job.data.diagnostics import file_error
from job.data.formats import DATA_EXTENSIONS
from job.errors import UserError


def read_file(path: Path, *, cache_dir: str | None, num_proc: int | None) -> datasets.Dataset:
    """Read one data file with the ``datasets`` builders; any data mistake becomes a UserError."""
    ext = path.suffix.lower()
    if ext not in DATA_EXTENSIONS:
        raise UserError(
            f"data file '{path}' has unsupported extension '{path.suffix}'; use one of {', '.join(DATA_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"data file '{path}' is empty (0 bytes): it has no rows")
    try:
        builder, kwargs = _builder(path)
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
        error = file_error(path, exc)
        if error is None:
            raise
        raise error from exc
    if not isinstance(dataset, datasets.Dataset):  # pragma: no cover - split= always gives a Dataset
        raise TypeError(f"expected a Dataset from {path}, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise UserError(f"data file '{path}' has no rows")
    return dataset


def _builder(path: Path) -> tuple[str, dict[str, Any]]:
    """The packaged ``datasets`` builder for ``path`` and its options."""
    ext = path.suffix.lower()
    if ext == ".parquet":
        return "parquet", {}
    if ext not in (".csv", ".tsv"):
        return "json", {}
    sep = "," if ext == ".csv" else "\t"
    header = _csv_header(path, sep)
    if header is None:
        raise UserError(f"data file '{path}' has no rows (only blank lines)")
    _refuse_duplicates(path, header)
    # Read every column as text: no "001" -> 1, no "NA"/"None"/"null" -> missing, no "True" -> bool.
    kwargs: dict[str, Any] = {"sep": sep, "keep_default_na": False}
    kwargs["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    return "csv", kwargs


def _refuse_duplicates(path: Path, header: list[str]) -> None:
    """Two columns of one name: the reader would rename the second ('target.1') and it would be ignored."""
    seen: dict[str, list[int]] = {}
    for index, name in enumerate(header, start=1):
        seen.setdefault(name, []).append(index)
    twice = {name: columns for name, columns in seen.items() if len(columns) > 1}
    if twice:
        which = "; ".join(f"'{name}' (columns {', '.join(map(str, cols))})" for name, cols in twice.items())
        raise UserError(
            f"data file '{path}' has duplicated column names: {which}; the reader would keep one and rename the "
            "others (e.g. 'target.1'), so they would be silently ignored. Rename or remove the duplicates"
        )


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
