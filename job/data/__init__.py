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

One module per job, in the order a split goes through them:

* :mod:`~job.data.formats` — the file extensions and the two output column names (no third-party imports);
* :mod:`~job.data.splits` — the split-expression grammar (no third-party imports);
* :mod:`~job.data.sources` — one class per kind of ``data_path``, picked by ``open_source``;
* :mod:`~job.data.files` — reading one data file with the ``datasets`` builders;
* :mod:`~job.data.diagnostics` — why a file could not be read, in one line;
* :mod:`~job.data.columns` — column checks, conversion to text, empty rows;
* :mod:`~job.data.load` — :func:`load_data`, the orchestration.

``load_data``, ``DataBundle`` and ``SplitReport`` are imported on first use, so that importing
``job.data.formats`` or ``job.data.splits`` (which runs this file first) does not import datasets or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from job.data.formats import DATA_EXTENSIONS, SOURCE, TARGET
from job.data.splits import SplitSpec, parse_split

if TYPE_CHECKING:
    from job.data.load import DataBundle, SplitReport, load_data

__all__ = ["DATA_EXTENSIONS", "SOURCE", "TARGET", "DataBundle", "SplitReport", "SplitSpec", "load_data", "parse_split"]

_FROM_LOAD = ("DataBundle", "SplitReport", "load_data")


def __getattr__(name: str) -> Any:
    if name in _FROM_LOAD:
        from job.data import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
