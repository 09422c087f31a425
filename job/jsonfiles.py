"""Reading and writing small JSON objects: the one home for "a file (or string) that must hold a JSON object"."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from job.errors import UserError


def parse_object(text: str, *, where: str) -> dict[str, Any]:
    """``text`` as a JSON object; a UserError naming ``where`` (a file, a variable) when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must hold a JSON object, got a JSON {type(data).__name__}")
    return data


def read_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line UserError naming the file when it is unreadable or not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return parse_object(text, where=str(path))


def read_object_or_empty(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when it is missing, unreadable or not an object (best effort)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON so that readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")  # manifests never list *.tmp files
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
