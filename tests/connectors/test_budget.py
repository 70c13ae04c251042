"""The shared request budget: never more than a limit in any window, priority order, defer."""

from __future__ import annotations

import asyncio
import time

from connectors.budget import GUARD_S, Limit, Priority, RequestBudget


async def test_budget_never_grants_more_than_the_limit_in_any_window() -> None:
    # Arrange: 5 requests per 0.4 s, 12 callers at once
    budget = RequestBudget("fmp", [Limit(5, 0.4)])
    granted: list[float] = []

    async def call() -> None:
        await budget.acquire(Priority.LISTINGS)
        granted.append(time.monotonic())

    # Act
    async with asyncio.timeout(10):
        await asyncio.gather(*(call() for _ in range(12)))

    # Assert: 12 granted; any 6 consecutive grants span more than the window
    assert len(granted) == 12 and budget.granted == 12
    assert all(b - a >= 0.4 for a, b in zip(granted, granted[5:], strict=False))
    assert granted[-1] - granted[0] < 2 * (0.4 + GUARD_S) + 0.3  # and no slower than needed


async def test_budget_serves_live_before_backfill_whatever_came_first() -> None:
    budget = RequestBudget("alphavantage", [Limit(1, 0.2)])
    await budget.acquire()  # the window is full
    order: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        await budget.acquire(priority)
        order.append(name)

    async with asyncio.timeout(10):
        backfill = asyncio.ensure_future(call("backfill", Priority.BACKFILL))
        await asyncio.sleep(0)
        live = asyncio.ensure_future(call("live", Priority.LIVE))
        await asyncio.gather(backfill, live)

    assert order == ["live", "backfill"]


async def test_budget_defer_holds_every_caller_until_the_provider_says() -> None:
    budget = RequestBudget("fmp", [Limit(100, 60)])
    budget.defer(0.3)  # a 429 with Retry-After
    started = time.monotonic()

    async with asyncio.timeout(10):
        await budget.acquire()

    assert time.monotonic() - started >= 0.3


async def test_budget_two_limits_the_tighter_one_decides() -> None:
    # Arrange: a daily quota of 3 inside a generous per-minute one
    budget = RequestBudget("alphavantage", [Limit(5, 60), Limit(3, 86_400)])
    for _ in range(3):
        await budget.acquire()

    # Act: a fourth waits for the day
    fourth = asyncio.ensure_future(budget.acquire())
    await asyncio.sleep(0.2)

    # Assert
    assert not fourth.done() and budget.waiting == 1 and budget.used(1) == 3
    fourth.cancel()
    await asyncio.gather(fourth, return_exceptions=True)
    assert budget.waiting == 0
