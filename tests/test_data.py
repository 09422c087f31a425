"""Tests for job.data: every source kind, split expression and data check, on real files in tmp_path.

Table-driven cases live in one table each (the parametrize ids are the table's keys), and error messages are
checked word for word: they are what a user reads to fix the data.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest

from job.data import DATA_EXTENSIONS, SOURCE, TARGET, DataBundle, SplitReport, load_data, parse_split
from job.data.sources import DataSource, DiskDictSource, DiskSource, FileSource, FolderSource, HubSource, open_source
from job.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "examples" / "demo_data"

ROWS = [{"text": f"input number {i}", "target": f"output {i}"} for i in range(20)]
SPLIT_EXAMPLE = "use 'train', 'train[:5000]', 'train[10:20]', 'train[:90%]' or 'train[90%:]'"
CSV_FIX = (
    "fix that line (quote fields that contain {}, quotes or newlines, and give every row the header's number of fields)"
)
NOT_TEXT = "must name a text column (strings; numbers are converted)"
ONE_SPLIT = (
    "and holds only one split, so valid_split='validation' cannot be found; use a folder with {split}.csv files "
    "(e.g. train.csv and validation.csv), or slice the same split (train_split='train[:90%]', "
    "valid_split='train[90%:]')"
)
LIB = "<lib>"  # in an expected message: a third-party library's own words (pyarrow, datasets), not checked


@pytest.fixture(autouse=True)
def _quiet_datasets() -> None:
    datasets.disable_progress_bars()


def _load(tmp_path: Path, data_path: Path | str, **kwargs: Any) -> DataBundle:
    return load_data(data_path=str(data_path), cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def _write_csv(path: Path, rows: list[dict[str, Any]], sep: str = ",") -> None:
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


# One writer per data file extension; test_writers_cover_every_extension keeps it in step with DATA_EXTENSIONS.
WRITERS: dict[str, Callable[[Path, list[dict[str, Any]]], None]] = {
    ".csv": _write_csv,
    ".tsv": lambda path, rows: _write_csv(path, rows, sep="\t"),
    ".jsonl": _write_jsonl,
    ".json": lambda path, rows: path.write_text(json.dumps(rows), encoding="utf-8"),
    ".parquet": lambda path, rows: pd.DataFrame(rows).to_parquet(path),
}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` in the format given by the suffix of ``path``."""
    WRITERS[path.suffix](path, rows)
    return path


def _message(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    """The error's message, which must be one line as written (nothing for ``str()`` to squash)."""
    assert str(excinfo.value) == excinfo.value.message
    return excinfo.value.message


def _load_error(tmp_path: Path, data_path: Path | str, **kwargs: Any) -> str:
    """The one-line UserError that loading ``data_path`` raises."""
    with pytest.raises(UserError) as excinfo:
        _load(tmp_path, data_path, **kwargs)
    return _message(excinfo)


def _expect(message: str, expected: str, **fields: object) -> None:
    """Assert ``message`` is ``expected`` with ``{name}`` replaced by ``fields`` (and ``<lib>`` by anything)."""
    for name, value in fields.items():
        expected = expected.replace(f"{{{name}}}", str(value))
    if LIB not in expected:
        assert message == expected
        return
    pattern = ".+".join(re.escape(part) for part in expected.split(LIB))
    assert re.fullmatch(pattern, message), f"{message!r} does not match {expected!r}"


# ------------------------------------------------------------------------------------------------ formats
def test_writers_cover_every_extension() -> None:
    assert tuple(WRITERS) == DATA_EXTENSIONS == (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_each_file_format(tmp_path: Path, suffix: str) -> None:
    rows = [{**row, "extra": i} for i, row in enumerate(ROWS)]
    path = _write(tmp_path / f"data{suffix}", rows)
    bundle = _load(tmp_path, path)
    assert bundle.train.column_names == [SOURCE, TARGET]
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS]
    assert bundle.train[TARGET] == [r["target"] for r in ROWS]
    assert bundle.valid is None
    assert bundle.reports == {"train": SplitReport(name="train", rows_read=20, dropped_empty=0, rows=20)}
    summary = {"train": {"name": "train", "rows_read": 20, "dropped_empty": 0, "rows": 20}, "validation": None}
    assert bundle.as_dict() == summary
    assert json.loads(json.dumps(bundle.as_dict())) == summary


def test_csv_values_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,target\n001,NA\nTrue,None\nnull,1.50\n", encoding="utf-8")
    bundle = _load(tmp_path, path)
    assert bundle.train[SOURCE] == ["001", "True", "null"]
    assert bundle.train[TARGET] == ["NA", "None", "1.50"]


def test_csv_with_pandas_index_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    pd.DataFrame(ROWS[:3]).to_csv(path)  # index=True: first header cell is empty
    bundle = _load(tmp_path, path)
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS[:3]]


