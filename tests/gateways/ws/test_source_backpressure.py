"""The gateway's Kafka readers under a backlog it cannot keep up with: each lane runs a bounded
distance ahead of the event loop, and of the writer, so the loop's turns stay short (a signal
is served behind little), bars do not wait behind a backlog of trades, and stopping leaves the
rest on Kafka."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import eventually
from prometheus_client import REGISTRY
from test_gateway import bar
from test_gateway import publish as publish_bars
from test_hub_fanout import joined
from test_tick_channels import publish, trades

from gateways.ws import protocol, server
from gateways.ws.buffer import Update
from gateways.ws.source import DELIVERY_MAX_UPDATES, PENDING_MAX, Feed, TopicSource
from gateways.ws.updates import bar_update
from shared.api_keys import ApiKeys
from shared.codec import Codec
from shared.dead_letters import DeadLetterPublisher
from shared.publisher import Publisher
from shared.topics import BARS, TRADES

MESSAGES = 16
TRADES_PER_MESSAGE = 5_000  # 80,000 trades: 16 deliveries at least
SLOW_DELIVERY_S = 0.1  # what the loop spends on each delivery of trades


class SlowLoop:
    """A gateway whose deliveries of trades each take SLOW_DELIVERY_S of the loop."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int]] = []  # (kind, updates), in delivery order
        self.mixed: list[set[str]] = []  # deliveries of more than one lane (there must be none)
        self.trades = 0
        self.trades_before_bars: int | None = None

    def deliver(self, updates: list[Update]) -> None:
        kinds = {u.channel.kind for u in updates}
        if len(kinds) > 1:
            self.mixed.append(kinds)
        kind = kinds.pop()
        self.deliveries.append((kind, len(updates)))
        if kind == protocol.BARS and self.trades_before_bars is None:
            self.trades_before_bars = self.trades
        if kind == protocol.TRADES:
            self.trades += len(updates)
            time.sleep(SLOW_DELIVERY_S)


def wait_seconds(lane: str) -> float:
    return REGISTRY.get_sample_value("ws_source_wait_seconds_total", {"lane": lane}) or 0.0


def publish_backlog(bootstrap: str, codec: Codec, instrument: str) -> None:
    for i in range(MESSAGES):
        first = i * TRADES_PER_MESSAGE
        publish(bootstrap, codec, TRADES, trades(instrument, TRADES_PER_MESSAGE, first))


def topic_source(bootstrap: str, codec: Codec, *topics: str) -> TopicSource:
    publisher = Publisher({"bootstrap.servers": bootstrap})
    return TopicSource(
        bootstrap,
        codec,
        DeadLetterPublisher(publisher, codec, "test"),
        [Feed(topic, 3600) for topic in topics],
    )


async def test_topic_source_under_a_trade_backlog_keeps_the_loop_responsive_and_bars_first(
    bootstrap: str, codec: Codec
) -> None:
    publish_backlog(bootstrap, codec, "AAPL")
    publish_bars(bootstrap, codec, [bar(1, 0), bar(2, 1)])
    gateway = SlowLoop()
    source = topic_source(bootstrap, codec, BARS, TRADES)
    waited_before = wait_seconds("ticks")
    source.start(asyncio.get_running_loop(), gateway.deliver)
    try:
        await eventually(lambda: gateway.trades, 60, "trades delivered")
        # Between two deliveries: what is queued on the loop ahead of this coroutine's next
        # turn (as a signal handler's callback would be) is at most the lanes' bound.
        delivered = len(gateway.deliveries)
        await asyncio.sleep(0)
        ahead = gateway.deliveries[delivered:]
        assert len(ahead) <= 2 * PENDING_MAX, ahead

        await eventually(lambda: gateway.trades_before_bars is not None, 60, "bars delivered")
        total = MESSAGES * TRADES_PER_MESSAGE
        assert gateway.trades_before_bars is not None
        assert gateway.trades_before_bars < total / 2, "the bars waited behind the trades"
        await asyncio.wait_for(asyncio.to_thread(source.ready.wait, 60), 65)
        await asyncio.sleep(0)
        assert gateway.trades == total, "ready only once every trade at start is delivered"
    finally:
        await asyncio.wait_for(asyncio.to_thread(source.stop), 15)

    assert not gateway.mixed, "a delivery holds one lane's updates"
    assert all(size <= DELIVERY_MAX_UPDATES for _, size in gateway.deliveries)
    assert sum(size for kind, size in gateway.deliveries if kind == protocol.BARS) == 2
    waited = wait_seconds("ticks") - waited_before
    assert waited > SLOW_DELIVERY_S, "the trade lane waited for the loop"


