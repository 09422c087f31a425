"""Where parameter values come from, merged by priority into one :class:`~job.params.Seq2SeqParams`.

Highest priority first::

    CLI flags / Python kwargs  >  environment (SEQ2SEQ_LR=…)  >  JSON (--params FILE or SEQ2SEQ_PARAMS)  >  defaults

``SEQ2SEQ_PARAMS`` holds either a path to a JSON file or the JSON itself. The environment is a mapping the
caller passes in (the run context's snapshot, :mod:`job.context`): nothing here reads ``os.environ``.
pydantic-settings parses the ``SEQ2SEQ_*`` variables; unknown names are refused with a "did you mean".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic_settings import EnvSettingsSource

from job.errors import UserError
from job.jsonfiles import parse_object
from job.param_names import reject_unknown
from job.params import ENV_PREFIX, PARAMS_ENV, Seq2SeqParams

_FIELDS = list(Seq2SeqParams.model_fields)


def load_params(
    overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str], params_file: str | None = None
) -> Seq2SeqParams:
    """Params from ``overrides`` (CLI flags) > ``SEQ2SEQ_*`` in ``env`` > JSON (file or inline) > defaults."""
    reject_unknown(env_param_names(env), "environment variable", valid=_FIELDS, prefix=ENV_PREFIX)
    merged = {**json_params(params_file, env), **_env_values(env), **dict(overrides or {})}
    return Seq2SeqParams(**merged)


def env_param_names(env: Mapping[str, str]) -> list[str]:
    """Parameter names set through ``SEQ2SEQ_*`` variables (lower case, without the prefix)."""
    return [k[len(ENV_PREFIX) :].lower() for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() != PARAMS_ENV]


def json_params(params_file: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The JSON parameters: ``--params FILE``, else ``SEQ2SEQ_PARAMS`` (a path or inline JSON); ``{}`` if none."""
    spec = params_file or _get(env, PARAMS_ENV)
    if not spec:
        return {}
    inline = spec.lstrip().startswith("{")
    where = f"{PARAMS_ENV} (inline JSON)" if inline else spec
    if inline:
        text = spec
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(_missing_params_file(spec, from_flag=bool(params_file)))
        text = path.read_text(encoding="utf-8")
    try:
        data = parse_object(text, where=f"params file {where}")
    except UserError as exc:
        if "must hold a JSON object" in str(exc):
            raise UserError(f"params file {where} must hold a JSON object of parameter names to values") from None
        raise
    reject_unknown(data.keys(), f"key in {where}", valid=_FIELDS)
    return data


def _missing_params_file(spec: str, *, from_flag: bool) -> str:
    """The value is shown only when it looks like a file name: SEQ2SEQ_PARAMS may hold mistyped secrets."""
    if from_flag:
        return f"params file {spec} does not exist; pass an existing JSON file to --params"
    shown = spec if re.fullmatch(r"[\w./~ -]{1,255}\.json", spec.strip()) else "(value not shown: it may hold secrets)"
    return (
        f"{PARAMS_ENV} is neither inline JSON (starting with '{{') nor an existing file: {shown}; set it to a JSON "
        "object or the path of a JSON file"
    )


def user_set_names(overrides: Iterable[str], env: Mapping[str, str], params_file: str | None) -> set[str]:
    """Every parameter the user set explicitly (flags, environment, JSON); unreadable JSON counts none."""
    try:
        from_json = {str(k).replace("-", "_") for k in json_params(params_file, env)}
    except UserError:
        from_json = set()  # load_params reports it
    return set(overrides) | set(env_param_names(env)) | from_json


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of the process environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._mapping = {k.lower(): v for k, v in env.items()}
        super().__init__(Seq2SeqParams, case_sensitive=False, env_prefix=ENV_PREFIX)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._mapping


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    return _MappingEnvSource(env)()


def _get(env: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in env.items() if k.upper() == name), None)