def test_folder_of_split_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.jsonl", ROWS)
    _write(folder / "validation.parquet", ROWS[:5])
    _write(folder / "test.csv", ROWS[:2])
    bundle = _load(tmp_path, folder, valid_split="validation[:3]")
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS]
    assert bundle.valid is not None
    assert bundle.valid[SOURCE] == [r["text"] for r in ROWS[:3]]
    assert bundle.as_dict() == {
        "train": {"name": "train", "rows_read": 20, "dropped_empty": 0, "rows": 20},
        "validation": {"name": "validation[:3]", "rows_read": 3, "dropped_empty": 0, "rows": 3},
    }


def test_demo_data_loads(tmp_path: Path) -> None:
    bundle = _load(tmp_path, DEMO_DIR, valid_split="validation")
    assert (len(bundle.train), len(bundle.valid or [])) == (400, 80)


def test_save_to_disk_dataset_is_train_split(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(saved))
    before = sorted(p.name for p in saved.iterdir())
    bundle = _load(tmp_path, saved, train_split="train[:15]", valid_split="train[15:]")
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS[:15]]
    assert bundle.valid is not None and bundle.valid[TARGET] == [r["target"] for r in ROWS[15:]]
    assert sorted(p.name for p in saved.iterdir()) == before  # no cache files written into the user's folder

    message = _load_error(tmp_path, saved, valid_split="validation")
    _expect(message, f"data_path '{{path}}' is a single saved Dataset {ONE_SPLIT}", path=saved)


def test_save_to_disk_dataset_dict(tmp_path: Path) -> None:
    saved = tmp_path / "saved_dict"
    rows = [{**r, "target": 7} for r in ROWS]  # an int column, converted in memory
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(ROWS[:4])}
    ).save_to_disk(str(saved))
    bundle = _load(tmp_path, saved, valid_split="test")
    assert bundle.train[TARGET] == ["7"] * 20
    assert bundle.valid is not None and bundle.valid[TARGET] == [r["target"] for r in ROWS[:4]]
    assert not list(saved.glob("**/cache-*.arrow"))

    message = _load_error(tmp_path, saved, valid_split="validation")
    expected = (
        "saved dataset '{path}' has no split 'validation' (valid_split='validation'); splits found: test, train. "
        "Set valid_split to one of them"
    )
    _expect(message, expected, path=saved)


# ------------------------------------------------------------------------------------------------ sources
def _a_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "data.csv", ROWS)


def _a_folder(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    _write(tmp_path / "folder" / "train.jsonl", ROWS)
    return tmp_path / "folder"


def _a_saved_dataset(tmp_path: Path) -> Path:
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def _a_saved_dataset_dict(tmp_path: Path) -> Path:
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved_dict"))
    return tmp_path / "saved_dict"


# kind: (make the data_path, class, single_split, keep_in_memory, describe("train"), file_for("train"))
SOURCES: dict[str, tuple[Callable[[Path], Path], type, bool, bool, str, str | None]] = {
    "file": (_a_file, FileSource, True, False, "data file '{path}'", "{path}"),
    "folder": (_a_folder, FolderSource, False, False, "data file '{path}/train.jsonl'", "{path}/train.jsonl"),
    "disk": (_a_saved_dataset, DiskSource, True, True, "saved dataset '{path}'", None),
    "disk_dict": (_a_saved_dataset_dict, DiskDictSource, False, True, "split 'train' of saved dataset '{path}'", None),
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_open_source_picks_the_class_for_local_data(tmp_path: Path, kind: str) -> None:
    make, cls, single_split, keep_in_memory, where, file_for = SOURCES[kind]
    path = make(tmp_path)
    source: DataSource = open_source(str(path), token=None, cache_dir=str(tmp_path / "hf-cache"), num_proc=None)
    assert type(source) is cls
    assert (source.kind, source.single_split, source.keep_in_memory) == (kind, single_split, keep_in_memory)
    assert source.describe("train") == where.replace("{path}", str(path))
    assert source.file_for("train") == (Path(file_for.replace("{path}", str(path))) if file_for else None)
    loaded = source.load("train", param="train_split", expr="train[:90%]")
    assert loaded["text"] == [r["text"] for r in ROWS]
    assert source.load("train", param="valid_split", expr="train[90%:]") is loaded  # each base split read once


def test_open_source_takes_anything_else_for_a_hub_id() -> None:
    source: DataSource = open_source("someone/dataset:3.0.0", token="hf_x", cache_dir=None, num_proc=None)
    assert type(source) is HubSource
    assert (source.kind, source.single_split, source.keep_in_memory) == ("hub", False, False)
    assert source.describe("test") == "split 'test' of Hub dataset 'someone/dataset' (config '3.0.0')"
    assert source.file_for("test") is None
    assert open_source("someone/dataset", token=None, cache_dir=None, num_proc=None).describe("train") == (
        "split 'train' of Hub dataset 'someone/dataset'"
    )


def test_formats_and_splits_import_no_data_libraries() -> None:
    """job.sagemaker imports DATA_EXTENSIONS from job.data.formats: that must not pull in datasets or pandas."""
    code = (
        "import sys, job.data.formats, job.data.splits; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'datasets', 'pandas', 'pyarrow', 'numpy'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------- split expressions
@pytest.mark.parametrize(
    ("train_split", "valid_split", "train_idx", "valid_idx"),
    [
        ("train", None, range(20), None),
        ("train[:5]", None, range(5), None),
        ("train[10:20]", None, range(10, 20), None),
        ("train[:90%]", "train[90%:]", range(18), range(18, 20)),
        ("train[25%:50%]", "train[:10]", range(5, 10), range(10)),
        ("train[:5000]", None, range(20), None),
    ],
)
def test_split_expressions_on_a_single_file(
    tmp_path: Path, train_split: str, valid_split: str | None, train_idx: range, valid_idx: range | None
) -> None:
    path = _write(tmp_path / "data.jsonl", ROWS)
    bundle = _load(tmp_path, path, train_split=train_split, valid_split=valid_split)
    assert bundle.train[SOURCE] == [ROWS[i]["text"] for i in train_idx]
    assert bundle.reports["train"].name == train_split
    if valid_idx is None:
        assert bundle.valid is None
    else:
        assert bundle.valid is not None
        assert bundle.valid[SOURCE] == [ROWS[i]["text"] for i in valid_idx]


def test_split_name_follows_train_split_for_a_single_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    bundle = _load(tmp_path, path, train_split="all[:4]", valid_split="all[4:6]")
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS[:4]]
    assert bundle.valid is not None and bundle.valid[SOURCE] == [r["text"] for r in ROWS[4:6]]

    message = _load_error(tmp_path, path, valid_split="validation")
    _expect(message, f"data_path '{{path}}' is a single file {ONE_SPLIT}", path=path)


def test_overlapping_splits_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    with caplog.at_level(logging.WARNING, logger="job.data"):
        _load(tmp_path, path, train_split="train", valid_split="train[90%:]")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "job.data",
            "WARNING",
            "train_split 'train' and valid_split 'train[90%:]' overlap in 2 rows (18 to 19 of split 'train'): "
            "validation scores will look better than they are",
        )
    ]


