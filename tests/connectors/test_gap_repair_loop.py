"""The closed loop, end to end: a T0 name's live feed drops for ten minutes in session; the
detector raises the gap, the backfill fetches the span from the (fake) provider's history, and
the stored 1m, 5m and 1h bars of the whole period equal the reference, no bar missing."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
from conftest import RunningWorker, eventually
from test_backfill_worker import (
    GAP_END_US,
    GAP_START_US,
    INTERVALS,
    SPAN,
    Backfill,
    FlakyAlpacaRest,
    jobs,
    reference,
    stored,
)
from test_backfill_worker import aconn as aconn  # fixtures
from test_backfill_worker import db as db
from test_backfill_worker import fake as fake
from test_backfill_worker import start_backfill as start_backfill

from connectors.fakes.alpaca_rest import trades_in
from connectors.universe import UniverseRow, store_universe
from shared.codec import Codec
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.times import rfc3339, time_of
from shared.topics import TRADES

HOUR_US = 3_600_000_000
VALUES = (
    "select interval, ts, open, high, low, close, volume, trade_count from candles_intraday"
    " where symbol = %s order by interval, ts"
)


def full_feed(bootstrap: str, codec: Codec) -> int:
    return live_feed(bootstrap, codec, dropped=False)


def live_feed(bootstrap: str, codec: Codec, *, dropped: bool = True) -> int:
    """Publish the fake's trades of the span as the live `alpaca` feed, but (if `dropped`)
    for the ten minutes it was down; return how many went out."""
    tape = trades_in("AAPL", SPAN[0] * 1000, (SPAN[1] - 1) * 1000, crypto=False)
    ts_us = tape.ts_ns // 1000
    heard = (ts_us < GAP_START_US) | (ts_us >= GAP_END_US) | (not dropped)
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    partition = partition_for("AAPL", 3)
    now_us = time.time_ns() // 1000
    for chunk in np.array_split(np.flatnonzero(heard), 12):  # five minutes a message
        batch = TradeBatch(
            source="alpaca",
            instruments=("AAPL",),
            instrument_index=np.zeros(len(chunk), np.int32),
            ts_event_us=ts_us[chunk],
            ts_recv_us=np.full(len(chunk), now_us, np.int64),
            price=tape.price[chunk],
            size=tape.size[chunk],
            watermark_us=int(ts_us[chunk].max()),
        )
        publisher.produce(TRADES, codec.encode_trade_batch(batch), key=b"AAPL", partition=partition)
    closing = TradeBatch.heartbeat("alpaca", SPAN[1] + HOUR_US)  # every live window closes
    publisher.produce(TRADES, codec.encode_trade_batch(closing), partition=partition)
    publisher.flush()
    return int(heard.sum())


async def test_a_dropped_feed_is_found_fetched_and_its_bars_equal_the_reference(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    fake: FlakyAlpacaRest,
    db: psycopg.Connection[Any],
    start_worker: Callable[..., RunningWorker],
    start_backfill: Callable[..., Backfill],
    tmp_path: Path,
) -> None:
    row = UniverseRow("AAPL", "NASDAQ", "stock", "T0", True, ("alpaca",))
    store_universe(database_url, [row], "test_gap_repair_loop")
    intervals = ",".join(INTERVALS)
    start_worker("bars", MS_WORKER_AGENTS="aggregate_bars", MS_BARS_INTERVALS=intervals)
    start_worker(
        "sink",
        MS_WORKER_AGENTS="sink_bars,detect_gaps",
        MS_BARS_INTERVALS=intervals,
        MS_WORKER_DATA_DIR=str(tmp_path / "sink"),
    )
    start_backfill()
    expected = reference("AAPL", *SPAN)

    assert live_feed(bootstrap, codec) > 500

    def repaired() -> bool:
        gaps = db.execute("select start_ts, end_ts, cause, status from gaps").fetchall()
        return bool(gaps) and gaps[0][3] == "repaired" and stored(db, "AAPL")[0] == expected

    await eventually(repaired, timeout_s=90, what="the gap found, fetched and its bars stored")
    ((start, end, cause, _),) = db.execute("select start_ts, end_ts, cause, status from gaps")
    assert (start.timestamp() * 1e6, end.timestamp() * 1e6, cause) == (
        GAP_START_US,
        GAP_END_US,
        "silence",
    )
    bars, sources = stored(db, "AAPL")
    assert {name: sum(k[0] == name for k in bars) for name in INTERVALS} == {
        "1m": 60,
        "5m": 12,
        "1h": 1,
    }
    assert sources == {f"backfill:{job}" for job in jobs(db)}  # the whole hour, replaced


def queue_depth(worker_url: str) -> float:
    text = urllib.request.urlopen(f"{worker_url}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("backfill_queue_depth{")
    )


async def test_runbook_deleted_candles_come_back_identical_after_an_ops_backfill(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    fake: FlakyAlpacaRest,
    db: psycopg.Connection[Any],
    start_worker: Callable[..., RunningWorker],
    start_backfill: Callable[..., Backfill],
    start_api: Callable[..., str],
    tmp_path: Path,
) -> None:
    intervals = ",".join(INTERVALS)
    start_worker("bars", MS_WORKER_AGENTS="aggregate_bars", MS_BARS_INTERVALS=intervals)
    sink = start_worker(
        "sink",
        MS_WORKER_AGENTS="sink_bars,detect_gaps",
        MS_BARS_INTERVALS=intervals,
        MS_WORKER_DATA_DIR=str(tmp_path / "sink"),
    )
    api = start_api(database_url, MS_API_OPS_KEYS="ops-7d1e")
    expected = reference("AAPL", *SPAN)
    full_feed(bootstrap, codec)
    await eventually(lambda: stored(db, "AAPL")[0] == expected, 60, "the live bars stored")
    before = db.execute(VALUES, ("AAPL",)).fetchall()

    # the runbook: a 10-minute window of candles deleted by hand, then a backfill asked for
    deleted = db.execute(
        "delete from candles_intraday where symbol = 'AAPL' and ts >= %s and ts < %s",
        (time_of(GAP_START_US), time_of(GAP_END_US)),
    ).rowcount
    body = {
        "instrument": "AAPL",
        "interval": "1m",
        "start": rfc3339(GAP_START_US),
        "end": rfc3339(GAP_END_US),
        "priority": 0,
        "provider": "alpaca",
    }
    request = urllib.request.Request(
        f"{api}/ops/backfill",
        data=orjson.dumps(body),
        method="POST",
        headers={"Authorization": "Bearer ops-7d1e"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202

    await eventually(lambda: queue_depth(sink.url) > 0, 30, "the job seen in the queue depth")
    start_backfill()
    await eventually(
        lambda: queue_depth(sink.url) == 0 and db.execute(VALUES, ("AAPL",)).fetchall() == before,
        60,
        "the queue drained and the candles back",
    )
    assert deleted == 12  # ten 1m bars and the two 5m bars that start in the window
