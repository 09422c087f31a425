"""Secret values never reach a log line, an error or a file: what counts as a secret, and how it is masked.

Three kinds of secret are masked wherever text leaves the job (every log line through :mod:`job.logs`, the
failure reason through :mod:`job.platforms.failure`, argparse's errors through :mod:`job.cli`):

* **known values**: variables whose names say they hold one (``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, …; the run
  context's ``secrets``) and values the job was handed, such as the ``token`` parameter (:func:`remember`);
* **URL credentials**: the user-info of any URL (``https://user:secret@host`` → ``https://***@host``) and
  credential query parameters (``?token=…``, presigned ``X-Amz-Signature=…``);
* **well-known token shapes**: Hub tokens (``hf_…``), AWS access key ids (``AKIA…``/``ASIA…``), GitHub and Slack
  tokens, ``Authorization:`` header values.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

MASK = "***"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_CHARS = 8  # shorter values ("1", "true") would mask ordinary words
_SHAPES = (
    r"hf_[A-Za-z0-9]{16,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"xox[abprs]-[A-Za-z0-9-]{10,}",
)
SECRET_VALUE = re.compile("|".join(_SHAPES))
# scheme://user:password@host and scheme://token@host: the whole user-info goes
URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@")
CREDENTIAL_QUERY = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|password|sig|signature|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&\s'\"<>]+"
)
AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer\s+|basic\s+|token\s+)?)[^\s'\",}]+")

_remembered: set[str] = set()
_lock = threading.Lock()


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they hold a secret (tokens, keys, passwords)."""
    return [v for k, v in env.items() if SECRET_NAME.search(k) and v and len(v) >= MIN_SECRET_CHARS]


def remember(values: Iterable[str | None]) -> None:
    """Mask these values from now on in everything :func:`mask` sees (e.g. the ``token`` parameter)."""
    with _lock:
        _remembered.update(v for v in values if v and len(v) >= 4)


def mask(text: str, env: Mapping[str, str] | None = None, *, extra: tuple[str, ...] = ()) -> str:
    """``text`` with every known secret value, URL credential and well-known token shape masked."""
    with _lock:
        known = {*_remembered, *secret_values(env or {}), *(e for e in extra if e)}
    for value in sorted(known, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = CREDENTIAL_QUERY.sub(rf"\1{MASK}", text)
    text = AUTH_HEADER.sub(rf"\1{MASK}", text)
    return SECRET_VALUE.sub(MASK, text)
