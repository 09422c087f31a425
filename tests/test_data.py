"""Tests for job.data: every source kind, split expression and data check, on real files in tmp_path."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest

from job.data import SOURCE, TARGET, DataBundle, SplitReport, load_data, parse_split
from job.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "examples" / "demo_data"

ROWS = [{"text": f"input number {i}", "target": f"output {i}"} for i in range(20)]


@pytest.fixture(autouse=True)
def _quiet_datasets() -> None:
    datasets.disable_progress_bars()


def _load(tmp_path: Path, data_path: Path | str, **kwargs: Any) -> DataBundle:
    return load_data(data_path=str(data_path), cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def _write_csv(path: Path, rows: list[dict[str, Any]], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` in the format given by the suffix of ``path``."""
    suffix = path.suffix
    if suffix == ".csv":
        return _write_csv(path, rows)
    if suffix == ".tsv":
        return _write_csv(path, rows, sep="\t")
    if suffix == ".jsonl":
        return _write_jsonl(path, rows)
    if suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
        return path
    pd.DataFrame(rows).to_parquet(path)
    return path


def _message(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def _load_error(tmp_path: Path, data_path: Path | str, **kwargs: Any) -> str:
    """The one-line UserError that loading ``data_path`` raises."""
    with pytest.raises(UserError) as excinfo:
        _load(tmp_path, data_path, **kwargs)
    return _message(excinfo)


# ------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_each_file_format(tmp_path: Path, suffix: str) -> None:
    rows = [{**row, "extra": i} for i, row in enumerate(ROWS)]
    path = _write(tmp_path / f"data{suffix}", rows)
    bundle = _load(tmp_path, path)
    assert bundle.train.column_names == [SOURCE, TARGET]
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS]
    assert bundle.train[TARGET] == [r["target"] for r in ROWS]
    assert bundle.valid is None
    assert bundle.reports["train"] == SplitReport(name="train", rows_read=20, dropped_empty=0, rows=20)
    assert bundle.as_dict() == {
        "train": {"name": "train", "rows_read": 20, "dropped_empty": 0, "rows": 20},
        "validation": None,
    }
    json.dumps(bundle.as_dict())


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
    assert len(bundle.train) == 20
    assert bundle.valid is not None
    assert bundle.valid[SOURCE] == [r["text"] for r in ROWS[:3]]
    assert set(bundle.reports) == {"train", "validation"}
    assert bundle.as_dict()["validation"] == {
        "name": "validation[:3]",
        "rows_read": 3,
        "dropped_empty": 0,
        "rows": 3,
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
    assert "one split" in message and "{split}.csv" in message


def test_save_to_disk_dataset_dict(tmp_path: Path) -> None:
    saved = tmp_path / "saved_dict"
    rows = [{**r, "target": 7} for r in ROWS]  # an int column, converted in memory
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(ROWS[:4])}
    ).save_to_disk(str(saved))
    bundle = _load(tmp_path, saved, valid_split="test")
    assert bundle.train[TARGET] == ["7"] * 20
    assert bundle.valid is not None and len(bundle.valid) == 4
    assert not list(saved.glob("**/cache-*.arrow"))

    message = _load_error(tmp_path, saved, valid_split="validation")
    assert "no split 'validation'" in message and "test, train" in message and "valid_split" in message


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
    assert len(bundle.train) == 4 and bundle.valid is not None and len(bundle.valid) == 2

    message = _load_error(tmp_path, path, valid_split="validation")
    assert "valid_split='validation'" in message and "{split}.csv" in message and "train[90%:]" in message


def test_overlapping_splits_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    with caplog.at_level(logging.WARNING, logger="job.data"):
        _load(tmp_path, path, train_split="train", valid_split="train[90%:]")
    assert "overlap in 2 rows" in caplog.text


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("train[", "not a valid split expression"),
        ("train[5]", "not a valid split expression"),
        ("train[a:b]", "slice bound 'a'"),
        ("train[-5:]", "slice bound '-5'"),
        ("train[:150%]", "above 100%"),
        ("train[20:10]", "selects no rows"),
        ("", "not a valid split expression"),
    ],
)
def test_malformed_split_expression(tmp_path: Path, expr: str, fragment: str) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    message = _load_error(tmp_path, path, train_split=expr)
    assert fragment in message and "train_split" in message


