"""The sweep: one instrument's stored bars over a horizon against the windows its market and
tier expect, for holes the stream could not see (a bar deleted by hand, a worker down for
hours) and for the continuity SLO. Pure: the agent reads the bars and records what it finds.

The continuity SLO counts the expected windows that lie in a run of missing ones longer than
twice the interval (`SLO_RUN_WINDOWS`): a short hole is a blip, a long one an outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from streams.gaps.detector import Profile
from streams.gaps.expected import GapSettings, MissingRule, expected_windows, missing_spans

SLO_RUN_WINDOWS: Final = 2


@dataclass(frozen=True, slots=True)
class Swept:
    """What one instrument's sweep found: gap spans by its tier's rule, and the counts."""

    spans: list[tuple[int, int]]
    first_expected_us: int | None  # the horizon's first expected window
    expected: int
    seen: int
    violating: int  # expected windows in missing runs longer than SLO_RUN_WINDOWS


@dataclass(slots=True)
class Cadence:
    """Expected against seen windows of one tier and interval, over the sweep's horizon."""

    instruments: int = 0
    expected: int = 0
    seen: int = 0
    violating: int = 0
    gaps: int = 0
    spans: list[tuple[str, int, int]] = field(default_factory=list)

    def add(self, instrument: str, swept: Swept) -> None:
        self.instruments += 1
        self.expected += swept.expected
        self.seen += swept.seen
        self.violating += swept.violating
        self.gaps += len(swept.spans)
        self.spans += [(instrument, start, end) for start, end in swept.spans]

    @property
    def violation_rate(self) -> float:
        return self.violating / self.expected if self.expected else 0.0


def sweep(
    profile: Profile,
    interval_us: int,
    seen: NDArray[np.int64],
    start_us: int,
    end_us: int,
    settings: GapSettings,
) -> Swept:
    """Judge the windows in [start_us, end_us) (aligned to the interval) against `seen`."""
    expected = expected_windows(
        profile.market, interval_us, start_us - start_us % interval_us, end_us
    )
    in_horizon = seen[(seen >= start_us - start_us % interval_us) & (seen < end_us)]
    spans = missing_spans(
        expected, in_horizon, interval_us, settings.rule(profile.tier, interval_us)
    )
    long_runs = missing_spans(expected, in_horizon, interval_us, MissingRule(SLO_RUN_WINDOWS))
    violating = sum(
        int(np.count_nonzero((expected >= start) & (expected < end))) for start, end in long_runs
    )
    first = int(expected[0]) if expected.size else None
    seen_count = int(np.isin(expected, in_horizon).sum())
    return Swept(spans, first, int(expected.size), seen_count, violating)
