"""Orchestration: turn ``data_path`` and two split expressions into a checked :class:`DataBundle`.

Per split: load its base split from the source, slice it, keep the two columns, make them text, drop empty
rows, apply ``max_samples``, and rename the columns to :data:`~job.data.formats.SOURCE`/``TARGET``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from job.data.columns import as_text, nonempty
from job.data.diagnostics import utf8_error
from job.data.formats import SOURCE, TARGET
from job.data.nested import language_columns, nested_names, with_nested_columns
from job.data.sources import DataSource, open_source
from job.data.splits import SplitSpec, parse_split
from job.errors import UserError

logger = logging.getLogger("job.data")  # the package's name: log lines read "job.data: ..." wherever they come from

_TMP_SOURCE = "__job_data_source__"
_TMP_TARGET = "__job_data_target__"


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
    reports: dict[str, SplitReport]  # keys "train" and (when asked for) "validation" and "test"
    test: datasets.Dataset | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able summary for metrics.json: one entry per split (``None`` when absent; test if asked)."""
        summary = {
            "train": asdict(self.reports["train"]),
            "validation": asdict(self.reports["validation"]) if "validation" in self.reports else None,
        }
        if "test" in self.reports:
            summary["test"] = asdict(self.reports["test"])
        return summary


@dataclass(frozen=True)
class _Options:
    """What every split of one :func:`load_data` call shares."""

    text_column: str
    target_column: str
    max_samples: int | None
    num_proc: int | None
    languages: tuple[str, str] | None = None  # no column names given: find the dict column of these two keys


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
    test_split: str | None = None,
    languages: tuple[str, str] | None = None,
) -> DataBundle:
    """Load, check and trim the training (and optional validation and test) split.

    Args:
        data_path: a data file, a folder of ``{split}.<ext>`` files, a ``save_to_disk`` folder, or a Hub
            dataset id (``name`` or ``name:config``).
        train_split: split expression for training, e.g. ``train`` or ``train[:90%]``.
        valid_split: split expression for validation, or ``None`` for no validation split.
        text_column: the input text column; ``column.key`` is a key of a dict column (``translation.en``).
        target_column: the target text column, likewise.
        max_samples: keep at most this many rows of each split (the first ones, after dropping empty rows).
        token: Hugging Face token for private Hub datasets.
        cache_dir: the ``datasets`` cache folder.
        num_proc: processes for reading/converting.
        test_split: split expression of a held-out test split, or ``None``.
        languages: (source, target) language codes, e.g. ``("en_XX", "de_DE")``: when the two columns are
            missing, the one dict column holding both keys (``translation.en``, ``translation.de``) is used.

    Returns:
        A :class:`DataBundle` whose datasets have exactly the columns ``SOURCE`` and ``TARGET`` (str).

    Raises:
        UserError: for any mistake in the parameters or the data; the message is one line.
    """
    train_spec = parse_split(train_split, "train_split")
    others = {
        role: (parse_split(expr, param), param)
        for role, expr, param in (("validation", valid_split, "valid_split"), ("test", test_split, "test_split"))
        if expr is not None
    }
    options = _Options(text_column, target_column, max_samples, num_proc, languages)
    _check_options(options)
    source = open_source(data_path, token=token, cache_dir=cache_dir, num_proc=num_proc)
    for spec, param in others.values():
        if source.single_split and spec.base != train_spec.base:
            raise _one_split_error(data_path, source, train=train_spec, other=spec, param=param)

    train, train_report, train_range = _prepare(source, train_spec, param="train_split", role="train", options=options)
    reports = {"train": train_report}
    splits: dict[str, datasets.Dataset] = {}
    for role, (spec, param) in others.items():
        splits[role], reports[role], other_range = _prepare(source, spec, param=param, role=role, options=options)
        if spec.base == train_spec.base:
            _warn_overlap(train_spec, spec, param=param, train_range=train_range, other_range=other_range)
    return DataBundle(train=train, valid=splits.get("validation"), reports=reports, test=splits.get("test"))


def load_split(
    *,
    data_path: str,
    split: str,
    param: str = "split",
    text_column: str = "text",
    target_column: str = "target",
    max_samples: int | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
    languages: tuple[str, str] | None = None,
    role: str = "evaluation",
) -> tuple[datasets.Dataset, SplitReport]:
    """One checked split (columns ``SOURCE`` and ``TARGET``), named ``param`` in messages: for scoring a model."""
    spec = parse_split(split, param)
    options = _Options(text_column, target_column, max_samples, None, languages)
    _check_options(options)
    source = open_source(data_path, token=token, cache_dir=cache_dir, num_proc=None)
    dataset, report, _ = _prepare(source, spec, param=param, role=role, options=options)
    return dataset, report


def _check_options(options: _Options) -> None:
    """Refuse bad column names, ``max_samples`` and ``num_proc`` before anything is read."""
    for value, param in ((options.text_column, "text_column"), (options.target_column, "target_column")):
        if not isinstance(value, str) or not value:
            raise UserError(f"{param} must be a non-empty column name, got {value!r}")
    if options.text_column == options.target_column:
        raise UserError(
            f"text_column and target_column are both '{options.text_column}'; they must name two different columns"
        )
    max_samples = options.max_samples
    bad_max = isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    if max_samples is not None and bad_max:
        raise UserError(f"max_samples must be a positive integer or unset, got {max_samples!r}")
    if options.num_proc is not None and options.num_proc < 1:
        raise UserError(f"num_proc must be a positive integer or unset, got {options.num_proc!r}")


