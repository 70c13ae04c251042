"""The verdict of `/health/detailed`, from the parts' outcomes alone (no broker, no database)."""

from __future__ import annotations

from gateways.health_detailed import Outcome, Status, assess
from shared.kafka_admin import PartitionLag

OK = Outcome(None, 1.5)
NO_AGES = {"T0": 0.0, "T1": 0.0, "T2": 0.0}


def lag_row(lag: int | None, partition: int = 0) -> PartitionLag:
    committed = None if lag is None else 1_204_311
    end = 1_204_311 + (lag or 0)
    return PartitionLag(
        "marketstream", "md.trades.v1", partition, committed, end, lag, None, None, None, 1
    )


def verdict(
    *,
    broker: Outcome = OK,
    database: Outcome = OK,
    lags: Outcome | None = None,
    ages: Outcome | None = None,
    providers: Outcome | None = None,
):  # type: ignore[no-untyped-def]
    return assess(
        broker=broker,
        database=database,
        lags=lags or Outcome([lag_row(12)], 3.0),
        backfill_ages_s=ages or Outcome(NO_AGES, 2.0),
        max_lag=1000,
        max_backfill_age_s=900.0,
        providers=providers,
    )


def test_assess_with_everything_within_thresholds_is_healthy() -> None:
    result = verdict(lags=Outcome([lag_row(1000), lag_row(None, 1)], 3.0))

    assert (result.status, result.reasons) == (Status.HEALTHY, ())


def test_assess_with_one_partition_over_max_lag_is_degraded_naming_it() -> None:
    result = verdict(lags=Outcome([lag_row(3), lag_row(1001, 4)], 3.0))

    assert result.status is Status.DEGRADED
    assert result.reasons == (
        "group marketstream is 1001 messages behind on md.trades.v1[4] (more than 1000)",
    )


def test_assess_with_t0_backfill_older_than_max_is_degraded() -> None:
    result = verdict(ages=Outcome(NO_AGES | {"T0": 900.5}, 2.0))

    assert result.status is Status.DEGRADED
    assert result.reasons == ("oldest open T0 backfill job is 900 s old (more than 900 s)",)


def test_assess_with_only_lower_tiers_backfill_old_is_healthy() -> None:
    result = verdict(ages=Outcome(NO_AGES | {"T1": 86_400.0, "T2": 86_400.0}, 2.0))

    assert result.status is Status.HEALTHY


def test_assess_with_lag_unreadable_but_broker_up_is_degraded() -> None:
    result = verdict(lags=Outcome(None, 2000.0, "no answer within 2 s"))

    assert result.status is Status.DEGRADED
    assert result.reasons == ("consumer lag unknown: no answer within 2 s",)


def test_assess_with_broker_unreachable_is_down_without_blaming_the_lag() -> None:
    result = verdict(
        broker=Outcome(None, 2000.0, "no answer within 2 s"),
        lags=Outcome(None, 2000.0, "no answer within 2 s"),
    )

    assert result.status is Status.DOWN
    assert result.reasons == ("broker unreachable: no answer within 2 s",)


def test_assess_with_database_unreachable_is_down_even_when_lag_is_over() -> None:
    result = verdict(
        database=Outcome(None, 12.0, "OperationalError: connection refused"),
        lags=Outcome([lag_row(5000)], 3.0),
        ages=Outcome(None, 12.0, "OperationalError: connection refused"),
    )

    assert result.status is Status.DOWN
    assert result.reasons[0] == "database unreachable: OperationalError: connection refused"
    assert len(result.reasons) == 2  # the lag still listed; the queue's failure is the database's


def test_assess_with_a_provider_down_or_its_breaker_open_is_degraded() -> None:
    rows = [
        {"process": "failover", "provider": "finnhub", "state": "open", "health_score": 0.1},
        {"process": "failover", "provider": "alpaca", "state": "closed", "health_score": 0.98},
        {"process": "alpaca", "provider": "alpaca", "state": "down", "trades": 0},
        {"process": "simulator", "provider": "simulator", "state": "streaming"},
    ]

    result = verdict(providers=Outcome(rows, 12.0))

    assert result.status is Status.DEGRADED
    assert result.reasons == (
        "provider finnhub of failover is open",
        "provider alpaca of alpaca is down",
    )
