"""Evidence of a scored pair in words: which parameters agreed, differed or were one-sided.

The kernels reduce a comparison to flag bits; `explain` turns them back into what a reviewer
reads, with both sides' values when the pair's Params are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from streams.matching import kernels
from streams.matching.params import Params

_AGREED: Final = (
    (kernels.AGREE_DATE, "date"),
    (kernels.AGREE_STRIKE, "strike"),
    (kernels.AGREE_DIRECTION, "direction"),
    (kernels.AGREE_UNIT, "unit"),
    (kernels.AGREE_ENTITIES, "entities"),
    (kernels.AGREE_QUANTITY, "quantity"),
)
_DIFFERED: Final = (
    (kernels.HARD_DATE, "date"),
    (kernels.HARD_STRIKE, "strike"),
    (kernels.HARD_DIRECTION, "direction"),
    (kernels.HARD_UNIT, "unit"),
    (kernels.HARD_ENTITIES, "entities"),
    (kernels.HARD_QUANTITY, "quantity"),
)
_ONE_SIDED: Final = (
    (kernels.SOFT_DATE, "date (from a close date, more than a day apart)"),
    (kernels.SOFT_STRIKE, "strike (on one side only)"),
    (kernels.SOFT_DIRECTION, "direction (on one side only)"),
    (kernels.SOFT_ENTITIES, "entities (one side names more)"),
)
_WARNINGS: Final = (
    (kernels.WARN_BY_VS_ON, "resolution wording: 'by' a date on one side, 'on' it on the other"),
    (kernels.WARN_PERIOD, "resolution wording: a period on one side, a day on the other"),
    (
        kernels.WARN_ANNOUNCEMENT,
        "resolution wording: an announcement on one side, the event on the other",
    ),
    (kernels.WARN_CLOSE_APART, "close dates more than a week apart"),
)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What decided a pair: agreed and differing parameters, one-sided ones, and warnings."""

    agreed: tuple[str, ...]
    differed: tuple[str, ...]
    one_sided: tuple[str, ...]
    warnings: tuple[str, ...]


def _value(params: Params, name: str) -> str:
    if name == "date":
        return "" if params.date is None else f"{params.date.kind.name.lower()} {params.date.end}"
    if name in ("strike", "direction", "unit"):
        s = params.strike
        if s is None:
            return "none"
        value = f"{s.low:g}" if s.low == s.high else f"{s.low:g}-{s.high:g}"
        return f"{s.direction.name.lower()} {value} {s.unit.name.lower()}"
    if name == "entities":
        return ",".join(sorted(params.entity_names)) or "none"
    return params.quantity.name.lower()


def explain(flags: int, a: Params | None = None, b: Params | None = None) -> Evidence:
    """Return the evidence encoded in `flags`; differing items show both values given a and b."""

    def named(table: tuple[tuple[int, str], ...], values: bool) -> tuple[str, ...]:
        out = []
        for bit, name in table:
            if flags & bit:
                if values and a is not None and b is not None:
                    name = f"{name}: {_value(a, name)} vs {_value(b, name)}"
                out.append(name)
        return tuple(out)

    return Evidence(
        agreed=named(_AGREED, values=False),
        differed=named(_DIFFERED, values=True),
        one_sided=named(_ONE_SIDED, values=False),
        warnings=named(_WARNINGS, values=False),
    )
