"""File-error forensics: why a data file could not be read, in one line that names the file and the fix.

The ``datasets`` builders fail on a bad file with pyarrow/pandas errors that rarely say where the problem is.
:func:`file_error` looks at the exception chain and at the file itself (the first byte that is not UTF-8, the
first line that is not a JSON object, pandas' CSV tokenizer message) and words a :class:`~job.errors.UserError`;
errors of the machine (disk, cache folder, memory) are left alone, since no change to the data can fix them.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd

from job.data.formats import DATA_EXTENSIONS, EXTENSIONS_TEXT
from job.errors import UserError, exception_chain

_REASON_MAX = 300


def short(exc: BaseException, *, innermost: bool = True) -> str:
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


# ------------------------------------------------------------------------------------------------ UTF-8
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


def utf8_error(path: Path | None, where: str) -> UserError:
    """The UserError for text that is not valid UTF-8 (with line and byte offset when ``path`` is a file)."""
    bad = _first_invalid_utf8(path) if path is not None and path.suffix.lower() != ".parquet" else None
    if bad is None:
        return UserError(f"{where} holds text that is not valid UTF-8; the data must be UTF-8: re-save it")
    line, offset = bad
    return UserError(
        f"data file '{path}' is not valid UTF-8 (first bad byte at line {line}, byte offset {offset}); "
        "the file must be UTF-8: re-save it as UTF-8"
    )


# ------------------------------------------------------------------------------------------------- JSON
def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


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


# -------------------------------------------------------------------------------------------------- CSV
def _csv_error(path: Path, chain: list[BaseException]) -> UserError | None:
    """The UserError for a CSV/TSV file pandas' tokenizer refused (``None``: it was not the tokenizer)."""
    parser = next((err for err in chain if isinstance(err, (pd.errors.ParserError, csv.Error))), None)
    if parser is None:
        return None
    ext = path.suffix.lower()
    reason = " ".join(str(parser).split()).replace("Error tokenizing data. C error: ", "")
    eof = re.search(r"EOF inside string starting at row (\d+)", reason)
    if eof:  # pandas counts rows from 0 (the header); people count lines from 1
        reason = f'a quoted field opened near line {int(eof.group(1)) + 1} is never closed (missing ")'
    delimiter = "commas" if ext == ".csv" else "tabs"
    return UserError(
        f"data file '{path}' is not a valid {ext[1:].upper()} file: {reason}; fix that line (quote fields that "
        f"contain {delimiter}, quotes or newlines, and give every row the header's number of fields)"
    )


# -------------------------------------------------------------------------------------- reading failures
def _is_system_error(err: BaseException) -> bool:
    """An error of the operating system (it carries an errno), not pyarrow's OSError for corrupt data."""
    return isinstance(err, OSError) and err.errno is not None


def _has_no_rows(chain: list[BaseException]) -> bool:
    """Whether pandas or the json builder failed because the file holds no rows."""
    return any(
        isinstance(err, (pd.errors.EmptyDataError, StopIteration))
        or (isinstance(err, ValueError) and "corresponds to no data" in str(err))
        for err in chain
    )


def file_error(path: Path, exc: BaseException) -> UserError | None:
    """Turn a failure to read data file ``path`` into a UserError (``None``: not the data's fault)."""
    ext = path.suffix.lower()
    chain = exception_chain(exc)
    if _has_no_rows(chain):
        return UserError(f"data file '{path}' has no rows; add rows below the header (or JSON objects)")
    system = next((err for err in chain if isinstance(err, MemoryError) or _is_system_error(err)), None)
    if system is not None:
        if isinstance(system, OSError) and system.filename and Path(system.filename) == path:
            return UserError(f"cannot read data file '{path}': {system.strerror}; check its permissions")
        return None  # disk, cache folder or memory trouble: not something the data can fix, let it through
    if ext != ".parquet" and _first_invalid_utf8(path) is not None:
        return utf8_error(path, f"data file '{path}'")
    if ext in (".csv", ".tsv"):
        error = _csv_error(path, chain)
        if error is not None:
            return error
    elif ext in (".jsonl", ".json"):
        problem = _scan_json_lines(path) if ext == ".jsonl" else _scan_json_document(path)
        if problem is not None:
            return UserError(f"data file '{path}': {problem}; fix the file")
    if ext == ".parquet":
        return UserError(f"data file '{path}' is not a valid Parquet file ({short(exc)}); re-export it")
    return UserError(f"could not read data file '{path}': {short(exc)}")


# ------------------------------------------------------------------------------------------------ paths
def missing_path_error(data_path: str, path: Path) -> UserError:
    """The UserError for a local-looking ``data_path`` that does not exist, with what its folder holds."""
    parent = path.parent
    if parent.is_dir():
        found = sorted(p.name for p in parent.iterdir() if p.suffix.lower() in DATA_EXTENSIONS)
        if found:
            shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
            hint = f" (data files in '{parent}': {shown})"
        else:
            hint = f" (folder '{parent}' exists but holds no {EXTENSIONS_TEXT} files)"
    else:
        hint = f" (folder '{parent}' does not exist either)"
    return UserError(f"data_path '{data_path}': file not found at '{path}'{hint}; check the path")
