"""ConnectorRunner.replace (POST /ops/reload): the next session is the new connector's, and a
stop during the switch still ends the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import numpy as np

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.models import TradeBatch
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.topics import TRADES

T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z


class _Slow(Connector):
    """A feed that sends a trade every 10 ms and takes `close_s` to close its session."""

    name: ClassVar[str] = "slow"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, symbol: str, close_s: float) -> None:
        super().__init__(ConnectorConfig())
        self.symbol, self.close_s = symbol, close_s
        self.sessions = 0
        self.closing = asyncio.Event()

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        self.sessions += 1
        try:
            for k in range(1_000_000):
                await asyncio.sleep(0.01)
                yield TradeBatch(
                    source=self.name,
                    instruments=(self.symbol,),
                    instrument_index=np.zeros(1, np.int32),
                    ts_event_us=np.array([T0 + k * 10_000], np.int64),
                    ts_recv_us=np.array([T0 + k * 10_000 + 500], np.int64),
                    price=np.array([101.25]),
                    size=np.array([10.0]),
                )
        finally:
            self.closing.set()
            await asyncio.sleep(self.close_s)  # closing its socket, politely


def _runner(
    bootstrap: str,
    codec: Codec,
    connector: Connector,
    *,
    batch_max_trades: int = 100,
    linger_ms: float = 5,
) -> ConnectorRunner:
    publisher = Publisher(KafkaSettings(bootstrap=bootstrap).producer_config("test-reload"))
    return ConnectorRunner(
        connector,
        publisher,
        codec,
        partitions=publisher.partitions(TRADES),
        batch_max_trades=batch_max_trades,
        linger_ms=linger_ms,
    )


async def _until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_runner_replace_goes_on_with_the_new_connector(bootstrap: str, codec: Codec) -> None:
    old, new = _Slow("AAPL", close_s=0.0), _Slow("MSFT", close_s=0.0)
    runner = _runner(bootstrap, codec, old)
    running = asyncio.ensure_future(runner.run())
    await _until(lambda: runner.summary.published >= 5)

    runner.replace(new)
    await _until(lambda: new.sessions == 1)
    published = runner.summary.published
    await _until(lambda: runner.summary.published >= published + 5)
    runner.stop()
    async with asyncio.timeout(10):
        await running

    assert (old.sessions, new.sessions) == (1, 1) and runner.connector is new


async def test_runner_stop_while_the_old_session_closes_still_ends_the_run(
    bootstrap: str, codec: Codec
) -> None:
    old, new = _Slow("AAPL", close_s=0.5), _Slow("MSFT", close_s=0.0)
    runner = _runner(bootstrap, codec, old)
    running = asyncio.ensure_future(runner.run())
    await _until(lambda: runner.summary.published >= 5)

    runner.replace(new)
    async with asyncio.timeout(10):
        await old.closing.wait()  # the old session is closing (it takes 0.5 s)
    runner.stop()

    async with asyncio.timeout(10):
        await running
    assert new.sessions == 0 and not runner.accepts_reload
