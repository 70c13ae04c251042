"""`python -m streams topics create|describe` against the real broker."""

from __future__ import annotations

import orjson
from conftest import run_module

from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import free_port


def test_topics_create_twice_is_idempotent_and_describe_shows_partitions_and_retention(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    env = {"MS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "MS_KAFKA_TRADES_PARTITIONS": "4"}
    try:
        first = run_module(["streams", "topics", "create"], env)
        second = run_module(["streams", "topics", "create"], env)
        described = run_module(["streams", "topics", "describe"], env)
    finally:
        stop_broker(broker)

    assert first.returncode == 0 and "md.trades.v1" in first.stdout.splitlines()[0]
    assert second.returncode == 0 and "none (all exist)" in second.stdout
    topics = {t["topic"]: t for t in map(orjson.loads, described.stdout.splitlines())}
    assert set(topics) == {
        "md.trades.v1",
        "md.bars.v1",
        "md.bars.batch.v1",
        "md.quotes.v1",
        "md.provider_bars.v1",
        "md.fundamentals.v1",
        "md.feed_events.v1",
        "md.gaps.v1",
        "md.statuses.v1",
        "md.listings.v1",
        "md.pm_prices.v1",
        "md.matches.v1",
        "md.arbitrage.v1",
        "md.dlq.v1",
    }
    assert topics["md.trades.v1"]["partitions"] == 4
    assert topics["md.trades.v1"]["configs"]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert topics["md.dlq.v1"]["configs"]["cleanup.policy"] == "delete"
    assert topics["md.fundamentals.v1"]["configs"]["cleanup.policy"] == "compact"
    assert topics["md.gaps.v1"]["partitions"] == 4
    assert topics["md.gaps.v1"]["configs"]["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert topics["md.gaps.v1"]["configs"]["cleanup.policy"] == "delete"
    assert topics["md.listings.v1"]["partitions"] == 3
    assert topics["md.listings.v1"]["configs"]["cleanup.policy"] == "compact"
    assert topics["md.pm_prices.v1"]["partitions"] == 3
    assert topics["md.pm_prices.v1"]["configs"]["cleanup.policy"] == "delete"
