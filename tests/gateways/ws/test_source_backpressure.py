"""The gateway's Kafka readers under a backlog it cannot keep up with: each lane runs a bounded
distance ahead of the event loop, and of the writer, so the loop's turns stay short (a signal
is served behind little), bars do not wait behind trades, memory holds still, and stopping
leaves the rest on Kafka."""

from __future__ import annotations

import asyncio
import time

import pytest
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
SLOW_DELIVERY_S = 0.05  # what the loop spends on each delivery of trades


class SlowLoop:
    """A gateway whose deliveries of trades each take SLOW_DELIVERY_S of the loop."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int]] = []  # (kind, updates), in delivery order
        self.trades = 0

    def deliver(self, updates: list[Update]) -> None:
        kinds = {u.channel.kind for u in updates}
        assert len(kinds) == 1, f"one lane per delivery, got {kinds}"
        kind = kinds.pop()
        self.deliveries.append((kind, len(updates)))
        if kind == protocol.TRADES:
            self.trades += len(updates)
            time.sleep(SLOW_DELIVERY_S)


def wait_seconds(lane: str) -> float:
    return REGISTRY.get_sample_value("ws_source_wait_seconds_total", {"lane": lane}) or 0.0


async def test_topic_source_under_a_trade_backlog_keeps_the_loop_responsive_and_bars_first(
    bootstrap: str, codec: Codec
) -> None:
    for i in range(MESSAGES):
        publish(
            bootstrap, codec, TRADES, trades("AAPL", TRADES_PER_MESSAGE, i * TRADES_PER_MESSAGE)
        )
    publish_bars(bootstrap, codec, [bar(1, 0), bar(2, 1)])
    loop = asyncio.get_running_loop()
    gateway = SlowLoop()
    source = TopicSource(
        bootstrap,
        codec,
        DeadLetterPublisher(Publisher({"bootstrap.servers": bootstrap}), codec, "test"),
        [Feed(BARS, 3600), Feed(TRADES, 3600)],
    )
    waited_before = wait_seconds("ticks")
    source.start(loop, gateway.deliver)
    try:
        deadline = time.monotonic() + 60
        while gateway.trades == 0:
            assert time.monotonic() < deadline, "no trades delivered within 60 s"
            await asyncio.sleep(0.01)
        # Between two deliveries: what is queued on the loop ahead of this coroutine's next
        # turn (as a signal handler's callback would be) is at most the lanes' bound.
        delivered = len(gateway.deliveries)
        await asyncio.sleep(0)
        ahead = gateway.deliveries[delivered:]
        assert len(ahead) <= 2 * PENDING_MAX, ahead

        deadline = time.monotonic() + 60
        while not any(kind == protocol.BARS for kind, _ in gateway.deliveries):
            assert time.monotonic() < deadline, "no bars delivered within 60 s"
            await asyncio.sleep(0.01)
        total = MESSAGES * TRADES_PER_MESSAGE
        assert gateway.trades < total / 2, "the bars waited behind most of the trade backlog"
        await asyncio.wait_for(asyncio.to_thread(source.ready.wait, 60), 65)
        await asyncio.sleep(0)
        assert gateway.trades == total, "ready only once every trade at start is delivered"
    finally:
        await asyncio.wait_for(asyncio.to_thread(source.stop), 15)

    assert all(size <= DELIVERY_MAX_UPDATES for _, size in gateway.deliveries)
    assert [size for kind, size in gateway.deliveries if kind == protocol.BARS] == [2]
    assert wait_seconds("ticks") > waited_before, "the trade lane waited for the loop"


async def test_topic_source_stopped_under_a_backlog_stops_at_once_and_leaves_it_unread(
    bootstrap: str, codec: Codec
) -> None:
    for i in range(MESSAGES):
        publish(
            bootstrap, codec, TRADES, trades("MSFT", TRADES_PER_MESSAGE, i * TRADES_PER_MESSAGE)
        )
    gateway = SlowLoop()
    source = TopicSource(
        bootstrap,
        codec,
        DeadLetterPublisher(Publisher({"bootstrap.servers": bootstrap}), codec, "test"),
        [Feed(TRADES, 3600)],
    )
    source.start(asyncio.get_running_loop(), gateway.deliver)
    deadline = time.monotonic() + 60
    while gateway.trades == 0:
        assert time.monotonic() < deadline, "no trades delivered within 60 s"
        await asyncio.sleep(0.01)

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
    for i in range(MESSAGES):
        publish(
            bootstrap, codec, TRADES, trades("NVDA", TRADES_PER_MESSAGE, i * TRADES_PER_MESSAGE)
        )
    gateway = BehindLoop()
    source = TopicSource(
        bootstrap,
        codec,
        DeadLetterPublisher(Publisher({"bootstrap.servers": bootstrap}), codec, "test"),
        [Feed(TRADES, 3600)],
    )
    source.start(asyncio.get_running_loop(), gateway.deliver)
    try:
        deadline = time.monotonic() + 60
        while gateway.deliveries < PENDING_MAX:
            assert time.monotonic() < deadline, "no trades delivered within 60 s"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the reader has had time to read on, were it let
        assert gateway.deliveries == PENDING_MAX

        gateway.catch_up()
        deadline = time.monotonic() + 60
        while gateway.deliveries < 2 * PENDING_MAX:
            assert time.monotonic() < deadline, "no more deliveries once the writer caught up"
            await asyncio.sleep(0.01)
    finally:
        gateway.catch_up()
        await asyncio.wait_for(asyncio.to_thread(source.stop), 15)


async def test_gateway_answers_deliveries_with_a_future_while_its_writer_is_behind(
    bootstrap: str, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "LOG_MAX_BYTES", 20_000)
    publisher = Publisher({"bootstrap.servers": bootstrap})
    source = TopicSource(
        bootstrap, codec, DeadLetterPublisher(publisher, codec, "test"), [Feed(BARS, 3600)]
    )
    gateway = server.Gateway(server.WsSettings(), ApiKeys(["k"], False), source, {})
    reader = joined(gateway.hub, {"op": "subscribe", "channels": ["bars.1s.AAPL"]})

    answers = [gateway.deliver([bar_update(bar(seq, seq))]) for seq in range(1, 101)]

    behind = [i for i, answer in enumerate(answers) if answer is not None]
    assert behind and all(answers[i] is None for i in range(behind[0])), "futures once behind"
    assert gateway.hub.log_bytes > 20_000
    assert not any(answer.done() for answer in answers if answer is not None)
    gateway.hub.skip(reader)  # the writer has written the reader everything
    gateway.hub.trim()
    gateway._release_sources()
    assert gateway.hub.log_bytes == 0
    assert all(answer.done() for answer in answers if answer is not None)
