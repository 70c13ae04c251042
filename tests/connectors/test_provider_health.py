"""Provider health scores over their window, and the circuit breaker's states."""

from __future__ import annotations

import pytest

from connectors.health import BreakerState, CircuitBreaker, ProviderHealth


class Clock:
    """Monotonic seconds that the test moves."""

    def __init__(self) -> None:
        self.now = 86_400.0

    def __call__(self) -> float:
        return self.now


def test_health_score_falls_with_errors_and_recovers_as_they_leave_the_window() -> None:
    clock = Clock()
    health = ProviderHealth(window_s=60, stale_after_s=30, clock=clock)
    for _ in range(6):
        health.success(latency_s=0.2)
        health.data()
    for _ in range(2):
        health.failure("http_401")

    assert health.error_rate == pytest.approx(0.25)
    assert health.score == pytest.approx(0.75)
    clock.now += 61
    health.success(latency_s=0.2)
    health.data()
    assert health.score == 1.0 and health.errors == {"http_401": 2}


def test_health_score_counts_slow_answers_and_stale_data() -> None:
    clock = Clock()
    health = ProviderHealth(window_s=60, latency_budget_s=1.0, stale_after_s=30, clock=clock)
    health.success(latency_s=4.0)
    health.data()
    assert health.score == pytest.approx(0.25)  # four times the budget

    clock.now += 45  # data half the stale limit past it; the slow answer still in the window
    assert health.staleness_s == 45
    assert health.score == pytest.approx(0.25 * 0.5)
    clock.now += 30  # twice the stale limit: nothing fresh; the slow answer has left
    assert health.score == 0.0


def test_breaker_opens_after_threshold_probes_half_open_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_s=10, clock=clock)
    breaker.failure("reset")
    breaker.failure("reset")
    assert breaker.state is BreakerState.CLOSED and breaker.may_try()

    breaker.failure("reset")
    assert breaker.state is BreakerState.OPEN and not breaker.may_try()
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN and breaker.may_try()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


def test_breaker_fatal_failure_opens_at_once_and_a_failed_probe_doubles_the_wait() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_s=10, max_open_s=25, clock=clock)
    breaker.failure("finnhub refused the key (HTTP 401)", fatal=True)
    assert breaker.state is BreakerState.OPEN and "401" in breaker.reason

    clock.now += 10
    breaker.failure("finnhub refused the key (HTTP 401)", fatal=True)  # the probe
    assert breaker.state is BreakerState.OPEN and breaker.open_s == 20
    clock.now += 19.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    breaker.failure("again", fatal=True)
    assert breaker.open_s == 25  # capped
