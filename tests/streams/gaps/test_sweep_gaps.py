"""The sweep in a worker: holes in the stored bars that no stream saw (bars deleted by hand) are
recorded as `sweep` gaps and queued, and /stats/cadence reports expected against seen windows
with the continuity SLO."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from conftest import eventually

from connectors.universe import parse_universe, store_universe
from shared.models import Bar
from streams.sink.timescale import BarWriter

MINUTE_US = 60_000_000
UNIVERSE = """symbol,exchange,asset_type,tier,active,providers
BTC-USD,CRYPTO,crypto,T0,true,alpaca
ETH-USD,CRYPTO,crypto,T0,true,alpaca
"""


def cadence(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/stats/cadence", timeout=5) as response:
        body: dict[str, Any] = orjson.loads(response.read())
    return body


async def test_sweep_records_holes_in_stored_bars_and_reports_cadence(
    database_url: str, start_worker: Callable[..., Any]
) -> None:
    store_universe(database_url, parse_universe(UNIVERSE, "test"), "test")
    now_us = time.time_ns() // 1000
    first = now_us - now_us % MINUTE_US - 120 * MINUTE_US  # two hours back
    deleted = range(60, 70)  # ten minutes the database lost
    # ETH-USD's hole runs across the start of the sweep's 1.5 h horizon (88 to 92 minutes
    # back): where it begins is not the sweep's to say, so it records none of it
    across = range(20, 40)
    bars = [
        Bar(symbol, "1m", first + m * MINUTE_US, 0, 97_000.0, 97_050.0, 96_990.0, 97_010.0,
            3.5, 97_020.0, 41, 2.0, 1.5, "alpaca", first + m * MINUTE_US + 59_000_000, now_us)
        for symbol, lost in (("BTC-USD", deleted), ("ETH-USD", across))
        for m in range(135)  # into the next quarter hour: however late the worker's sweep runs
        if m not in lost
    ]  # fmt: skip
    writer = BarWriter(database_url)
    try:
        await writer.write(bars)
    finally:
        await writer.close()

    worker = start_worker(
        MS_WORKER_AGENTS="detect_gaps", MS_GAPS_SWEEP_INTERVAL_S="1", MS_GAPS_SWEEP_HOURS="1.5"
    )

    await eventually(lambda: cadence(worker.url)["cadence"], 60, "a sweep")
    (row,) = cadence(worker.url)["cadence"]
    assert (row["tier"], row["interval"], row["instruments"], row["gaps"]) == ("T0", "1m", 2, 2)
    assert 180 <= row["expected"] <= 182  # the horizon's 1.5 h, twice
    assert 0 < row["slo_gap_violation_rate"] < 1
    with psycopg.connect(database_url) as conn:
        gaps = conn.execute(
            "select instrument, extract(epoch from start_ts) * 1e6, extract(epoch from end_ts) * 1e6,"
            " cause, status from gaps"
        ).fetchall()
    assert gaps == [("BTC-USD", first + 60 * MINUTE_US, first + 70 * MINUTE_US, "sweep", "queued")]
    await writer.close()
