"""Where the splits come from: one small class per kind of ``data_path``, behind the :class:`DataSource` protocol.

========================  =================================================  ==============================
``data_path``             class                                              splits
========================  =================================================  ==============================
a data file               :class:`FileSource`                                one, named by ``train_split``
a folder of split files   :class:`FolderSource` (``train.csv``, ...)         one per ``{split}.<ext>`` file
``Dataset.save_to_disk``  :class:`DiskSource` (a ``state.json``)             one, named by ``train_split``
``DatasetDict`` ditto     :class:`DiskDictSource` (a ``dataset_dict.json``)  the dict's keys
anything else             :class:`HubSource` (``name`` or ``name:config``)   the Hub dataset's splits
========================  =================================================  ==============================

:func:`open_source` picks the class. Each source reads a base split (the name before ``[``) once, however many
split expressions slice it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, TypeVar

import datasets

from job.data.diagnostics import missing_path_error, short
from job.data.files import read_file
from job.data.formats import DATA_EXTENSIONS, EXTENSIONS_TEXT
from job.errors import UserError

_LOCAL_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")
_Saved = TypeVar("_Saved", datasets.Dataset, datasets.DatasetDict)


class DataSource(Protocol):
    """What loading needs from a source of splits; ``base`` is a split name without its slice."""

    @property
    def kind(self) -> str:
        """``file``, ``folder``, ``disk``, ``disk_dict`` or ``hub``."""
        ...

    @property
    def single_split(self) -> bool:
        """Whether the source holds exactly one split (a data file or a saved plain Dataset)."""
        ...

    @property
    def keep_in_memory(self) -> bool:
        """Whether converted columns must stay in memory: the Arrow files are the user's, write no cache there."""
        ...

    def load(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        """The whole base split ``base``, asked for by ``param=expr`` (named in errors)."""
        ...

    def describe(self, base: str) -> str:
        """Where split ``base`` lives, for messages."""
        ...

    def file_for(self, base: str) -> Path | None:
        """The data file holding split ``base``, if it is a file."""
        ...


class _LoadOnce:
    """``load`` reads each base split once: ``train[:90%]`` and ``train[90%:]`` share one read."""

    def __init__(self) -> None:
        self._loaded: dict[str, datasets.Dataset] = {}

    def load(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        if base not in self._loaded:
            self._loaded[base] = self._read(base, param=param, expr=expr)
        return self._loaded[base]

    def _read(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        raise NotImplementedError


class FileSource(_LoadOnce):
    """One data file: it holds one split, whatever the split expressions call it."""

    kind = "file"
    single_split = True
    keep_in_memory = False

    def __init__(self, path: Path, *, cache_dir: str | None, num_proc: int | None) -> None:
        super().__init__()
        self.path, self.cache_dir, self.num_proc = path, cache_dir, num_proc

    def describe(self, base: str) -> str:
        return f"data file '{self.path}'"

    def file_for(self, base: str) -> Path | None:
        return self.path

    def _read(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        return read_file(self.path, cache_dir=self.cache_dir, num_proc=self.num_proc)


class FolderSource(_LoadOnce):
    """A folder of ``{split}.<ext>`` files (``train.csv``, ``validation.jsonl``): one split per file."""

    kind = "folder"
    single_split = False
    keep_in_memory = False

    def __init__(self, path: Path, *, cache_dir: str | None, num_proc: int | None) -> None:
        super().__init__()
        self.path, self.cache_dir, self.num_proc = path, cache_dir, num_proc
        self.files: dict[str, list[Path]] = {}  # split name -> its files (more than one is an error when loaded)
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in DATA_EXTENSIONS:
                self.files.setdefault(child.name[: -len(child.suffix)], []).append(child)
        if not self.files:
            raise UserError(
                f"data_path folder '{path}' holds no {{split}}{EXTENSIONS_TEXT} files (e.g. train.csv, "
                "validation.csv) and was not written by save_to_disk (no dataset_dict.json or state.json)"
            )

    def describe(self, base: str) -> str:
        files = self.files.get(base)
        return f"data file '{files[0]}'" if files else f"folder '{self.path}'"

    def file_for(self, base: str) -> Path | None:
        files = self.files.get(base)
        return files[0] if files else None

    def _read(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
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
            raise UserError(f"data_path folder '{self.path}' has several files for split '{base}' ({names}); keep one")
        return read_file(files[0], cache_dir=self.cache_dir, num_proc=self.num_proc)


class DiskSource(_LoadOnce):
    """A folder written by ``Dataset.save_to_disk``: one split, whatever the split expressions call it."""

    kind = "disk"
    single_split = True
    keep_in_memory = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def describe(self, base: str) -> str:
        return f"saved dataset '{self.path}'"

    def file_for(self, base: str) -> Path | None:
        return None

    def _read(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        return _load_from_disk(self.path, datasets.Dataset)


class DiskDictSource:
    """A folder written by ``DatasetDict.save_to_disk``: its keys are the splits (loaded, memory-mapped, at once)."""

    kind = "disk_dict"
    single_split = False
    keep_in_memory = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.splits = _load_from_disk(path, datasets.DatasetDict)

    def describe(self, base: str) -> str:
        return f"split '{base}' of saved dataset '{self.path}'"

    def file_for(self, base: str) -> Path | None:
        return None

    def load(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        if base not in self.splits:
            found = ", ".join(sorted(self.splits))
            raise UserError(
                f"saved dataset '{self.path}' has no split '{base}' ({param}={expr!r}); splits found: "
                f"{found}. Set {param} to one of them"
            )
        return self.splits[base]


class HubSource(_LoadOnce):
    """A Hugging Face Hub dataset id, ``name`` or ``name:config`` (``cnn_dailymail:3.0.0``)."""

    kind = "hub"
    single_split = False
    keep_in_memory = False

    def __init__(self, data_path: str, *, token: str | None, cache_dir: str | None, num_proc: int | None) -> None:
        super().__init__()
        self.data_path, self.token, self.cache_dir, self.num_proc = data_path, token, cache_dir, num_proc
        name, _, config = data_path.partition(":")
        self.name, self.config = name.strip(), (config.strip() or None)

    def describe(self, base: str) -> str:
        config = f" (config '{self.config}')" if self.config else ""
        return f"split '{base}' of Hub dataset '{self.name}'{config}"

    def file_for(self, base: str) -> Path | None:
        return None

    def _read(self, base: str, *, param: str, expr: str) -> datasets.Dataset:
        try:
            loaded = datasets.load_dataset(
                self.name, self.config, split=base, token=self.token, cache_dir=self.cache_dir, num_proc=self.num_proc
            )
        except Exception as exc:  # every Hub failure is reported as a UserError
            if isinstance(exc, ValueError) and "Unknown split" in str(exc):
                raise UserError(
                    f"Hub dataset '{self.data_path}' has no split '{base}' ({param}={expr!r}): "
                    f"{short(exc, innermost=False)}"
                ) from exc
            raise UserError(
                f"data_path '{self.data_path}' does not exist locally (relative paths start at {Path.cwd()}) and "
                f"the Hub dataset could not be loaded: {short(exc, innermost=False)}"
            ) from exc
        if not isinstance(loaded, datasets.Dataset):
            raise UserError(
                f"Hub dataset '{self.data_path}' split '{base}' gave a {type(loaded).__name__}, not a Dataset"
            )
        return loaded


def open_source(data_path: str, *, token: str | None, cache_dir: str | None, num_proc: int | None) -> DataSource:
    """The source for ``data_path``: a data file, a folder (of split files or save_to_disk output) or a Hub id."""
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
        return FileSource(path, cache_dir=cache_dir, num_proc=num_proc)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            return DiskDictSource(path)
        if (path / "state.json").is_file():
            return DiskSource(path)
        return FolderSource(path, cache_dir=cache_dir, num_proc=num_proc)
    if _looks_local(data_path):
        raise missing_path_error(data_path, path)
    return HubSource(data_path, token=token, cache_dir=cache_dir, num_proc=num_proc)


def _looks_local(data_path: str) -> bool:
    """Whether ``data_path`` is clearly meant as a local path (never a Hub id)."""
    return (
        data_path in (".", "..")
        or data_path.startswith(_LOCAL_PREFIXES)
        or Path(data_path).suffix.lower() in DATA_EXTENSIONS
    )


def _load_from_disk(path: Path, expected: type[_Saved]) -> _Saved:
    """``datasets.load_from_disk(path)``, which must give an ``expected``; a broken folder is a UserError."""
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # a broken save_to_disk folder is the user's to fix
        raise UserError(
            f"data_path folder '{path}' looks written by save_to_disk but could not be loaded "
            f"({short(exc)}); save it again"
        ) from exc
    if not isinstance(loaded, expected):
        found = type(loaded).__name__
        raise UserError(f"data_path folder '{path}' holds a {found}, not a {expected.__name__}")
    return loaded