BAD_SPLITS: dict[str, tuple[object, str]] = {
    "open_bracket": ("train[", f"train_split='train[' is not a valid split expression; {SPLIT_EXAMPLE}"),
    "no_colon": ("train[5]", f"train_split='train[5]' is not a valid split expression; {SPLIT_EXAMPLE}"),
    "empty": ("", f"train_split='' is not a valid split expression; {SPLIT_EXAMPLE}"),
    "not_a_string": (5, f"train_split=5 is not a split expression; {SPLIT_EXAMPLE}"),
    "letters": (
        "train[a:b]",
        "train_split='train[a:b]': slice bound 'a' must be a non-negative integer or a percent like 90%; "
        + SPLIT_EXAMPLE,
    ),
    "negative": (
        "train[-5:]",
        "train_split='train[-5:]': slice bound '-5' must be a non-negative integer or a percent like 90%; "
        + SPLIT_EXAMPLE,
    ),
    "above_100_percent": ("train[:150%]", "train_split='train[:150%]': percent '150%' is above 100%"),
    "start_after_end": (
        "train[20:10]",
        "train_split='train[20:10]' selects no rows: the slice start must be below its end",
    ),
    "start_at_end_percent": (
        "train[50%:50%]",
        "train_split='train[50%:50%]' selects no rows: the slice start must be below its end",
    ),
    "past_the_end": ("train[30:]", "train_split='train[30:]' selects no rows: split 'train' in {where} has 20 rows"),
    "empty_slice": ("train[:0]", "train_split='train[:0]' selects no rows: split 'train' in {where} has 20 rows"),
}


@pytest.mark.parametrize("case", list(BAD_SPLITS))
def test_bad_split_expression(tmp_path: Path, case: str) -> None:
    expr, expected = BAD_SPLITS[case]
    path = _write(tmp_path / "data.csv", ROWS)
    _expect(_load_error(tmp_path, path, train_split=expr), expected, where=f"data file '{path}'")


