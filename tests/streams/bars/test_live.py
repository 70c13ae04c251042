"""In live mode a quiet instrument's bar closes on time: heartbeats carry the source's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

from conftest import RunningWorker, read_topic

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.models import Trade
from shared.publisher import Publisher
from shared.topics import BARS

GRACE_S = 2.0


class OneTradeThenQuiet(Connector):
    """A live feed that reports one trade now and then nothing, like an illiquid instrument."""

    name: ClassVar[str] = "quietfeed"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        yield Trade("QUIET", time.time_ns() // 1000, 12.5, 3.0)
        await asyncio.Event().wait()


async def test_live_quiet_instrument_bar_closes_within_grace_plus_heartbeat(
    bootstrap: str, codec: Codec, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(MS_BARS_GRACE_S=str(GRACE_S))
    runner = ConnectorRunner(
        OneTradeThenQuiet(ConnectorConfig()),
        Publisher({"bootstrap.servers": bootstrap, "acks": "all"}),
        codec,
        partitions=3,
        batch_max_trades=100,
        linger_ms=5,
        heartbeat_ms=100,
    )
    feeding = asyncio.create_task(runner.run())
    try:
        messages = await asyncio.to_thread(
            read_topic,
            bootstrap,
            BARS,
            lambda m: any(codec.decode_bar(x.value()).interval == "1s" for x in m),
            30,
            0.1,
        )
        arrived_s = time.time()
    finally:
        runner.stop()
        await feeding

    (bar,) = [b for b in map(codec.decode_bar, (m.value() for m in messages)) if b.interval == "1s"]
    window_end_s = (bar.ts_us + 1_000_000) / 1e6
    assert (bar.instrument, bar.trade_count, bar.close) == ("QUIET", 1, 12.5)
    assert arrived_s - (window_end_s + GRACE_S) < 3.0, (
        "closed by the heartbeat clock, not by new trades"
    )
