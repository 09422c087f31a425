"""Names every part of the data package agrees on: the file extensions it reads and the columns it returns.

A leaf module with no third-party imports, so ``from job.data.formats import DATA_EXTENSIONS`` is cheap
(``job.sagemaker`` matches channel files against it without importing datasets or pandas).
"""

from __future__ import annotations

SOURCE = "source"  # the input-text column of every loaded split
TARGET = "target"  # the target-text column of every loaded split

DATA_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
EXTENSIONS_TEXT = "/".join(DATA_EXTENSIONS)  # ".csv/.tsv/.jsonl/.json/.parquet", for messages