def test_valid_split_past_the_end(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    message = _load_error(tmp_path, path, valid_split="train[30:]")
    _expect(
        message, "valid_split='train[30:]' selects no rows: split 'train' in data file '{path}' has 20 rows", path=path
    )


# expr: (base, rows in the base split, bounds, is_whole)
SPLITS: dict[str, tuple[str, int, tuple[int, int], bool]] = {
    "train": ("train", 200, (0, 200), True),
    "validation[10%:25]": ("validation", 200, (20, 25), False),
    "train[:90%]": ("train", 25, (0, 23), False),  # 22.5 rows round half up
    "train[90%:]": ("train", 25, (23, 25), False),
    "train[:5000]": ("train", 20, (0, 20), False),
    " my.split-2 [ 3 : 50% ] ": ("my.split-2", 10, (3, 5), False),
}


@pytest.mark.parametrize("expr", list(SPLITS))
def test_parse_split(expr: str) -> None:
    base, rows, bounds, is_whole = SPLITS[expr]
    spec = parse_split(expr, "train_split")
    assert (spec.expr, spec.base, spec.bounds(rows), spec.is_whole) == (expr, base, bounds, is_whole)


# ------------------------------------------------------------------------------------------------- checks
BAD_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "max_samples_zero": ({"max_samples": 0}, "max_samples must be a positive integer or unset, got 0"),
    "max_samples_negative": ({"max_samples": -1}, "max_samples must be a positive integer or unset, got -1"),
    "max_samples_bool": ({"max_samples": True}, "max_samples must be a positive integer or unset, got True"),
    "max_samples_str": ({"max_samples": "3"}, "max_samples must be a positive integer or unset, got '3'"),
    "num_proc_zero": ({"num_proc": 0}, "num_proc must be a positive integer or unset, got 0"),
    "text_column_empty": ({"text_column": ""}, "text_column must be a non-empty column name, got ''"),
    "target_column_none": ({"target_column": None}, "target_column must be a non-empty column name, got None"),
    "same_column_twice": (
        {"target_column": "text"},
        "text_column and target_column are both 'text'; they must name two different columns",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_parameters(tmp_path: Path, case: str) -> None:
    kwargs, expected = BAD_PARAMS[case]
    assert _load_error(tmp_path, _write(tmp_path / "data.csv", ROWS), **kwargs) == expected


def test_max_samples_after_dropping(tmp_path: Path) -> None:
    rows = [{"text": "", "target": "x"}, *ROWS]
    path = _write(tmp_path / "data.csv", rows)
    bundle = _load(tmp_path, path, max_samples=3)
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS[:3]]
    assert bundle.reports["train"] == SplitReport(name="train", rows_read=21, dropped_empty=1, rows=3)


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", [{"article": "a", "summary": "b"}])
    _expect(
        _load_error(tmp_path, path),
        "column 'text' (text_column) not found in data file '{path}'; columns are: 'article', 'summary'. "
        "Set text_column to one of them",
        path=path,
    )
    _expect(
        _load_error(tmp_path, path, text_column="article"),
        "column 'target' (target_column) not found in data file '{path}'; columns are: 'article', 'summary'. "
        "Set target_column to one of them",
        path=path,
    )


def test_empty_null_and_whitespace_rows_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"text": "keep me", "target": "ok"},
        {"text": "", "target": "empty text"},
        {"text": "null target", "target": None},
        {"text": "   \t ", "target": "blank text"},
        {"text": "keep me too", "target": "fine"},
        {"text": "blank target", "target": "\n"},
        {"text": None, "target": None},
    ]
    path = _write(tmp_path / "data.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="job.data"):
        bundle = _load(tmp_path, path)
    assert bundle.train[SOURCE] == ["keep me", "keep me too"]
    assert bundle.reports["train"] == SplitReport(name="train", rows_read=7, dropped_empty=5, rows=2)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "job.data",
            "WARNING",
            f"train split 'train' in data file '{path}': dropped 5 of 7 rows whose 'text' or 'target' is null, "
            "empty or whitespace-only (first: row 1)",
        ),
        (
            "job.data",
            "INFO",
            f"Loaded train split 'train' from data file '{path}': 7 rows read, 5 dropped (empty), 2 kept",
        ),
    ]


def test_all_rows_empty(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,target\n,a\n"  ",b\nc,\n', encoding="utf-8")
    expected = (
        "all 3 rows of split 'train' in data file '{path}' have a null, empty or whitespace-only 'text' "
        "(text_column) or 'target' (target_column); no rows remain: fix the data or the column parameters"
    )
    _expect(_load_error(tmp_path, path), expected, path=path)


def test_numbers_and_bools_are_converted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"text": 12, "target": 1.5}, {"text": 7, "target": 2.0}]
    bundle = _load(tmp_path, _write(tmp_path / "data.parquet", rows))
    assert bundle.train[SOURCE] == ["12", "7"] and bundle.train[TARGET] == ["1.5", "2.0"]
    assert bundle.train.features == datasets.Features(
        {SOURCE: datasets.Value("string"), TARGET: datasets.Value("string")}
    )

    mixed = [{"text": "a", "target": True}, {"text": 3, "target": "b"}, {"text": None, "target": "c"}]
    with caplog.at_level(logging.INFO, logger="job.data"):
        bundle = _load(tmp_path, _write(tmp_path / "mixed.jsonl", mixed))
    assert bundle.train[SOURCE] == ["a", "3"] and bundle.train[TARGET] == ["True", "b"]
    assert bundle.reports["train"].dropped_empty == 1
    assert ("job.data", "train split 'train': converting column(s) text, target to text") in [
        (r.name, r.getMessage()) for r in caplog.records
    ]


