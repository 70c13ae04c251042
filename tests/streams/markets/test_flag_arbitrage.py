"""`flag_arbitrage` in a worker beside `match_markets`: crafted asks on a matched pair open an
Arbitrage with the edge after Kalshi's fee, fees that eat the edge close it with its lifetime,
and a pair a person marked inverted buys Polymarket's Yes as the NO leg."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import orjson
import psycopg
from conftest import RunningWorker, eventually, read_topic
from pm_fixtures import (
    BTC_K,
    BTC_P,
    BTC_PAIR,
    NAN,
    RECEIVED_US,
    TEMP_K,
    TEMP_P,
    TEMP_PAIR,
    pairs,
    publish_listings,
    publish_prices,
)

from shared.codec import Codec
from shared.models import ArbitrageDirection
from shared.publisher import Publisher
from shared.topics import ARBITRAGE

OPS_KEY = "ops-key-77c1"
ENV = {"MS_WORKER_AGENTS": "match_markets,flag_arbitrage", "MS_ARB_PAIRS_RELOAD_S": "0.3"}
COLUMNS = (
    "pair, direction, yes_venue, yes_outcome, yes_price, no_venue, no_outcome, no_price,"
    " contracts, edge, extract(epoch from opened_at) * 1e6, closed_at is not null, lifetime_s"
)


def arbitrage(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"select {COLUMNS} from arbitrage order by id").fetchall()


async def test_flag_arbitrage_opens_with_the_edge_after_fees_and_closes_with_a_lifetime(
    bootstrap: str, database_url: str, codec: Codec, start_worker: Callable[..., RunningWorker]
) -> None:
    # Arrange: a matched pair
    start_worker(**ENV)
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publish_listings(publisher, codec, BTC_K, BTC_P)
    await eventually(lambda: BTC_PAIR in pairs(database_url), what="the pair matched")
    opened_us, moved_us = RECEIVED_US + 5_000_000, RECEIVED_US + 17_250_000

    # Act: Kalshi Yes at 0.40 and Polymarket No at 0.52 cost 0.92 before fees
    publish_prices(publisher, codec, "polymarket", BTC_P.market_id,
                   {"Yes": (0.49, 250.0), "No": (0.52, 250.0)}, opened_us)  # fmt: skip
    publish_prices(publisher, codec, "kalshi", BTC_K.market_id,
                   {"Yes": (0.40, 100.0), "No": (0.62, 100.0)}, opened_us)  # fmt: skip
    await eventually(lambda: arbitrage(database_url), what="an arbitrage opened")

    # Assert: 100 contracts (the smaller size); Kalshi's fee ceil(0.07 x 100 x 0.4 x 0.6) =
    # $1.68, Polymarket's 0: edge 1 - 0.92 - 0.0168; the other direction costs 1.11
    [row] = arbitrage(database_url)
    assert row[:9] == (BTC_PAIR, "yes_a_no_b", "kalshi", "Yes", 0.40, "polymarket", "No", 0.52,
                       100.0)  # fmt: skip
    assert abs(float(row[9]) - 0.0632) < 1e-9  # type: ignore[arg-type]
    assert round(float(row[10])) == opened_us and row[11:] == (False, None)  # type: ignore[arg-type]

    # Act: Kalshi's Yes moves to 0.47: 0.99 before fees, -0.0075 after ($1.75 on 100)
    publish_prices(publisher, codec, "kalshi", BTC_K.market_id,
                   {"Yes": (0.47, 100.0), "No": (0.55, 100.0)}, moved_us)  # fmt: skip
    await eventually(lambda: arbitrage(database_url)[0][11], what="the arbitrage closed")

    # Assert: closed at the prices' time, with its lifetime; both records on the topic
    [row] = arbitrage(database_url)
    assert row[11:] == (True, 12.25)
    records = [codec.decode_arbitrage(m.value()) for m in read_topic(
        bootstrap, ARBITRAGE, lambda ms: len(ms) >= 2)]  # fmt: skip
    assert [(r.direction, r.closed_at_us, r.lifetime_s) for r in records] == [
        (ArbitrageDirection.YES_A_NO_B, None, None),
        (ArbitrageDirection.YES_A_NO_B, moved_us, 12.25),
    ]
    assert abs(records[0].edge - 0.0632) < 1e-9 and records[0].yes_leg.fee == 1.68


async def test_flag_arbitrage_inverted_pair_buys_the_other_venues_yes_as_no(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    start_api: Callable[..., str],
) -> None:
    # Arrange: the review pair, accepted by a person as inverted
    start_worker(**ENV)
    api = start_api(database_url, MS_API_OPS_KEYS=OPS_KEY)
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publish_listings(publisher, codec, TEMP_K, TEMP_P)
    await eventually(lambda: TEMP_PAIR in pairs(database_url), what="the pair stored")
    request = urllib.request.Request(
        f"{api}/ops/matches/{pairs(database_url)[TEMP_PAIR][0]}",
        data=orjson.dumps({"decision": "match", "inverted": True}),
        method="POST",
        headers={"X-API-Key": OPS_KEY},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert orjson.loads(response.read())["inverted"] is True
    at_us = RECEIVED_US + 3_000_000

    # Act: read straight, these asks are no arbitrage (0.30 + 0.70, 0.72 + 0.35); inverted,
    # Kalshi Yes 0.30 and Polymarket Yes (the Kalshi question's NO) 0.35 are
    publish_prices(publisher, codec, "kalshi", TEMP_K.market_id,
                   {"Yes": (0.30, 10.0), "No": (0.72, 10.0)}, at_us)  # fmt: skip
    publish_prices(publisher, codec, "polymarket", TEMP_P.market_id,
                   {"Yes": (0.35, NAN), "No": (0.70, NAN)}, at_us)  # fmt: skip
    await eventually(lambda: arbitrage(database_url), what="an arbitrage opened")

    # Assert: 10 contracts (Polymarket's size unknown): Kalshi's fee ceil(14.7 cents) = $0.15
    [row] = arbitrage(database_url)
    assert row[:9] == (TEMP_PAIR, "yes_a_no_b", "kalshi", "Yes", 0.30, "polymarket", "Yes", 0.35,
                       10.0)  # fmt: skip
    assert abs(float(row[9]) - (1 - 0.65 - 0.015)) < 1e-9  # type: ignore[arg-type]
