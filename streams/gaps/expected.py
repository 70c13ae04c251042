"""Which bar windows should exist, and which missing ones are gaps for an instrument's tier.

Equities trade in their exchange's sessions (regular hours, half days, holidays), taken from
exchange_calendars; crypto and prediction markets trade in every window. A window is expected
when any part of it lies in a session. Windows align to UTC midnight, as bars do
(shared.intervals), so a 1d bar is expected on the UTC date of each session. exchange_calendars
(and pandas with it) is imported, and each calendar built, on first use in a process only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError, MarketstreamError
from shared.intervals import DAY_US

log = logging.getLogger(__name__)

Tier = Literal["T0", "T1", "T2"]
MINUTE_US: Final = 60_000_000
HOUR_US: Final = 60 * MINUTE_US
CALENDAR_START: Final = "2000-01-01"  # sessions are known from here to a year after first use
EXTENDED_TZ: Final = "America/New_York"  # extended hours are the US ones only:
EXTENDED_OPEN_US: Final = 4 * HOUR_US  # pre-market from 04:00 on a session's date,
EXTENDED_AFTER_CLOSE_US: Final = 4 * HOUR_US  # post-market to 20:00 (17:00 on half days)


class AssetClass(StrEnum):
    EQUITY = "equity"  # trades in its exchange's sessions
    CRYPTO = "crypto"  # 24/7
    PREDICTION = "prediction"  # prediction markets: 24/7


# The universe's free-form asset_type values (lower case) and what they trade like.
ASSET_TYPES: Final[dict[str, AssetClass]] = {
    "stock": AssetClass.EQUITY,
    "equity": AssetClass.EQUITY,
    "etf": AssetClass.EQUITY,
    "crypto": AssetClass.CRYPTO,
    "cryptocurrency": AssetClass.CRYPTO,
    "prediction": AssetClass.PREDICTION,
    "prediction_market": AssetClass.PREDICTION,
}
# US venues exchange_calendars has no alias for (it has NYSE, NASDAQ, XNAS, ARCX, BATS, XASE):
# all of them trade in the NYSE's sessions.
EXCHANGE_ALIASES: Final[dict[str, str]] = dict.fromkeys(
    ("IEX", "IEXG", "ARCA", "NYSEARCA", "AMEX", "NYSEAMERICAN", "BZX", "BYX", "EDGX", "EDGA"),
    "XNYS",
)


class OutsideCalendarError(MarketstreamError):
    """A time lies before CALENDAR_START or after the last session the calendar was built with
    (a year after the process first used it); restarting the process extends it."""


@dataclass(frozen=True, slots=True)
class Market:
    """Where an instrument trades: an exchange_calendars name, or None for 24/7 markets."""

    asset_class: AssetClass
    calendar: str | None
    extended_hours: bool = False


@dataclass(frozen=True, slots=True)
class Sessions:
    """A calendar's trading intervals [opens_us[i], closes_us[i]) in UTC micros, sorted and
    disjoint; a session with a lunch break is two intervals."""

    opens_us: NDArray[np.int64]
    closes_us: NDArray[np.int64]

    def check_covers(self, start_us: int, end_us: int) -> None:
        """Raise OutsideCalendarError unless [start_us, end_us) lies within the known sessions."""
        if start_us < self.opens_us[0] or end_us > self.closes_us[-1]:
            raise OutsideCalendarError(
                f"[{start_us}, {end_us}) us is outside the calendar's sessions"
                f" [{self.opens_us[0]}, {self.closes_us[-1]}) us"
            )


@functools.cache
def market_of(asset_type: str, exchange: str, *, extended_hours: bool = False) -> Market:
    """Resolve a universe row's asset_type and exchange (NASDAQ, XNYS, IEX, …); raise
    ConfigError for an unknown one, or for extended hours outside the US."""
    asset_class = ASSET_TYPES.get(asset_type.strip().lower())
    if asset_class is None:
        raise ConfigError(f"asset_type {asset_type!r} is not one of {', '.join(ASSET_TYPES)}")
    if asset_class is not AssetClass.EQUITY:
        return Market(asset_class, None)
    xc = _exchange_calendars()
    code = exchange.strip().upper().replace(" ", "")
    try:
        name = str(xc.resolve_alias(EXCHANGE_ALIASES.get(code, code)))
    except xc.errors.InvalidCalendarName:
        raise ConfigError(
            f"exchange {exchange!r} has no calendar: use a MIC such as XNYS or XLON, or one of"
            f" {', '.join(sorted(EXCHANGE_ALIASES))}"
        ) from None
    if extended_hours and str(_calendar(name).tz) != EXTENDED_TZ:
        raise ConfigError(f"extended hours are known for US exchanges only, not {exchange!r}")
    return Market(asset_class, name, extended_hours)


def _exchange_calendars() -> Any:
    """Import exchange_calendars (and pandas) here, so that only the processes using it pay."""
    import exchange_calendars  # type: ignore[import-untyped]

    return exchange_calendars


@functools.cache
def _calendar(name: str) -> Any:
    """The exchange_calendars calendar `name`, built once per process (building one is slow)."""
    return _exchange_calendars().get_calendar(name, start=CALENDAR_START)


@functools.cache
def sessions(calendar: str, extended_hours: bool = False) -> Sessions:
    """`calendar`'s trading intervals, computed once per process."""
    cal = _calendar(calendar)
    closes = _micros(cal.closes)
    if extended_hours:
        local_midnight = cal.sessions.tz_localize(cal.tz).tz_convert("UTC")
        opens = _micros(local_midnight) + EXTENDED_OPEN_US
        closes = closes + EXTENDED_AFTER_CLOSE_US
    else:
        opens = _micros(cal.opens)
        has_break = cal.break_starts.notna().to_numpy()
        break_starts = np.where(has_break, _micros(cal.break_starts), closes)
        break_ends = np.where(has_break, _micros(cal.break_ends), closes)
        opens = np.stack([opens, break_ends], axis=1).ravel()
        closes = np.stack([break_starts, closes], axis=1).ravel()
        keep = closes > opens  # the empty afternoon of a session without a break
        opens, closes = opens[keep], closes[keep]
    log.info(
        "calendar %s (extended hours: %s): %d sessions", calendar, extended_hours, len(cal.sessions)
    )
    return Sessions(np.ascontiguousarray(opens), np.ascontiguousarray(closes))