def test_class_label_becomes_its_name(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    label = datasets.ClassLabel(names=["no", "yes"])
    features = datasets.Features({"text": datasets.Value("string"), "label": label})
    dataset = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features)
    dataset.save_to_disk(str(saved))
    bundle = _load(tmp_path, saved, target_column="label")
    assert bundle.train[TARGET] == ["yes", "no"]


def test_dict_value_names_column_and_row(tmp_path: Path) -> None:
    rows = [{"text": "a", "target": "b"}, {"text": "c", "target": "d"}, {"text": {"x": 1}, "target": "f"}]
    path = _write(tmp_path / "data.jsonl", rows)
    _expect(
        _load_error(tmp_path, path),
        "column 'text' (text_column) of split 'train' in data file '{path}' holds a dict at row 2 (0-based): "
        f"{{'x': 1}}; text_column {NOT_TEXT}",
        path=path,
    )
    # the row within a sliced split, and within the base split
    _expect(
        _load_error(tmp_path, path, train_split="train[1:]"),
        "column 'text' (text_column) of split 'train[1:]' in data file '{path}' holds a dict at row 1 (0-based, "
        f"row 2 of split 'train'): {{'x': 1}}; text_column {NOT_TEXT}",
        path=path,
    )


def test_list_column_names_row(tmp_path: Path) -> None:
    rows = [{"text": "a", "target": None}, {"text": "b", "target": ["x", "y"]}]
    path = _write(tmp_path / "data.parquet", rows)
    _expect(
        _load_error(tmp_path, path),
        "column 'target' (target_column) of split 'train' in data file '{path}' holds a list at row 1 (0-based): "
        f"['x', 'y']; target_column {NOT_TEXT}",
        path=path,
    )


# ------------------------------------------------------------------------------------ WMT-style dict columns
PAIRS = [("the red cat", "die rote Katze"), ("a small dog", "ein kleiner Hund"), ("one bird", "ein Vogel")]
WMT_ROWS = [{"translation": {"en": en, "de": de}, "id": i} for i, (en, de) in enumerate(PAIRS)]
EN, DE = [en for en, _ in PAIRS], [de for _, de in PAIRS]


def _translation_feature_dir(tmp_path: Path) -> Path:
    """A save_to_disk folder shaped like a Hub WMT dataset: one column with the Translation feature."""
    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    folder = tmp_path / "wmt"
    datasets.Dataset.from_list([{"translation": r["translation"]} for r in WMT_ROWS], features=features).save_to_disk(
        str(folder)
    )
    return folder


# kwargs of load_data → (source texts, target texts); every case loads WMT_ROWS
NESTED: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    "dotted_columns": ({"text_column": "translation.en", "target_column": "translation.de"}, EN, DE),
    "dotted_columns_reversed": ({"text_column": "translation.de", "target_column": "translation.en"}, DE, EN),
    "mbart_codes_find_the_keys": ({"languages": ("en_XX", "de_DE")}, EN, DE),
    "plain_codes_find_the_keys": ({"languages": ("de", "en")}, DE, EN),
}


@pytest.mark.parametrize("case", list(NESTED))
@pytest.mark.parametrize("shape", ["jsonl", "translation_feature"])
def test_translation_dict_columns(tmp_path: Path, case: str, shape: str) -> None:
    kwargs, sources, targets = NESTED[case]
    path = _write(tmp_path / "data.jsonl", WMT_ROWS) if shape == "jsonl" else _translation_feature_dir(tmp_path)
    bundle = _load(tmp_path, path, **kwargs)
    assert bundle.train.column_names == [SOURCE, TARGET]
    assert (bundle.train[SOURCE], bundle.train[TARGET]) == (sources, targets)


def test_languages_are_used_only_when_the_columns_are_missing(tmp_path: Path, caplog) -> None:
    path = _write(tmp_path / "data.jsonl", WMT_ROWS)
    with caplog.at_level(logging.INFO, logger="job.data"):
        _load(tmp_path, path, languages=("en_XX", "de_DE"))
    assert f"Using columns translation.en → translation.de of data file '{path}' (the languages en_XX → de_DE)" in [
        r.getMessage() for r in caplog.records
    ]
    plain = _write(tmp_path / "plain.jsonl", [{"text": "x", "target": "y", "translation": {"en": "a", "de": "b"}}])
    assert _load(tmp_path, plain, languages=("en_XX", "de_DE")).train[SOURCE] == ["x"]


def test_a_key_missing_in_some_rows_drops_those_rows(tmp_path: Path) -> None:
    rows = [*WMT_ROWS, {"translation": {"en": "no German here"}, "id": 9}]
    bundle = _load(tmp_path, _write(tmp_path / "data.jsonl", rows), languages=("en", "de"))
    assert bundle.train[TARGET] == DE and bundle.reports["train"].dropped_empty == 1


