"""One request budget per provider, shared by everything that calls it, in priority order.

Providers state their limits as "N requests per window" (FMP: 120 a minute; Alpha Vantage: 5
a minute and 25 a day on its free plan) and count them over a sliding window, so the budget
does too: a request is granted once, for every limit, fewer than N were granted in the last
window. (A token bucket of N refilling at N per window would allow nearly 2N in a window
after an idle one, and earn a 429.) Waiting callers are served lowest `Priority` first (live
polling, then listings, then backfill), first come first served within one. `defer` holds
every caller back until a time the provider named (HTTP 429 with Retry-After, a quota note in
a 200 body), and an outage of a day's quota waits for the day.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

# Our clock reads the send; the provider's the arrival, later by a varying delay: a little
# slack keeps two sends one window apart from arriving less than a window apart.
GUARD_S: Final = 0.25


class Priority(enum.IntEnum):
    LIVE = 0
    LISTINGS = 1
    BACKFILL = 2


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` requests in any `window_s` seconds."""

    count: int
    window_s: float

    def __str__(self) -> str:
        return f"{self.count} per {self.window_s:g} s"


class RequestBudget:
    """Grant requests within every limit, in priority order; `defer` on the provider's word."""

    def __init__(self, provider: str, limits: list[Limit]) -> None:
        self.provider = provider
        self.limits = limits
        self.granted = 0
        self._grants = [deque[float]() for _ in limits]
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._deferred_until_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, priority: Priority = Priority.LIVE) -> None:
        """Wait until a request of this priority may be sent, and count it as sent."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(priority), next(self._order), future))
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._ungrant()  # granted as it was cancelled: give the request back
            raise

    def defer(self, seconds: float) -> None:
        """Send nothing for `seconds` (a 429's Retry-After, a quota note)."""
        self._deferred_until_s = max(self._deferred_until_s, time.monotonic() + seconds)
        self._grant()

    @property
    def waiting(self) -> int:
        return sum(not f.done() for _, _, f in self._waiting)

    def used(self, limit: int = 0) -> int:
        """Requests granted within the window of `self.limits[limit]`."""
        self._expire(time.monotonic())
        return len(self._grants[limit])

    def _next_free_s(self, now: float) -> float:
        """When the next request may go: now, or later."""
        self._expire(now)
        at = max(now, self._deferred_until_s)
        for limit, grants in zip(self.limits, self._grants, strict=True):
            if len(grants) >= limit.count:
                at = max(at, grants[len(grants) - limit.count] + limit.window_s + GUARD_S)
        return at

    def _expire(self, now: float) -> None:
        for limit, grants in zip(self.limits, self._grants, strict=True):
            while grants and grants[0] + limit.window_s + GUARD_S <= now:
                grants.popleft()

    def _grant(self) -> None:
        """Grant the head of the queue while the limits allow; else wake up when they will."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            _, _, future = self._waiting[0]
            if future.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
                continue
            now = time.monotonic()
            at = self._next_free_s(now)
            if at > now:
                delay = at - now
                if math.isfinite(delay):
                    self._timer = asyncio.get_running_loop().call_later(delay, self._grant)
                return
            heapq.heappop(self._waiting)
            for grants in self._grants:
                grants.append(now)
            self.granted += 1
            future.set_result(None)

    def _ungrant(self) -> None:
        for grants in self._grants:
            if grants:
                grants.pop()
        self.granted -= 1
        self._grant()
