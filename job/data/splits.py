"""The split-expression grammar: ``name`` or ``name[start:end]`` with non-negative ints or percents.

``train``, ``train[:5000]``, ``train[10:20]``, ``train[90%:]``. Expressions are parsed before anything is read;
the bounds are resolved against the base split's length once it is loaded (:meth:`SplitSpec.bounds`), so they
behave the same for every kind of source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from job.errors import UserError

_SPLIT_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*"
    r"(?:\[\s*(?P<start>[^:\]\s]*)\s*:\s*(?P<end>[^:\]\s]*)\s*\])?\s*$"
)
_BOUND_RE = re.compile(r"^(?:(?P<int>\d+)|(?P<pct>\d+(?:\.\d+)?)%)$")
_EXAMPLE = "use 'train', 'train[:5000]', 'train[10:20]', 'train[:90%]' or 'train[90%:]'"


@dataclass(frozen=True)
class _Bound:
    value: float
    percent: bool

    def resolve(self, n: int) -> int:
        if self.percent:
            return min(n, int(self.value * n / 100 + 0.5))
        return min(n, int(self.value))


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split expression ``name[start:end]``."""

    expr: str
    base: str
    start: _Bound | None = None
    end: _Bound | None = None

    @property
    def is_whole(self) -> bool:
        """Whether the expression selects the whole base split."""
        return self.start is None and self.end is None

    def bounds(self, n: int) -> tuple[int, int]:
        """Return ``(start, end)`` row indices for a base split of ``n`` rows (clamped like Python slices)."""
        start = self.start.resolve(n) if self.start else 0
        end = self.end.resolve(n) if self.end else n
        return start, end


def parse_split(expr: str, param: str) -> SplitSpec:
    """Parse ``train``, ``train[:5000]``, ``train[10:20]``, ``train[90%:]``…; a bad one is a UserError."""
    if not isinstance(expr, str):
        raise UserError(f"{param}={expr!r} is not a split expression; {_EXAMPLE}")
    match = _SPLIT_RE.match(expr)
    if not match:
        raise UserError(f"{param}={expr!r} is not a valid split expression; {_EXAMPLE}")
    start, end = (_parse_bound(match.group(key), expr=expr, param=param) for key in ("start", "end"))
    if start and end and start.percent == end.percent and start.value >= end.value:
        raise UserError(f"{param}={expr!r} selects no rows: the slice start must be below its end")
    return SplitSpec(expr=expr, base=match.group("name"), start=start, end=end)


def _parse_bound(text: str, *, expr: str, param: str) -> _Bound | None:
    """One slice bound: empty (``None``), an int (``5000``) or a percent up to 100 (``90%``)."""
    if not text:
        return None
    bound = _BOUND_RE.match(text)
    if not bound:
        raise UserError(
            f"{param}={expr!r}: slice bound {text!r} must be a non-negative integer or a percent like 90%; {_EXAMPLE}"
        )
    if bound.group("int") is not None:
        return _Bound(float(bound.group("int")), percent=False)
    pct = float(bound.group("pct"))
    if pct > 100:
        raise UserError(f"{param}={expr!r}: percent {text!r} is above 100%")
    return _Bound(pct, percent=True)