# kwargs and rows (None: WMT_ROWS as JSON lines) → the one-line error
NESTED_ERRORS: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None, str]] = {
    "missing_key": (
        {"text_column": "translation.fr", "target_column": "translation.de"},
        None,
        "column 'translation' of split 'train' in data file '{path}' has no key 'fr' (text_column='translation.fr');"
        " keys are: 'translation.en', 'translation.de'. Set text_column to one of them",
    ),
    "not_dicts": (
        {"text_column": "translation.en", "target_column": "target"},
        [{"translation": None, "target": "a"}, {"translation": '{"en": "x"}', "target": "b"}],
        "text_column='translation.en' needs column 'translation' to hold dicts (such as {'en': ..., 'de': ...}), but "
        """in split 'train' in data file '{path}' it holds a str at row 1 (0-based): '{"en": "x"}'""",
    ),
    "json_dicts_and_a_string": (  # rows of different shapes: datasets' Json feature, checked row by row
        {"text_column": "translation.en", "target_column": "translation.de"},
        [*WMT_ROWS[:2], {"translation": "the red cat → die rote Katze", "id": 2}],
        "text_column='translation.en' needs column 'translation' to hold dicts (such as {'en': ..., 'de': ...}), but "
        "in split 'train' in data file '{path}' it holds a str at row 2 (0-based): 'the red cat → die rote Katze'",
    ),
    "json_key_in_no_row": (
        {"text_column": "translation.en", "target_column": "translation.fr"},
        [*WMT_ROWS, {"translation": {"en": "x"}, "id": 3}],
        "column 'translation' of split 'train' in data file '{path}' has no key 'fr' (target_column='translation.fr');"
        " keys are: 'translation.en', 'translation.de'. Set target_column to one of them",
    ),
    "default_columns_list_the_keys": (
        {},
        None,
        "column 'text' (text_column) not found in data file '{path}'; columns are: 'translation', 'id' (keys of "
        "dict columns: translation.en, translation.de). Set text_column to one of them",
    ),
    "languages_not_in_the_keys": (
        {"languages": ("en_XX", "fr_XX")},
        None,
        "column 'text' (text_column) not found in data file '{path}'; columns are: 'translation', 'id' (keys of "
        "dict columns: translation.en, translation.de). Set text_column to one of them",
    ),
}


@pytest.mark.parametrize("case", list(NESTED_ERRORS))
def test_translation_dict_column_errors(tmp_path: Path, case: str) -> None:
    kwargs, rows, expected = NESTED_ERRORS[case]
    path = _write(tmp_path / "data.jsonl", WMT_ROWS if rows is None else rows)
    _expect(_load_error(tmp_path, path, **kwargs), expected, path=path)


def test_test_split_loads_like_the_others(tmp_path: Path) -> None:
    folder = tmp_path / "splits"
    folder.mkdir()
    for split, rows in (("train", ROWS[:10]), ("validation", ROWS[10:14]), ("test", ROWS[14:])):
        _write(folder / f"{split}.csv", rows)
    bundle = _load(tmp_path, folder, valid_split="validation", test_split="test[:3]")
    assert bundle.test is not None and bundle.test[SOURCE] == [r["text"] for r in ROWS[14:17]]
    assert bundle.as_dict()["test"] == {"name": "test[:3]", "rows_read": 3, "dropped_empty": 0, "rows": 3}
    assert "test" not in _load(tmp_path, folder).as_dict()
    single = _write(tmp_path / "one.csv", ROWS)
    message = _load_error(tmp_path, single, test_split="test")
    assert message.startswith(f"data_path '{single}' is a single file and holds only one split, so test_split='test'")


def test_column_swap(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS[:3])
    bundle = _load(tmp_path, path, text_column="target", target_column="text")
    assert bundle.train.column_names == [SOURCE, TARGET]
    assert bundle.train[SOURCE] == [r["target"] for r in ROWS[:3]]
    assert bundle.train[TARGET] == [r["text"] for r in ROWS[:3]]


# ------------------------------------------------------------------------------------------- broken files
def _damaged_parquet(path: Path) -> bytes:
    """A real Parquet file whose metadata is overwritten: pyarrow raises an OSError without errno."""
    pd.DataFrame(ROWS).to_parquet(path)
    data = bytearray(path.read_bytes())
    data[8:-200] = b"U" * (len(data) - 208)
    return bytes(data)


NO_ROWS = "data file '{path}' has no rows; add rows below the header (or JSON objects)"
ZERO_BYTES = "data file '{path}' is empty (0 bytes): it has no rows"


def _not_utf8(line: int, offset: int) -> str:
    return (
        f"data file '{{path}}' is not valid UTF-8 (first bad byte at line {line}, byte offset {offset}); the file "
        "must be UTF-8: re-save it as UTF-8"
    )


