"""The gap detector's state: the latest window each instrument printed, per interval, and the
holes its next bar reveals. Pure: the agent feeds it bars and answers its questions from the
database.

A bar that arrives after a hole is compared with the one before it: the windows between them
that should have printed (streams.gaps.expected, for the instrument's market and tier) and did
not are the gap, closed on both sides. Revisions and late bars (a window at or before the
latest seen) reveal nothing. The first bar of an instrument the detector has not seen since it
started is compared with the latest one the database holds, so a worker that was down for
hours still finds what it missed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from streams.gaps.expected import GapSettings, Market, Tier, expected_windows, missing_spans

SILENCE: Final = "silence"
DISCONNECT: Final = "disconnect"


@dataclass(frozen=True, slots=True)
class Profile:
    """What the detector knows of an instrument: where it trades and its tier."""

    market: Market
    tier: Tier


@dataclass(frozen=True, slots=True)
class Hole:
    """Windows [start_us, end_us) of `interval` that should hold bars of `instrument` and do
    not, found between the bar at `before_us` and the one at `after_us`."""

    instrument: str
    interval: str
    start_us: int
    end_us: int
    tier: Tier
    source: str  # the source of the bar that revealed it
    before_us: int
    after_us: int


Key = tuple[str, str]  # instrument, interval


def excuse_halts(
    start_us: int, end_us: int, interval_us: int, halts: list[tuple[int, int | None]]
) -> list[tuple[int, int]]:
    """The parts of the span [start_us, end_us) of whole windows left once every window that
    overlaps a halt [since, until) (until None: still halted) is excused: a halted instrument
    prints nothing, and that is no gap."""
    windows = np.arange(start_us, end_us, interval_us, dtype=np.int64)
    excused = np.zeros(windows.size, dtype=np.bool_)
    for since, until in halts:
        excused |= (windows + interval_us > since) & (
            windows < (until if until is not None else end_us)
        )
    left = windows[~excused]
    if not left.size:
        return []
    breaks = np.flatnonzero(np.diff(left) != interval_us)
    starts = left[np.concatenate(([0], breaks + 1))]
    ends = left[np.concatenate((breaks, [left.size - 1]))] + interval_us
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


class GapDetector:
    def __init__(
        self,
        intervals: Mapping[str, int],
        settings: GapSettings,
        profile_of: Callable[[str], Profile | None],
    ) -> None:
        """`intervals`: the ones to watch (name -> micros); `profile_of`: an instrument's
        market and tier, None for one nothing is expected of (not in the universe)."""
        self.intervals = dict(intervals)
        self.settings = settings
        self.profile_of = profile_of
        self.latest: dict[Key, int] = {}

    def unknown(self, keys: list[Key]) -> list[Key]:
        """Which of `keys` the detector has no latest window for: ask the database."""
        return [key for key in keys if key not in self.latest]

    def learn(self, latest: Mapping[Key, int]) -> None:
        """The latest windows the database holds (before the bars being observed)."""
        for key, ts_us in latest.items():
            self.latest.setdefault(key, ts_us)

    def observe(self, instrument: str, interval: str, ts_us: int, source: str) -> list[Hole]:
        """A bar of `instrument` at window start `ts_us`; return the holes before it."""
        length = self.intervals.get(interval)
        if length is None:
            return []
        key = (instrument, interval)
        before = self.latest.get(key)
        if before is not None and ts_us <= before:
            return []  # a revision, or a bar later than a newer one: nothing new
        self.latest[key] = ts_us
        profile = self.profile_of(instrument)
        if before is None or profile is None or ts_us - before <= length:
            return []
        lookback_us = round(self.settings.max_lookback_hours * 3_600_000_000)
        start_us = max(before + length, ts_us - lookback_us)
        expected = expected_windows(profile.market, length, start_us - start_us % length, ts_us)
        rule = self.settings.rule(profile.tier, length)
        spans = missing_spans(expected, np.empty(0, dtype=np.int64), length, rule)
        return [
            Hole(instrument, interval, start, end, profile.tier, source, before, ts_us)
            for start, end in spans
        ]
