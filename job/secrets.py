"""Secret values never reach a log line, an error or a file: what counts as a secret, and how it is masked."""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "***"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}")
MIN_SECRET_CHARS = 8  # shorter values ("1", "true") would mask ordinary words


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they hold a secret (tokens, keys, passwords)."""
    return [v for k, v in env.items() if SECRET_NAME.search(k) and v and len(v) >= MIN_SECRET_CHARS]


def mask(text: str, env: Mapping[str, str] | None = None, *, extra: tuple[str, ...] = ()) -> str:
    """``text`` with every known secret value (from ``env`` and ``extra``) and well-known token shapes masked."""
    for value in sorted({*secret_values(env or {}), *(e for e in extra if e)}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return SECRET_VALUE.sub(MASK, text)