NOT_PARQUET = "data file '{path}' is not a valid Parquet file (<lib>); re-export it"

# case: (file name, its bytes (or a function of its path that makes them), the message)
BROKEN_FILES: dict[str, tuple[str, bytes | Callable[[Path], bytes], str]] = {
    "csv_extra_field": (
        "data.csv",
        b"text,target\na,b\nc,d\ne,f,g\nh,i\n",
        "data file '{path}' is not a valid CSV file: Expected 2 fields in line 4, saw 3; " + CSV_FIX.format("commas"),
    ),
    "tsv_extra_field": (
        "data.tsv",
        b"text\ttarget\na\tb\nc\td\te\n",
        "data file '{path}' is not a valid TSV file: Expected 2 fields in line 3, saw 3; " + CSV_FIX.format("tabs"),
    ),
    "csv_unclosed_quote": (
        "data.csv",
        b'text,target\na,b\n"never closed,c\nd,e\n',
        "data file '{path}' is not a valid CSV file: a quoted field opened near line 3 is never closed (missing \"); "
        + CSV_FIX.format("commas"),
    ),
    "jsonl_bad_line": (
        "data.jsonl",
        b'{"text": "a", "target": "b"}\n\n{"text": "c", "target": \n{"text": "e"}\n',
        "data file '{path}': line 3 is not valid JSON (Expecting value at column 1); fix the file",
    ),
    "jsonl_array_line": (
        "data.jsonl",
        b'{"text": "a", "target": "b"}\n[1, 2]\n',
        "data file '{path}': line 2 is a JSON array, but every line must be one JSON object like "
        '{"text": ..., "target": ...}; fix the file',
    ),
    "json_bad_document": (
        "data.json",
        b'[\n  {"text": "a", "target": "b"},\n  {"text": "c" "target": "d"}\n]\n',
        "data file '{path}': line 3 is not valid JSON (Expecting ',' delimiter at column 16); fix the file",
    ),
    "json_lines_in_json_file": (
        "data.json",
        b'{"text": "a", "target": "b"}\n[1]\n',
        "data file '{path}': line 2 is a JSON array, but every line must be one JSON object like "
        '{"text": ..., "target": ...}; fix the file',
    ),
    "json_list_item_not_object": (
        "data.json",
        b'[{"text": "a", "target": "b"}, 3]',
        "data file '{path}': item 1 of the top-level list is a JSON number, not an object; fix the file",
    ),
    "json_scalar": (
        "data.json",
        b'"hello"',
        "data file '{path}': the file holds a JSON string; it must be a list of objects or JSON Lines; fix the file",
    ),
    "csv_latin1": ("data.csv", "text,target\nok,fine\ncafé,x\n".encode("latin-1"), _not_utf8(3, 23)),
    "jsonl_latin1": ("data.jsonl", '{"text": "caf\xe9", "target": "x"}\n'.encode("latin-1"), _not_utf8(1, 13)),
    "csv_zero_bytes": ("data.csv", b"", ZERO_BYTES),
    "jsonl_zero_bytes": ("data.jsonl", b"", ZERO_BYTES),
    "csv_header_only": ("data.csv", b"text,target\n", NO_ROWS),
    "csv_blank_lines": ("data.csv", b"\n\n", "data file '{path}' has no rows (only blank lines)"),
    "jsonl_blank_lines": ("data.jsonl", b"\n\n", NO_ROWS),
    "json_empty_list": ("data.json", b"[]", NO_ROWS),
    "parquet_holding_csv": ("data.parquet", b"text,target\na,b\n", NOT_PARQUET),
    "parquet_damaged_footer": ("data.parquet", _damaged_parquet, NOT_PARQUET),
    "unsupported_extension": (
        "data.txt",
        b"hello\n",
        "data file '{path}' has unsupported extension '.txt'; use one of .csv, .tsv, .jsonl, .json, .parquet",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_file(tmp_path: Path, case: str) -> None:
    name, content, expected = BROKEN_FILES[case]
    path = tmp_path / name
    path.write_bytes(content(path) if callable(content) else content)
    _expect(_load_error(tmp_path, path), expected, path=path)


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,target\nx,y\n", encoding="utf-8-sig")
    assert _load(tmp_path, path).train[SOURCE] == ["x"]


# -------------------------------------------------------------------------------------------- bad paths
# data_path (relative to tmp_path, which is the working folder and $HOME): the message
MISSING_PATHS: dict[str, str] = {
    "./nope.csv": (
        "data_path './nope.csv': file not found at '{tmp}/nope.csv' (folder '{tmp}' exists but holds no "
        ".csv/.tsv/.jsonl/.json/.parquet files); check the path"
    ),
    "{tmp}/x/does-not-exist.csv": (
        "data_path '{tmp}/x/does-not-exist.csv': file not found at "
        "'{tmp}/x/does-not-exist.csv' (folder '{tmp}/x' does not exist either); check the path"
    ),
    "~/nope/data": (
        "data_path '~/nope/data': file not found at '{tmp}/nope/data' (folder '{tmp}/nope' does not "
        "exist either); check the path"
    ),
    "missing.jsonl": (
        "data_path 'missing.jsonl': file not found at '{tmp}/missing.jsonl' (folder '{tmp}' exists "
        "but holds no .csv/.tsv/.jsonl/.json/.parquet files); check the path"
    ),
    "../up/x.parquet": (
        "data_path '../up/x.parquet': file not found at '{tmp}/../up/x.parquet' (folder "
        "'{tmp}/../up' does not exist either); check the path"
    ),
}


@pytest.mark.parametrize("data_path", list(MISSING_PATHS))
def test_missing_local_path_is_not_a_hub_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    message = _load_error(tmp_path, data_path.replace("{tmp}", str(tmp_path)))
    _expect(message, MISSING_PATHS[data_path], tmp=tmp_path)


def test_missing_file_lists_neighbours(tmp_path: Path) -> None:
    _write(tmp_path / "train.csv", ROWS)
    for i in range(11):
        (tmp_path / f"v{i:02d}.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")
    _expect(
        _load_error(tmp_path, tmp_path / "trian.csv"),
        "data_path '{tmp}/trian.csv': file not found at '{tmp}/trian.csv' (data files in '{tmp}': train.csv, "
        "v00.jsonl, v01.jsonl, v02.jsonl, v03.jsonl, v04.jsonl, v05.jsonl, v06.jsonl, v07.jsonl, v08.jsonl, ...); "
        "check the path",
        tmp=tmp_path,
    )


def test_unknown_split_in_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.csv", ROWS)
    _write(folder / "test.csv", ROWS)
    _expect(
        _load_error(tmp_path, folder, valid_split="validation[:10]"),
        "data_path folder '{path}' has no file for split 'validation' (valid_split='validation[:10]'); splits found: "
        "test, train. Add validation.csv (or .tsv/.jsonl/.json/.parquet) or set valid_split to one of them",
        path=folder,
    )


def test_folder_without_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi", encoding="utf-8")
    _expect(
        _load_error(tmp_path, folder),
        "data_path folder '{path}' holds no {split}.csv/.tsv/.jsonl/.json/.parquet files (e.g. train.csv, "
        "validation.csv) and was not written by save_to_disk (no dataset_dict.json or state.json)",
        path=folder,
    )


def test_two_files_for_one_split(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.csv", ROWS)
    _write(folder / "train.jsonl", ROWS)
    _expect(
        _load_error(tmp_path, folder),
        "data_path folder '{path}' has several files for split 'train' (train.csv, train.jsonl); keep one",
        path=folder,
    )


def test_broken_save_to_disk_folder(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "state.json").write_text("{}", encoding="utf-8")
    _expect(
        _load_error(tmp_path, folder),
        "data_path folder '{path}' looks written by save_to_disk but could not be loaded (<lib>); save it again",
        path=folder,
    )


def test_unreachable_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network: fail fast, like an air gap
    _expect(
        _load_error(tmp_path, "someone/no-such-dataset:default"),
        "data_path 'someone/no-such-dataset:default' does not exist locally (relative paths start at {cwd}) and the "
        "Hub dataset could not be loaded: <lib>",
        cwd=Path.cwd(),
    )


@pytest.mark.parametrize("data_path", ["", "   "])
def test_empty_data_path(tmp_path: Path, data_path: str) -> None:
    expected = "data_path is empty; give a data file, a folder or a Hugging Face Hub dataset id"
    assert _load_error(tmp_path, data_path) == expected


def test_uri_is_refused(tmp_path: Path) -> None:
    _expect(
        _load_error(tmp_path, "s3://bucket/train.csv"),
        "data_path 's3://bucket/train.csv' is a URI; load_data reads local files, folders and Hub dataset ids: pass "
        "s3:// and gs:// through job.storage.localize first (train() does), download any other URI and pass the "
        "local path",
    )


# ------------------------------------------------------------------------------------------------- demo data
def test_demo_generator_is_deterministic_and_matches_shipped_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "examples" / "make_demo_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out-dir", str(tmp_path / "a")]) == 0
    assert module.main(["--out-dir", str(tmp_path / "b")]) == 0
    for split, count in (("train", 400), ("validation", 80)):
        generated = (tmp_path / "a" / f"{split}.csv").read_bytes()
        assert generated == (tmp_path / "b" / f"{split}.csv").read_bytes()
        assert generated == (DEMO_DIR / f"{split}.csv").read_bytes()
        with (DEMO_DIR / f"{split}.csv").open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == count and list(rows[0]) == ["text", "target"]
        for row in rows:
            assert 10 <= len(row["text"].split()) <= 40
            assert all(word in row["text"] for word in row["target"].split())
