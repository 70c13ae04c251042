"""The latest trade and quote of each instrument: `track_prices` keeps them in the database, and
`GET /stocks/{symbol}/price` serves them with their provider and age, behind an API key."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from conftest import eventually, http_request

from shared.codec import Codec
from shared.models import QuoteBatch, Trade, TradeBatch
from shared.publisher import Publisher
from shared.topics import QUOTES, TRADES
from streams.prices.core import latest_rows

KEY = "read-key-7f3a"
T0 = 1_764_945_000_000_000  # 2025-12-05 14:30 UTC


def test_latest_rows_pick_each_instruments_latest_event_and_the_last_of_equals() -> None:
    index = np.array([0, 1, 0, 0, 2, 1], dtype=np.int32)
    ts = np.array([T0 + 5, T0 + 9, T0 + 7, T0 + 7, T0, T0 + 3], dtype=np.int64)

    assert latest_rows(index, ts).tolist() == [3, 1, 4]
    assert latest_rows(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)).tolist() == []


def get(url: str, key: str | None = KEY) -> tuple[int, Any]:
    answer = http_request(url, key=key)
    return answer.status, answer.json()


def publish(bootstrap: str, codec: Codec, trades: TradeBatch, *quotes: QuoteBatch) -> None:
    """One partition for all: each agent sees them in the order published."""
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(TRADES, codec.encode_trade_batch(trades), key=b"AAPL", partition=0)
    for batch in quotes:
        publisher.produce(QUOTES, codec.encode_quote_batch(batch), key=b"AAPL", partition=0)
    publisher.flush()


def quote(ts_us: int, bid: float, ask: float, instrument: str = "AAPL") -> QuoteBatch:
    return QuoteBatch(
        "failover",
        (instrument,),
        np.zeros(1, dtype=np.int32),
        np.array([ts_us], dtype=np.int64),
        np.array([ts_us + 800], dtype=np.int64),
        np.array([bid]),
        np.array([300.0]),
        np.array([ask]),
        np.array([200.0]),
        provider="alpaca",
    )


async def test_price_endpoint_serves_the_latest_trade_and_quote_and_never_rolls_back(
    bootstrap: str,
    codec: Codec,
    database_url: str,
    start_worker: Callable[..., object],
    start_api: Callable[..., str],
) -> None:
    start_worker(MS_WORKER_AGENTS="track_prices")
    api = start_api(database_url, MS_API_KEYS=f"other,{KEY}")
    now_us = time.time_ns() // 1000
    trades = TradeBatch.from_trades(
        "failover",
        [
            Trade("AAPL", now_us - 3_000_000, 187.25, 100.0),
            Trade("AAPL", now_us - 1_000_000, 187.31, 40.0),  # the latest
            Trade("AAPL", now_us - 2_000_000, 187.28, 10.0),  # arrives last, happened earlier
            Trade("MSFT", now_us - 2_000_000, 411.50, 5.0),
        ],
        ts_recv_us=now_us,
    )
    publish(
        bootstrap,
        codec,
        dataclasses.replace(trades, provider="finnhub"),
        quote(now_us, 187.30, 187.33),
    )

    price_url = f"{api}/stocks/AAPL/price"
    await eventually(lambda: get(price_url)[0] == 200 and get(price_url)[1]["quote"], 60, "a price")
    status, body = get(price_url)

    assert status == 200 and body["symbol"] == "AAPL"
    trade = body["trade"]
    assert (trade["price"], trade["size"], trade["provider"], trade["source"]) == (
        187.31,
        40.0,
        "finnhub",
        "failover",
    )
    assert trade["ts_event_us"] == now_us - 1_000_000 and trade["ts"].endswith("Z")
    assert 1.0 <= trade["age_s"] < 60
    assert body["quote"]["bid_price"] == 187.30 and body["quote"]["provider"] == "alpaca"

    # an older AAPL trade beside a newer MSFT one, and an older quote: only MSFT moves
    older = TradeBatch.from_trades(
        "replay",
        [Trade("AAPL", now_us - 60_000_000, 150.0, 1.0), Trade("MSFT", now_us, 412.0, 7.0)],
        ts_recv_us=now_us,
    )
    publish(
        bootstrap,
        codec,
        older,
        quote(now_us - 60_000_000, 150.0, 150.1),
        quote(now_us, 411.9, 412.1, "MSFT"),  # after the old AAPL quote: seen, it was too
    )
    msft_url = f"{api}/stocks/MSFT/price"

    def msft_moved() -> bool:
        body = get(msft_url)[1]
        return body["trade"]["price"] == 412.0 and (body["quote"] or {}).get("bid_price") == 411.9

    await eventually(msft_moved, 30, "MSFT's new trade and quote")
    status, body = get(price_url)
    assert body["trade"]["price"] == 187.31 and body["quote"]["bid_price"] == 187.30

    assert get(f"{api}/stocks/ZZZZ/price")[0] == 404
    assert get(f"{api}/stocks/{'A' * 65}/price")[0] == 400
    for key in (None, "wrong"):
        status, body = get(price_url, key)
        assert status == 401 and body == {"error": "unknown or missing API key"}