async def test_topic_source_stopped_under_a_backlog_stops_at_once_and_leaves_it_unread(
    bootstrap: str, codec: Codec
) -> None:
    publish_backlog(bootstrap, codec, "MSFT")
    gateway = SlowLoop()
    source = topic_source(bootstrap, codec, TRADES)
    source.start(asyncio.get_running_loop(), gateway.deliver)
    await eventually(lambda: gateway.trades, 60, "trades delivered")

    await asyncio.wait_for(asyncio.to_thread(source.stop), 5)

    assert not any(thread.is_alive() for thread in source._threads)
    await asyncio.sleep(0.2)  # what was queued before the stop is delivered, nothing after
    assert gateway.trades < MESSAGES * TRADES_PER_MESSAGE / 2


class BehindLoop:
    """A gateway whose writer is behind: it answers every delivery with a future it holds."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.held: list[asyncio.Future[None]] = []

    def deliver(self, updates: list[Update]) -> asyncio.Future[None]:
        self.deliveries += 1
        caught_up = asyncio.get_running_loop().create_future()
        self.held.append(caught_up)
        return caught_up

    def catch_up(self) -> None:
        for caught_up in self.held:
            caught_up.set_result(None)
        self.held.clear()


async def test_topic_source_reads_no_further_while_the_gateway_writer_is_behind(
    bootstrap: str, codec: Codec
) -> None:
    publish_backlog(bootstrap, codec, "NVDA")
    gateway = BehindLoop()
    source = topic_source(bootstrap, codec, TRADES)
    source.start(asyncio.get_running_loop(), gateway.deliver)
    try:
        await eventually(lambda: gateway.deliveries >= PENDING_MAX, 60, "trades delivered")
        await asyncio.sleep(0.5)  # the reader has had time to read on, were it let
        assert gateway.deliveries == PENDING_MAX

        gateway.catch_up()
        await eventually(
            lambda: gateway.deliveries >= 2 * PENDING_MAX, 60, "deliveries once caught up"
        )
    finally:
        gateway.catch_up()
        await asyncio.wait_for(asyncio.to_thread(source.stop), 15)


async def test_gateway_answers_deliveries_with_a_future_while_its_writer_is_behind(
    bootstrap: str, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "LOG_MAX_BYTES", 20_000)
    source = topic_source(bootstrap, codec, BARS)
    gateway = server.Gateway(server.WsSettings(), ApiKeys(["k"], False), source, {})
    reader = joined(gateway.hub, {"op": "subscribe", "channels": ["bars.1s.AAPL"]})

    answers = [gateway.deliver([bar_update(bar(seq, seq))]) for seq in range(1, 101)]

    behind = [i for i, answer in enumerate(answers) if answer is not None]
    paused = [answer for answer in answers if answer is not None]
    assert behind and all(answers[i] is None for i in range(behind[0])), "futures once behind"
    assert gateway.hub.log_bytes > 20_000
    # the writer took a quarter of the log: still more than half the bound behind
    reader.cursor = gateway.hub.log_start + len(gateway.hub.log) // 4
    gateway._trim()
    assert gateway.hub.log_bytes > 10_000
    assert not any(answer.done() for answer in paused)
    gateway.hub.skip(reader)  # the writer has written the reader everything
    gateway._trim()
    assert gateway.hub.log_bytes == 0
    assert all(answer.done() for answer in paused)


async def test_topic_source_delivery_that_raises_frees_its_slot(
    bootstrap: str, codec: Codec
) -> None:
    publish_backlog(bootstrap, codec, "AMD")
    calls: list[int] = []

    def deliver(updates: list[Update]) -> None:
        calls.append(len(updates))
        raise RuntimeError("a bug in the hub")  # logged by the loop; the reader goes on

    source = topic_source(bootstrap, codec, TRADES)
    source.start(asyncio.get_running_loop(), deliver)
    try:
        await eventually(lambda: len(calls) > 2 * PENDING_MAX, 60, "deliveries after errors")
    finally:
        await asyncio.wait_for(asyncio.to_thread(source.stop), 15)
