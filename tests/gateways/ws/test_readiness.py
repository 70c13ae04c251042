"""Readiness of the WebSocket gateway: ready once it has read md.bars.v1 up to the end offsets
it saw at start, even on a topic that never goes quiet."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from conftest import Started, eventually, wait_http
from test_gateway import CHANNEL, KEY, bar, events, history, publish, subscribe
from test_gateway import start_gateway as start_gateway  # a fixture

from gateways.ws.source import CatchUp
from shared.codec import Codec
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import BARS
from streams.embedded.ports import free_port

PARTITIONS = 3  # the bootstrap fixture's


def test_catch_up_partition_empty_at_start_is_caught_up_at_once() -> None:
    catch_up = CatchUp(starts={0: 0, 1: 40, 2: 0}, ends={0: 0, 1: 40, 2: 120})

    assert catch_up.behind == {1: 40, 2: 120}
    assert not catch_up.done
    assert CatchUp(starts={0: 0, 1: 0}, ends={0: 0, 1: 0}).done


def test_catch_up_start_at_the_listed_end_waits_for_a_fetch_to_confirm_it() -> None:
    # the lookback starts inside Tansu's last batch: ListOffsets said 61, the log ends at 64
    catch_up = CatchUp(starts={0: 61}, ends={0: 61})

    assert not catch_up.advance({0: 61})
    catch_up.confirm(0, 64)
    assert not catch_up.advance({0: 62})
    assert catch_up.advance({0: 64})


def test_catch_up_quiet_partition_assigned_at_its_end_is_caught_up_without_a_message() -> None:
    # nothing since the lookback: assigned at the end, 4711, where no message comes to read;
    # the consumer's position stays OFFSET_INVALID (-1001) until one does
    catch_up = CatchUp(starts={0: 4711}, ends={0: 4711})

    catch_up.confirm(0, 4711)

    assert catch_up.advance({0: -1001})


def test_catch_up_listed_end_short_of_the_fetched_one_waits_for_the_true_end() -> None:
    # Tansu lists 61 (the last batch's base offset + 1) for a partition that ends at 100.
    catch_up = CatchUp(starts={0: 0}, ends={0: 61})

    assert not catch_up.advance({0: 61}), "not before a fetch has confirmed the end"
    catch_up.confirm(0, 100)
    assert not catch_up.advance({0: 61})
    assert catch_up.advance({0: 100})


def test_catch_up_busy_partition_end_is_fixed_by_its_first_fetch() -> None:
    catch_up = CatchUp(starts={0: 0, 1: 0}, ends={0: 500, 1: 300})

    catch_up.confirm(0, 520)
    catch_up.confirm(0, 900)  # later fetches of a growing partition move nothing
    catch_up.confirm(1, 310)

    assert not catch_up.advance({0: 519, 1: 310})
    assert catch_up.behind == {0: 520}
    assert catch_up.advance({0: 520})


def same_partition_as(instrument: str) -> str:
    return next(
        f"FILL{i}"
        for i in range(100)
        if partition_for(f"FILL{i}", PARTITIONS) == partition_for(instrument, PARTITIONS)
    )


async def test_gateway_ready_only_once_it_has_read_all_of_a_large_last_batch(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    # Producer batches of thousands of bars: Tansu lists the partition's end as the last
    # batch's base offset + 1, thousands short, and reading the partition takes many polls.
    filler = [bar(s, s, instrument=same_partition_as("AAPL")) for s in range(1, 20_001)]
    before = history(600)
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1000})
    for b in filler + before:
        publisher.produce(
            BARS,
            codec.encode_bar(b),
            key=b.instrument.encode(),
            partition=partition_for(b.instrument, PARTITIONS),
        )
    publisher.flush()

    url = start_gateway()
    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "snapshot": 1})
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    await ws.close()

    assert got[0] == {"type": "subscribed", "channel": CHANNEL, "seq": 600}
    assert [b["seq"] for b in got[1]["bars"]] == [600]


def one_instrument_per_partition() -> list[str]:
    found: dict[int, str] = {}
    for i in range(100):
        found.setdefault(partition_for(f"BUSY{i}", PARTITIONS), f"BUSY{i}")
    assert len(found) == PARTITIONS
    return [found[p] for p in sorted(found)]


@pytest.fixture
def busy_topic(bootstrap: str, codec: Codec) -> Iterator[list[str]]:
    """Publish a bar to every partition every 2 ms until the test ends; yield the instruments."""
    instruments = one_instrument_per_partition()
    stop = threading.Event()

    def keep_publishing() -> None:
        publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        seq = 1
        while not stop.is_set():
            for instrument in instruments:
                b = bar(seq, seq, instrument=instrument)
                publisher.produce(
                    BARS,
                    codec.encode_bar(b),
                    key=instrument.encode(),
                    partition=partition_for(instrument, PARTITIONS),
                )
            publisher.poll(0)
            seq += 1
            stop.wait(0.002)
        publisher.flush()

    thread = threading.Thread(target=keep_publishing, name="busy-publisher")
    thread.start()
    yield instruments
    stop.set()
    thread.join(30)


async def test_gateway_started_while_bars_keep_arriving_becomes_ready_with_bars_from_before(
    bootstrap: str,
    codec: Codec,
    start_process: Callable[[list[str], dict[str, str]], Started],
    busy_topic: list[str],
) -> None:
    before = history(600)  # 400 windows of one channel
    publish(bootstrap, codec, before)
    port = free_port()
    start_process(
        ["gateways.ws"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": str(port), "MS_WS_API_KEYS": KEY},
    )

    # A deadline far beyond a rebuild of this size: waiting for a quiet poll took far longer.
    health = await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/health", 10)
    busy = [f"bars.1s.{i}" for i in busy_topic]
    ws = await subscribe(
        f"ws://127.0.0.1:{port}",
        {"op": "subscribe", "channels": [CHANNEL, *busy], "snapshot": 500},
    )
    got = await events(ws, lambda g: sum(e["type"] == "snapshot" for e in g) == 1 + len(busy))
    await ws.close()

    assert orjson.loads(health)["checks"]["replay_buffer"] == {"ok": True}
    snapshots = {e["channel"]: e for e in got if e["type"] == "snapshot"}
    latest = {b.ts_us: b for b in before}
    assert snapshots[CHANNEL]["seq"] == 600
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshots[CHANNEL]["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in (latest[ts] for ts in sorted(latest))
    ], "every bar published before the start is in the first snapshot"
    assert all(snapshots[name]["seq"] >= 1 for name in busy), "and what came since"


async def test_topic_source_started_before_its_broker_waits_then_becomes_ready(
    codec: Codec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateways.ws.source import Feed, TopicSource
    from shared import kafka_admin
    from shared.dead_letters import DeadLetterPublisher
    from shared.topics import all_topics
    from streams.embedded.broker import start_broker, stop_broker

    port = free_port()
    address = f"127.0.0.1:{port}"
    publisher = Publisher({"bootstrap.servers": address})
    source = TopicSource(
        address, codec, DeadLetterPublisher(publisher, codec, "test"), [Feed(BARS, 3600)]
    )
    source.start(asyncio.get_running_loop(), lambda bars: None)
    broker = None
    try:
        # the first metadata request times out (10 s); the source must outlive it and retry
        await eventually(
            lambda: "retrying" in caplog.text, timeout_s=30, what="a retry after the timeout"
        )
        assert source._threads and all(t.is_alive() for t in source._threads)
        assert not source.ready.is_set()
        broker = start_broker(port, tmp_path / "tansu.log")
        kafka_admin.create_topics(address, all_topics(PARTITIONS))

        await asyncio.wait_for(asyncio.to_thread(source.ready.wait, 60), 65)
        await asyncio.sleep(0)  # ready is set on the loop; let the callback run
        assert source.ready.is_set()
    finally:
        await asyncio.to_thread(source.stop)
        if broker is not None:
            stop_broker(broker)
