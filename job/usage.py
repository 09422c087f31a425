"""Command-line mistakes as one masked line with a "did you mean", never argparse's bare usage dump.

:class:`ArgParser` is the parser class of ``seq2seq-job`` and its commands: no prefix matching (``--epoch 2`` is
not silently ``--epochs``), every error a :class:`UsageError` (exit code 2 through :mod:`job.exits`), unknown
flags named without their values (a mistyped ``--tokn hf_…`` must not print the token) and mapped to ours
(``--learning_rate`` → ``--lr``, ``--fp16`` → ``--mixed-precision fp16``: :func:`job.param_names.hint_for`).
"""

from __future__ import annotations

import argparse
import difflib
import logging
from collections.abc import Sequence
from typing import Any, NoReturn

from job.errors import UserError
from job.param_names import SECRET_FIELDS, hint_for
from job.secrets import mask, remember

log = logging.getLogger("job")


class UsageError(UserError):
    """A command line that argparse cannot parse (exit code 2)."""


class ArgParser(argparse.ArgumentParser):
    """argparse without abbreviations, whose errors are one-line UsageErrors with hints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {mask(message)}; see {self.prog} --help")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        remember(secret_flag_values(list(args or [])))  # masked even in the errors of a line that does not parse
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(getattr(parsed, "command", None))
            raise UsageError(unknown_arguments(extras, command))
        return parsed

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self


def unknown_arguments(extras: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """'unknown flag --learning_rate: did you mean --lr?' for every unknown flag; values are never shown."""
    flags = [s for action in parser._actions for s in action.option_strings if action.help != argparse.SUPPRESS]
    params = [
        a.dest
        for a in parser._actions
        if a.option_strings and a.default is argparse.SUPPRESS and a.dest not in ("help", "version")
    ]
    parts: list[str] = []
    stray: list[str] = []
    after_flag = False
    for item in extras:
        if item.startswith("-") and len(item) > 1:
            parts.append(_flag_hint(item.split("=", 1)[0], flags=flags, params=params))
            after_flag = True
        elif after_flag:
            after_flag = False  # the value of an unknown flag: not shown, it may be a secret
        else:
            stray.append(item)
    if stray:  # values are not shown: a secret typed in the wrong place would be printed
        parts.append(
            f"{len(stray)} unexpected argument(s), not shown (a flag takes at most one value; a switch such as "
            "--peft takes none, --no-peft turns it off)"
        )
    return f"{parser.prog}: " + "; ".join(parts) + f"; `{parser.prog} --help` lists every flag"


def _flag_hint(flag: str, *, flags: list[str], params: list[str]) -> str:
    name = flag.lstrip("-").replace("-", "_")
    hint = hint_for(name, params) if params else None
    if hint:
        key, _, value = hint.partition("=")
        suggestion = f"--{key.replace('_', '-')}" + (f" {value}" if value else "")
    else:
        close = difflib.get_close_matches(flag, flags, n=1)
        suggestion = close[0] if close else ""
    return f"unknown flag {flag}" + (f": did you mean {suggestion}?" if suggestion else "")


def secret_flag_values(argv: Sequence[str]) -> list[str]:
    """The values given to secret flags (``--token X``, ``--token=X``) in ``argv``."""
    names = {f"--{name}" for field in SECRET_FIELDS for name in (field, field.replace("_", "-"))}
    values = []
    for index, item in enumerate(argv):
        flag, eq, value = item.partition("=")
        if flag in names and eq:
            values.append(value)
        elif item in names and index + 1 < len(argv):
            values.append(argv[index + 1])
    return values


def warn_token_flag(argv: Sequence[str]) -> None:
    """A --token on the command line is visible to every user of the machine (ps, /proc/PID/cmdline)."""
    if any(a in ("--token", "--token=") or a.startswith("--token=") for a in argv):
        log.warning(
            "--token on the command line is visible to other users of this machine (ps, /proc/<pid>/cmdline) "
            "and in shell history; pass it as HF_TOKEN (or SEQ2SEQ_TOKEN) from a secret instead"
        )