def _micros(times: Any) -> NDArray[np.int64]:
    """UTC micros of a pandas Series or DatetimeIndex of timestamps (NaT: int64 min)."""
    values = times.array if hasattr(times, "array") else times
    return np.asarray(values.as_unit("us").asi8, dtype=np.int64)


def _check_interval(interval_us: int) -> None:
    if interval_us <= 0 or DAY_US % interval_us:
        raise ValueError(f"interval of {interval_us} us does not divide a day evenly")


def expected_windows(
    market: Market, interval_us: int, start_us: int, end_us: int
) -> NDArray[np.int64]:
    """The starts (UTC micros, ascending) of the `interval_us` windows starting in
    [start_us, end_us) that overlap a session of `market`; raise OutsideCalendarError beyond
    the calendar and ValueError for an interval that does not divide a day."""
    _check_interval(interval_us)
    first_us = -(-start_us // interval_us) * interval_us
    if market.calendar is None:
        return np.arange(first_us, end_us, interval_us, dtype=np.int64)
    table = sessions(market.calendar, market.extended_hours)
    table.check_covers(start_us, end_us)
    beyond_us = -(-end_us // interval_us) * interval_us  # the end of the last window
    lo = int(np.searchsorted(table.closes_us, first_us, "right"))
    hi = int(np.searchsorted(table.opens_us, beyond_us, "left"))
    first_k = table.opens_us[lo:hi] // interval_us  # window numbers each interval touches
    last_k = (table.closes_us[lo:hi] - 1) // interval_us
    counts = last_k - first_k + 1
    run_starts = np.cumsum(counts) - counts
    k = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(first_k - run_starts, counts)
    windows: NDArray[np.int64] = k * interval_us
    if windows.size > 1:  # neighbouring intervals may share a window (a break, 1d with extended)
        distinct = np.empty(windows.size, dtype=np.bool_)
        distinct[0] = True
        np.not_equal(windows[1:], windows[:-1], out=distinct[1:])
        windows = windows[distinct]
    return windows[int(np.searchsorted(windows, start_us)) : int(np.searchsorted(windows, end_us))]


def is_trading(market: Market, ts_us: int) -> bool:
    """Whether `market` is in session at `ts_us` (UTC micros); raise OutsideCalendarError
    beyond the calendar."""
    if market.calendar is None:
        return True
    table = sessions(market.calendar, market.extended_hours)
    table.check_covers(ts_us, ts_us + 1)
    i = int(np.searchsorted(table.opens_us, ts_us, "right")) - 1
    return i >= 0 and ts_us < int(table.closes_us[i])


@dataclass(frozen=True, slots=True)
class MissingRule:
    """A run of consecutive expected windows without a bar is a gap only when it is longer
    than `max_silent_windows` (0: every missing window is a gap)."""

    max_silent_windows: int = 0

    def __post_init__(self) -> None:
        if self.max_silent_windows < 0:
            raise ValueError(f"max_silent_windows={self.max_silent_windows} is negative")


class GapSettings(BaseSettings):
    """How long a thinner instrument may go without a trade in session before it is a gap;
    a T0 instrument must print in every expected window."""

    model_config = SettingsConfigDict(env_prefix="MS_GAPS_", extra="forbid")

    t1_silent_minutes: int = Field(default=15, ge=0)
    t2_silent_minutes: int = Field(default=60, ge=0)
    # How far back from a bar the detector looks for the hole before it: an instrument that
    # resumes after a month is not a month of gaps (the sweeper judges older history).
    max_lookback_hours: float = Field(default=72.0, gt=0)
    # The intervals the detector watches; a hole in 1m bars is a hole in every longer interval.
    intervals: str = "1m"
    # The sweep: every this many seconds, the stored bars of the last sweep_hours are judged.
    sweep_interval_s: float = Field(default=300.0, gt=0)
    sweep_hours: float = Field(default=24.0, gt=0)

    def rule(self, tier: Tier, interval_us: int) -> MissingRule:
        """The rule for `tier` at `interval_us`: its silent minutes in whole windows, rounded
        down (T1 at 1m: 15 windows; at 15m: 1; at 1h: 0). Raise ValueError for another tier."""
        _check_interval(interval_us)
        minutes = {"T0": 0, "T1": self.t1_silent_minutes, "T2": self.t2_silent_minutes}.get(tier)
        if minutes is None:
            raise ValueError(f"tier {tier!r} is not one of T0, T1, T2")
        return MissingRule(minutes * MINUTE_US // interval_us)


def missing_spans(
    expected: NDArray[np.int64], seen: NDArray[np.int64], interval_us: int, rule: MissingRule
) -> list[tuple[int, int]]:
    """Spans [start_us, end_us) of the `expected` windows (ascending, unique) with no start in
    `seen` (any order; extra starts are ignored) that `rule` calls gaps.

    A run counts consecutive expected windows, so silence carries across a close or a weekend;
    its spans are split where it skips time, so none covers a night.
    """
    if expected.size == 0:
        return []
    seen_sorted = np.sort(seen)
    if seen_sorted.size:
        at = np.minimum(np.searchsorted(seen_sorted, expected), seen_sorted.size - 1)
        missing = seen_sorted[at] != expected
    else:
        missing = np.ones(expected.size, dtype=np.bool_)
    edges = np.diff(missing.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    long = run_ends - run_starts > rule.max_silent_windows
    if not long.any():
        return []
    marks = np.zeros(expected.size + 1, dtype=np.int32)
    marks[run_starts[long]] += 1
    marks[run_ends[long]] -= 1
    gap_windows = expected[np.cumsum(marks[:-1]) > 0]
    breaks = np.flatnonzero(np.diff(gap_windows) != interval_us)
    starts = gap_windows[np.concatenate(([0], breaks + 1))]
    ends = gap_windows[np.concatenate((breaks, [gap_windows.size - 1]))] + interval_us
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