def test_split_past_the_end(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    message = _load_error(tmp_path, path, valid_split="train[30:]")
    assert "valid_split='train[30:]' selects no rows" in message and "20 rows" in message


def test_parse_split() -> None:
    spec = parse_split("validation[10%:25]", "valid_split")
    assert spec.base == "validation"
    assert spec.bounds(200) == (20, 25)
    assert parse_split("train", "train_split").is_whole


# ------------------------------------------------------------------------------------------------- checks
def test_max_samples_after_dropping(tmp_path: Path) -> None:
    rows = [{"text": "", "target": "x"}, *ROWS]
    path = _write(tmp_path / "data.csv", rows)
    bundle = _load(tmp_path, path, max_samples=3)
    assert bundle.train[SOURCE] == [r["text"] for r in ROWS[:3]]
    assert bundle.reports["train"] == SplitReport(name="train", rows_read=21, dropped_empty=1, rows=3)

    with pytest.raises(UserError, match="max_samples must be a positive integer"):
        _load(tmp_path, path, max_samples=0)


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", [{"article": "a", "summary": "b"}])
    message = _load_error(tmp_path, path)
    assert "column 'text' (text_column) not found" in message
    assert "'article', 'summary'" in message and str(path) in message

    message = _load_error(tmp_path, path, text_column="article")
    assert "column 'target' (target_column) not found" in message and "'article', 'summary'" in message


def test_same_column_twice(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS)
    with pytest.raises(UserError, match="both 'text'"):
        _load(tmp_path, path, target_column="text")


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
    with caplog.at_level(logging.WARNING, logger="job.data"):
        bundle = _load(tmp_path, path)
    assert bundle.train[SOURCE] == ["keep me", "keep me too"]
    assert bundle.reports["train"] == SplitReport(name="train", rows_read=7, dropped_empty=5, rows=2)
    assert "dropped 5 of 7 rows" in caplog.text and "first: row 1" in caplog.text


def test_all_rows_empty(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,target\n,a\n"  ",b\nc,\n', encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert "all 3 rows" in message and "no rows remain" in message and str(path) in message


def test_numbers_and_bools_are_converted(tmp_path: Path) -> None:
    rows = [{"text": 12, "target": 1.5}, {"text": 7, "target": 2.0}]
    bundle = _load(tmp_path, _write(tmp_path / "data.parquet", rows))
    assert bundle.train[SOURCE] == ["12", "7"] and bundle.train[TARGET] == ["1.5", "2.0"]
    assert bundle.train.features[SOURCE].dtype in ("string", "large_string")

    mixed = [{"text": "a", "target": True}, {"text": 3, "target": "b"}, {"text": None, "target": "c"}]
    bundle = _load(tmp_path, _write(tmp_path / "mixed.jsonl", mixed))
    assert bundle.train[SOURCE] == ["a", "3"] and bundle.train[TARGET] == ["True", "b"]
    assert bundle.reports["train"].dropped_empty == 1


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
    message = _load_error(tmp_path, path)
    assert "column 'text' (text_column)" in message and "dict at row 2" in message and str(path) in message

    # the row within a sliced split, and within the base split
    message = _load_error(tmp_path, path, train_split="train[1:]")
    assert "dict at row 1" in message and "row 2 of split 'train'" in message


def test_list_column_names_row(tmp_path: Path) -> None:
    rows = [{"text": "a", "target": None}, {"text": "b", "target": ["x", "y"]}]
    path = _write(tmp_path / "data.parquet", rows)
    message = _load_error(tmp_path, path)
    assert "column 'target' (target_column)" in message and "at row 1" in message
    assert "list" in message or "ndarray" in message


def test_column_swap(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", ROWS[:3])
    bundle = _load(tmp_path, path, text_column="target", target_column="text")
    assert bundle.train.column_names == [SOURCE, TARGET]
    assert bundle.train[SOURCE] == [r["target"] for r in ROWS[:3]]
    assert bundle.train[TARGET] == [r["text"] for r in ROWS[:3]]


# ------------------------------------------------------------------------------------------- broken files
def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,target\na,b\nc,d\ne,f,g\nh,i\n", encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert str(path) in message and "not a valid CSV file" in message and "line 4" in message


def test_unterminated_quote_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,target\na,b\n"never closed,c\nd,e\n', encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert str(path) in message and "opened near line 3 is never closed" in message


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = ['{"text": "a", "target": "b"}', "", '{"text": "c", "target": ', '{"text": "e"}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert str(path) in message and "line 3 is not valid JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "target": "b"}\n[1, 2]\n', encoding="utf-8")
    assert "line 2 is a JSON array" in _load_error(tmp_path, path)


def test_malformed_json_document(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    lines = ["[", '  {"text": "a", "target": "b"},', '  {"text": "c" "target": "d"}', "]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert str(path) in message and "line 3 is not valid JSON" in message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        path.write_bytes("text,target\nok,fine\ncafé,x\n".encode("latin-1"))
        line = 3
    else:
        path.write_bytes('{"text": "caf\xe9", "target": "x"}\n'.encode("latin-1"))
        line = 1
    message = _load_error(tmp_path, path)
    assert str(path) in message and "must be UTF-8" in message and f"line {line}" in message


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,target\nx,y\n", encoding="utf-8-sig")
    assert _load(tmp_path, path).train[SOURCE] == ["x"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.csv", ""),
        ("header.csv", "text,target\n"),
        ("blank.csv", "\n\n"),
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n\n"),
        ("empty.json", "[]"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    message = _load_error(tmp_path, path)
    assert str(path) in message and "has no rows" in message


@pytest.mark.parametrize("damage", ["csv", "footer"])
def test_not_a_parquet_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "data.parquet"
    if damage == "csv":
        path.write_text("text,target\na,b\n", encoding="utf-8")
    else:  # a real Parquet file whose metadata is overwritten: pyarrow raises OSError without errno
        pd.DataFrame(ROWS).to_parquet(path)
        data = bytearray(path.read_bytes())
        data[8:-200] = b"U" * (len(data) - 208)
        path.write_bytes(bytes(data))
    message = _load_error(tmp_path, path)
    assert str(path) in message and "not a valid Parquet file" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported extension '\.txt'"):
        _load(tmp_path, path)


# -------------------------------------------------------------------------------------------- bad paths
@pytest.mark.parametrize(
    "data_path",
    ["./nope.csv", "/tmp/x/does-not-exist.csv", "~/nope/data", "missing.jsonl", "../up/x.parquet"],
)
def test_missing_local_path_is_not_a_hub_attempt(tmp_path: Path, data_path: str) -> None:
    message = _load_error(tmp_path, data_path)
    assert "file not found" in message and data_path in message and "Hub" not in message


def test_missing_file_lists_neighbours(tmp_path: Path) -> None:
    _write(tmp_path / "train.csv", ROWS)
    assert "train.csv" in _load_error(tmp_path, tmp_path / "trian.csv")


def test_unknown_split_in_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.csv", ROWS)
    _write(folder / "test.csv", ROWS)
    message = _load_error(tmp_path, folder, valid_split="validation[:10]")
    assert "no file for split 'validation'" in message and "splits found: test, train" in message
    assert "valid_split" in message


def test_folder_without_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi", encoding="utf-8")
    message = _load_error(tmp_path, folder)
    assert "holds no {split}" in message and "save_to_disk" in message


def test_two_files_for_one_split(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.csv", ROWS)
    _write(folder / "train.jsonl", ROWS)
    with pytest.raises(UserError, match=r"several files for split 'train' \(train.csv, train.jsonl\)"):
        _load(tmp_path, folder)


def test_unreachable_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network: fail fast, like an air gap
    message = _load_error(tmp_path, "someone/no-such-dataset:default")
    assert "'someone/no-such-dataset:default' does not exist locally" in message
    assert "Hub dataset could not be loaded" in message


def test_uri_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a URI"):
        _load(tmp_path, "s3://bucket/train.csv")


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
