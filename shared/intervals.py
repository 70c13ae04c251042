"""Bar intervals: `1s`, `5m`, `4h`, `1d` … Each must divide a UTC day, so windows align to midnight."""

from __future__ import annotations

import re
from typing import Final

from shared.errors import ConfigError

DEFAULT_INTERVALS: Final = "1s,5s,15s,1m,5m,15m,1h,4h,1d"
UNIT_US: Final = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
DAY_US: Final = UNIT_US["d"]
_INTERVAL: Final = re.compile(r"([1-9][0-9]*)([smhd])")


def parse_interval(text: str) -> int:
    """Return the length of interval `text` in microseconds; raise ValueError if it is not valid."""
    match = _INTERVAL.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an interval like 1s, 5m, 4h or 1d")
    length = int(match[1]) * UNIT_US[match[2]]
    if length > DAY_US or DAY_US % length:
        raise ValueError(f"{text!r} does not divide a day evenly")
    return length


def parse_intervals(text: str, variable: str = "MS_BARS_INTERVALS") -> tuple[tuple[str, int], ...]:
    """Parse a comma-separated interval list into (name, micros) pairs, shortest first.

    Raise ConfigError naming `variable` for an invalid, duplicate or empty list.
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{variable} is empty; set e.g. {DEFAULT_INTERVALS}")
    parsed: dict[int, str] = {}
    for name in names:
        try:
            length = parse_interval(name)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
        if length in parsed:
            raise ConfigError(f"{variable}: {name!r} repeats {parsed[length]!r}")
        parsed[length] = name
    return tuple((parsed[length], length) for length in sorted(parsed))
