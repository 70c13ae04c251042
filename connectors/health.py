"""A provider's health over a sliding window, and a circuit breaker over its failures.

The score (0 to 1) multiplies three signals of the last `window_s`: the share of requests and
sessions that succeeded, how fast answers came against a latency budget, and how long ago data
last arrived against the stale limit. The breaker is the usual closed / open / half-open
machine, driven by outcomes as they are reported (a feed's failures arrive as events, not as
calls one could wrap, which is what pybreaker and aiobreaker decorate): `failure_threshold`
failures in a row, or one fatal failure, open it; after `open_s` it lets one probe through
(half-open); the probe's success closes it, its failure opens it for twice as long (up to
`max_open_s`).
"""

from __future__ import annotations

import enum
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

Clock = Callable[[], float]
IDEAL_SCORE: Final = 1.0


class BreakerState(enum.IntEnum):
    """As the `provider_circuit_state` metric reports it."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class _Outcome:
    at_s: float
    ok: bool
    latency_s: float | None


class ProviderHealth:
    """Outcomes of the last `window_s` seconds, the errors by kind ever, and the last data."""

    def __init__(
        self,
        window_s: float = 60.0,
        latency_budget_s: float = 1.0,
        stale_after_s: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.latency_budget_s = latency_budget_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.errors: Counter[str] = Counter()
        self._outcomes: deque[_Outcome] = deque()
        self._data_at_s: float | None = None

    def success(self, latency_s: float | None = None) -> None:
        self._outcomes.append(_Outcome(self.clock(), True, latency_s))

    def failure(self, kind: str) -> None:
        self.errors[kind] += 1
        self._outcomes.append(_Outcome(self.clock(), False, None))

    def session_started(self) -> None:
        """A session began: a provider that never delivers grows stale from here."""
        if self._data_at_s is None:
            self._data_at_s = self.clock()

    def data(self) -> None:
        """Data arrived (a trade, a heartbeat of the provider's own)."""
        self._data_at_s = self.clock()

    @property
    def staleness_s(self) -> float | None:
        """Seconds since data last arrived; None before any."""
        return None if self._data_at_s is None else self.clock() - self._data_at_s

    @property
    def error_rate(self) -> float:
        recent = self._recent()
        return sum(not o.ok for o in recent) / len(recent) if recent else 0.0

    @property
    def score(self) -> float:
        """1 is healthy: every outcome ok, answers within budget, data within the stale limit."""
        recent = self._recent()
        latencies = [o.latency_s for o in recent if o.latency_s is not None]
        speed = 1.0
        if latencies:
            speed = min(1.0, self.latency_budget_s / max(sum(latencies) / len(latencies), 1e-9))
        freshness = 1.0
        staleness = self.staleness_s
        if staleness is not None and staleness > self.stale_after_s:
            freshness = max(0.0, 2.0 - staleness / self.stale_after_s)
        return (1.0 - self.error_rate) * speed * freshness

    def _recent(self) -> deque[_Outcome]:
        horizon = self.clock() - self.window_s
        while self._outcomes and self._outcomes[0].at_s < horizon:
            self._outcomes.popleft()
        return self._outcomes


class CircuitBreaker:
    """Closed / open / half-open over reported outcomes."""

    def __init__(
        self,
        failure_threshold: int = 3,
        open_s: float = 30.0,
        max_open_s: float = 600.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self.clock = clock
        self.open_s = open_s
        self.failures = 0  # in a row
        self.opened_at_s: float | None = None
        self.reason = ""

    @property
    def state(self) -> BreakerState:
        if self.opened_at_s is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at_s >= self.open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def may_try(self) -> bool:
        """Whether a session may be opened now: closed, or half-open (the probe)."""
        return self.state is not BreakerState.OPEN

    def success(self) -> None:
        self.failures = 0
        self.opened_at_s = None
        self.open_s = self.base_open_s
        self.reason = ""

    def failure(self, reason: str, *, fatal: bool = False) -> None:
        self.failures += 1
        self.reason = reason
        if self.state is BreakerState.HALF_OPEN:  # the probe failed
            self.open_s = min(self.max_open_s, self.open_s * 2)
            self.opened_at_s = self.clock()
        elif self.opened_at_s is None and (fatal or self.failures >= self.failure_threshold):
            self.opened_at_s = self.clock()
