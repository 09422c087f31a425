"""Columns inside a dict column: ``translation.en`` is key ``en`` of the ``translation`` column.

Most Hub translation datasets (WMT, OPUS, IWSLT) hold one ``translation`` column of ``{"en": …, "de": …}``
dicts (a ``Translation`` feature or a struct), and so do JSON lines files written from them (a struct, or
datasets' ``Json`` feature when the rows' keys differ). A text or target column named ``column.key`` that is
not a column itself is taken from such a dict column (``Dataset.flatten`` names struct keys that way; ``a.b.c``
reaches deeper). Given mBART-style language codes and no column names,
:func:`language_columns` finds the dict column whose keys are the two languages (``en_XX`` → ``en``).

Mistakes are one-line :class:`~job.errors.UserError` s: a missing key names the keys there are; a column that
does not hold dicts names the first row that is not one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import datasets

from job.data.splits import SplitSpec
from job.errors import UserError

logger = logging.getLogger("job.data")


_SCANNED_ROWS = 1000  # a Json column's keys, for messages and language matching, are those of its first rows


def is_dict_feature(feature: object) -> bool:
    """A dict column: a struct (a dict of features) or a ``Translation`` feature (``Json`` is checked by value)."""
    return isinstance(feature, dict | datasets.Translation)


def dict_keys(dataset: datasets.Dataset, name: str) -> list[str]:
    """The keys of dict column ``name`` ([] if it holds no dicts)."""
    feature = dataset.features[name]
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    if isinstance(feature, datasets.Json):
        rows = dataset.select_columns([name]).select(range(min(len(dataset), _SCANNED_ROWS)))[name]
        return list(dict.fromkeys(key for value in rows if isinstance(value, dict) for key in value))
    return list(feature) if isinstance(feature, dict) else []


def nested_names(dataset: datasets.Dataset) -> list[str]:
    """``column.key`` for every key of every dict column (for messages)."""
    return [f"{name}.{key}" for name in dataset.column_names for key in dict_keys(dataset, name)]


def with_nested_columns(
    dataset: datasets.Dataset, columns: Sequence[tuple[str, str]], *, spec: SplitSpec, where: str, offset: int
) -> datasets.Dataset:
    """``dataset`` with every dotted ``(column, param)`` of ``columns`` that is not a column made one."""
    wanted = [(column, param) for column, param in columns if column not in dataset.column_names and "." in column]
    if not wanted:
        return dataset
    structs = []
    for column, param in wanted:
        head = _head(dataset, column)
        if head is None:
            continue  # no such column at all: the caller's "not found" error lists the columns
        feature = dataset.features[head]
        if isinstance(feature, datasets.Json):
            values = _json_values(dataset, head, column, param, spec=spec, where=where, offset=offset)
            dataset = dataset.add_column(column, values, feature=datasets.Value("string"))
        elif is_dict_feature(feature):
            structs.append((column, param, head))
        else:
            raise _not_dicts(dataset, head, column, param, spec=spec, where=where, offset=offset)
    if not structs:
        return dataset
    flat = dataset.flatten()
    for column, param, head in structs:
        if column not in flat.column_names:
            keys = [name for name in flat.column_names if name.startswith(head + ".")]
            raise _no_key(head, column, param, keys, spec=spec, where=where)
    return flat


def _json_values(
    dataset: datasets.Dataset, head: str, column: str, param: str, *, spec: SplitSpec, where: str, offset: int
) -> list[object]:
    """The values of ``head.key…`` in a ``Json`` column; None where a row's dict lacks the key."""
    path = column[len(head) + 1 :].split(".")
    values: list[object] = []
    found = False
    for index, value in enumerate(dataset.select_columns([head])[head]):
        for key in path:
            if value is not None and not isinstance(value, dict):
                raise _not_dicts(dataset, head, column, param, spec=spec, where=where, offset=offset, row=index)
            value = value.get(key) if value is not None else None
        found = found or value is not None
        values.append(value if value is None or isinstance(value, str) else str(value))
    if not found:
        keys = [f"{head}.{key}" for key in dict_keys(dataset, head)]
        raise _no_key(head, column, param, keys, spec=spec, where=where)
    return values


def _no_key(head: str, column: str, param: str, keys: list[str], *, spec: SplitSpec, where: str) -> UserError:
    shown = ", ".join(repr(key) for key in keys) or "none"
    return UserError(
        f"column '{head}' of split '{spec.expr}' in {where} has no key '{column[len(head) + 1 :]}' "
        f"({param}={column!r}); keys are: {shown}. Set {param} to one of them"
    )


def language_columns(dataset: datasets.Dataset, languages: tuple[str, str]) -> tuple[str, str] | None:
    """``(head.src, head.tgt)`` of the one dict column whose keys hold both languages, else None.

    Codes match a key as given (``en``) or by their language part (mBART's ``en_XX``, NLLB's ``eng_Latn``).
    """
    found = []
    for name in dataset.column_names:
        keys = dict_keys(dataset, name)
        pair = [_key_for(code, keys) for code in languages]
        if all(pair):
            found.append((f"{name}.{pair[0]}", f"{name}.{pair[1]}"))
    return found[0] if len(found) == 1 else None


def _key_for(code: str, keys: list[str]) -> str | None:
    if code in keys:
        return code
    language = code.replace("-", "_").split("_")[0].lower()
    return language if language in keys else None


def _head(dataset: datasets.Dataset, column: str) -> str | None:
    """The longest dotted prefix of ``column`` that is a column of ``dataset``."""
    parts = column.split(".")
    for end in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:end])
        if head in dataset.column_names:
            return head
    return None


def _not_dicts(
    dataset: datasets.Dataset,
    head: str,
    column: str,
    param: str,
    *,
    spec: SplitSpec,
    where: str,
    offset: int,
    row: int | None = None,
) -> UserError:
    """The error for ``head.key`` when column ``head`` holds something else than dicts: at ``row`` (or the first
    value that is not None)."""
    values = dataset.select_columns([head])[head]
    if row is None:
        index, value = next(((i, v) for i, v in enumerate(values) if v is not None), (0, None))
    else:
        index, value = row, values[row]
    base = f", row {offset + index} of split '{spec.base}'" if offset else ""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return UserError(
        f"{param}={column!r} needs column '{head}' to hold dicts (such as {{'en': ..., 'de': ...}}), but in split "
        f"'{spec.expr}' in {where} it holds a {type(value).__name__} at row {index} (0-based{base}): {shown}"
    )