def _one_split_error(
    data_path: str, source: DataSource, *, train: SplitSpec, other: SplitSpec, param: str
) -> UserError:
    """The UserError for a validation/test split asked of a source that holds only the training split."""
    what = "file" if source.kind == "file" else "saved Dataset"
    example = "validation" if param == "valid_split" else "test"
    return UserError(
        f"data_path '{data_path}' is a single {what} and holds only one split, so {param}={other.expr!r} "
        f"cannot be found; use a folder with {{split}}.csv files (e.g. train.csv and {example}.csv), or slice "
        f"the same split (train_split='{train.base}[:90%]', {param}='{train.base}[90%:]')"
    )


def _prepare(
    source: DataSource, spec: SplitSpec, *, param: str, role: str, options: _Options
) -> tuple[datasets.Dataset, SplitReport, tuple[int, int]]:
    """Load, slice, check and trim one split; return it with its report and its row range in the base."""
    base = source.load(spec.base, param=param, expr=spec.expr)
    where = source.describe(spec.base)
    start, end = spec.bounds(len(base))
    if end <= start:
        raise UserError(f"{param}={spec.expr!r} selects no rows: split '{spec.base}' in {where} has {len(base)} rows")
    dataset = base if (start, end) == (0, len(base)) else base.select(range(start, end))
    rows_read = len(dataset)
    options = _language_columns(dataset, options, where=where)
    columns = (options.text_column, "text_column"), (options.target_column, "target_column")
    dataset = with_nested_columns(dataset, columns, spec=spec, where=where, offset=start)
    dataset = _select_columns(dataset, options, where=where)
    try:
        dataset = as_text(
            dataset,
            spec,
            role=role,
            where=where,
            offset=start,
            keep_in_memory=source.keep_in_memory,  # no cache files in the user's folder
            num_proc=options.num_proc,
        )
        keep = nonempty(dataset, [options.text_column, options.target_column])
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if "utf" not in str(exc).lower():
            raise
        raise utf8_error(source.file_for(spec.base), where) from exc
    dataset = _drop_empty(dataset, keep, spec, role=role, where=where, options=options)
    if options.max_samples is not None and len(dataset) > options.max_samples:
        dataset = dataset.select(range(options.max_samples))
    dataset = _rename(dataset, options)
    report = SplitReport(name=spec.expr, rows_read=rows_read, dropped_empty=rows_read - len(keep), rows=len(dataset))
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


def _language_columns(dataset: datasets.Dataset, options: _Options, *, where: str) -> _Options:
    """With languages and neither column in the data: the two keys of the dict column that holds both."""
    missing = options.text_column not in dataset.column_names and options.target_column not in dataset.column_names
    pair = language_columns(dataset, options.languages) if options.languages and missing else None
    if pair is None:
        return options
    logger.info("Using columns %s → %s of %s (the languages %s → %s)", *pair, where, *options.languages)
    return replace(options, text_column=pair[0], target_column=pair[1])


def _select_columns(dataset: datasets.Dataset, options: _Options, *, where: str) -> datasets.Dataset:
    """Keep the text and target columns, in that order; a missing one is a UserError listing those there are."""
    columns = (options.text_column, "text_column"), (options.target_column, "target_column")
    for column, column_param in columns:
        if column not in dataset.column_names:
            existing = ", ".join(repr(c) for c in dataset.column_names)
            if keys := nested_names(dataset):
                existing += f" (keys of dict columns: {', '.join(keys)})"
            raise UserError(
                f"column '{column}' ({column_param}) not found in {where}; columns are: {existing}. "
                f"Set {column_param} to one of them"
            )
    return dataset.select_columns([options.text_column, options.target_column])


def _drop_empty(
    dataset: datasets.Dataset, keep: np.ndarray, spec: SplitSpec, *, role: str, where: str, options: _Options
) -> datasets.Dataset:
    """Keep only the rows ``keep`` (those with text and target), with a warning; none left is a UserError."""
    rows_read = len(dataset)
    dropped = rows_read - len(keep)
    if not dropped:
        return dataset
    mismatch = np.flatnonzero(keep != np.arange(len(keep)))
    first = int(mismatch[0]) if len(mismatch) else len(keep)  # the first dropped row
    text_column, target_column = options.text_column, options.target_column
    logger.warning(
        "%s split %r in %s: dropped %d of %d rows whose '%s' or '%s' is null, empty or whitespace-only (first: row %d)",
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
    return dataset.select(keep, keep_in_memory=True)  # an in-memory index: no cache files written


def _rename(dataset: datasets.Dataset, options: _Options) -> datasets.Dataset:
    """Rename the two columns to SOURCE and TARGET."""
    # Through temporary names: text_column may be "target" and target_column "text".
    dataset = dataset.rename_columns({options.text_column: _TMP_SOURCE, options.target_column: _TMP_TARGET})
    return dataset.rename_columns({_TMP_SOURCE: SOURCE, _TMP_TARGET: TARGET})


def _warn_overlap(
    train: SplitSpec, other: SplitSpec, *, param: str, train_range: tuple[int, int], other_range: tuple[int, int]
) -> None:
    """Warn when two slices of one base split share rows: validation or test would score rows trained on."""
    low, high = max(train_range[0], other_range[0]), min(train_range[1], other_range[1])
    if low < high:
        logger.warning(
            "train_split %r and %s %r overlap in %d rows (%d to %d of split '%s'): "
            "%s scores will look better than they are",
            train.expr,
            param,
            other.expr,
            high - low,
            low,
            high - 1,
            train.base,
            "validation" if param == "valid_split" else "test",
        )
