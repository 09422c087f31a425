"""Completeness markers: a folder is complete only when its ``manifest.json`` exists and matches its files.

The manifest (file names, sizes, SHA-256) is always written last and atomically, so a reader that finds it
knows every file it lists was fully written. Readers trust only folders whose manifest verifies.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from job.jsonfiles import read_object_or_empty, write_atomic

MANIFEST = "manifest.json"


def sha256(path: Path, *, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_files(folder: Path, *, exclude: Iterable[str] = ()) -> list[Path]:
    """Files under folder (relative paths, sorted), skipping the manifest and excluded top-level entries."""
    skip = {MANIFEST, *exclude}
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in skip and not rel.name.endswith(".tmp"):
            files.append(rel)
    return files


def write_manifest(
    folder: Path, *, kind: str, exclude: Iterable[str] = (), extra: dict[str, Any] | None = None
) -> dict:
    """Mark ``folder`` complete. Call only after every file in it is written."""
    files = list_files(folder, exclude=exclude)
    manifest = {
        "kind": kind,
        "complete": True,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {str(rel): {"size": (folder / rel).stat().st_size, "sha256": sha256(folder / rel)} for rel in files},
        **(extra or {}),
    }
    write_atomic(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict | None:
    data = read_object_or_empty(folder / MANIFEST)
    return data if data.get("complete") is True else None


def verify(folder: Path, *, checksums: bool = False) -> bool:
    """True when the manifest exists and every file it lists is present with its size (and hash)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    for rel, info in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
        if checksums and sha256(path) != info.get("sha256"):
            return False
    return True


def clear_manifest(folder: Path) -> None:
    """Unmark a folder that is about to be rewritten."""
    (folder / MANIFEST).unlink(missing_ok=True)
