"""The WebSocket gateway with a real broker and real clients: seam, resume, restart, slow
clients, deep snapshots from the database."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import Callable

import orjson
import pytest
from conftest import PostgresServer, Started, wait_http
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateways.ws.history import BarHistory
from gateways.ws.protocol import parse_channel
from shared.codec import Codec
from shared.models import Bar
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import BARS
from streams.embedded.ports import free_port
from streams.sink.timescale import BarWriter

KEY = "test-key-123"
T0 = 1_767_623_400_000_000
CHANNEL = "bars.1s.AAPL"


def bar(
    seq: int, ts_index: int, revision: int = 0, instrument: str = "AAPL", interval: str = "1s"
) -> Bar:
    return Bar(
        instrument,
        interval,
        T0 + ts_index * 1_000_000,
        revision,
        10.0 + seq,
        11.0 + seq,
        9.0,
        10.5 + seq,
        100.0,
        10.2,
        5,
        60.0,
        40.0,
        "test",
        T0 + ts_index * 1_000_000 + 999,
        time.time_ns() // 1000,
        seq,
    )


def publish(bootstrap: str, codec: Codec, bars: list[Bar]) -> None:
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    for b in bars:
        publisher.produce(
            BARS,
            codec.encode_bar(b),
            key=b.instrument.encode(),
            partition=partition_for(b.instrument, 3),
        )
    publisher.flush()


def history(n: int) -> list[Bar]:
    """n messages of one channel: every third one revises the previous bar."""
    out, ts_index, revision = [], 0, 0
    for seq in range(1, n + 1):
        if seq % 3 == 0:
            revision += 1
        else:
            ts_index, revision = ts_index + 1, 0
        out.append(bar(seq, ts_index, revision))
    return out


@pytest.fixture
def start_gateway(
    bootstrap: str, start_process: Callable[[list[str], dict[str, str]], Started]
) -> Callable[..., str]:
    def start(**env: str) -> str:
        port = free_port()
        start_process(
            ["gateways.ws"],
            {
                "MS_KAFKA_BOOTSTRAP": bootstrap,
                "MS_WS_PORT": str(port),
                "MS_WS_API_KEYS": f"other-key,{KEY}",
                **env,
            },
        )
        wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
        return f"ws://127.0.0.1:{port}"

    return start


async def events(
    ws: ClientConnection, until: Callable[[list[dict]], bool], timeout_s: float = 20
) -> list[dict]:  # type: ignore[type-arg]
    got: list[dict] = []  # type: ignore[type-arg]
    async with asyncio.timeout(timeout_s):
        while not until(got):
            got += orjson.loads(await ws.recv())
    return got


def live_seqs(got: list[dict]) -> list[int]:  # type: ignore[type-arg]
    return [e["seq"] for e in got if e["type"] == "bar"]


async def subscribe(url: str, message: dict, **kwargs: object) -> ClientConnection:  # type: ignore[type-arg]
    ws = await connect(url, additional_headers={"X-API-Key": KEY}, **kwargs)  # type: ignore[arg-type]
    await ws.send(orjson.dumps(message).decode())
    return ws


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_gateway_bad_or_missing_key_closes_with_4401(
    start_gateway: Callable[..., str], key: str | None
) -> None:
    url = start_gateway()
    headers = {"X-API-Key": key} if key else {}

    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()

    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_gateway_key_in_query_string_is_accepted(start_gateway: Callable[..., str]) -> None:
    url = start_gateway()

    async with connect(f"{url}/?api_key={KEY}") as ws:
        await ws.send('{"op":"ping"}')
        got = await events(ws, lambda g: bool(g))

    assert got == [{"type": "pong"}]


async def test_gateway_snapshot_then_live_under_concurrent_publishing_has_no_gap_or_duplicate(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    url = start_gateway()
    bars = history(3000)
    publish(bootstrap, codec, bars[:500])
    publisher = threading.Thread(
        target=lambda: [publish(bootstrap, codec, bars[i : i + 50]) for i in range(500, 3000, 50)]
    )
    publisher.start()

    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "snapshot": 1000})
    got = await events(
        ws,
        lambda g: (
            3000 in live_seqs(g) or any(e["type"] == "snapshot" and e["seq"] == 3000 for e in g)
        ),
        60,
    )
    publisher.join()
    await ws.close()

    (status, snapshot), live = got[:2], got[2:]
    assert status["type"] == "subscribed" and snapshot["type"] == "snapshot"
    assert live_seqs(live) == list(range(snapshot["seq"] + 1, 3000 + 1)), (
        "live continues right after the snapshot"
    )
    latest = {}
    for b in bars[: snapshot["seq"]]:
        latest[b.ts_us] = b
    expected = [latest[ts] for ts in sorted(latest)][-1000:]
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshot["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in expected
    ]


async def test_gateway_resume_after_forced_disconnect_sends_exactly_what_was_missed(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    url = start_gateway()
    bars = history(300)
    publish(bootstrap, codec, bars[:100])
    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "snapshot": 5})
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    last = next(e["seq"] for e in got if e["type"] == "snapshot")
    ws.transport.abort()  # a dropped connection, no close handshake
    publish(bootstrap, codec, bars[100:])

    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "resume": {CHANNEL: last}})
    got = await events(ws, lambda g: 300 in live_seqs(g))
    await ws.close()

    assert got[0] == {"type": "subscribed", "channel": CHANNEL, "seq": last, "recovered": True}
    assert live_seqs(got) == list(range(last + 1, 301))
    assert all(
        e["bar"]["seq"] == e["seq"] and e["revision"] == e["bar"]["revision"] for e in got[1:]
    )


async def test_gateway_resume_beyond_buffer_says_not_recovered_and_sends_snapshot(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    publish(bootstrap, codec, history(100))
    url = start_gateway(MS_WS_BUFFER_PER_CHANNEL="20")  # ready once it has read what is there

    ws = await subscribe(
        url, {"op": "subscribe", "channels": [CHANNEL], "resume": {CHANNEL: 3}, "snapshot": 5}
    )
    got = await events(ws, lambda g: any(e["type"] == "snapshot" and e["seq"] == 100 for e in g))
    await ws.close()

    assert got[0] == {"type": "subscribed", "channel": CHANNEL, "seq": 100, "recovered": False}
    assert got[1]["type"] == "snapshot" and len(got[1]["bars"]) == 5


async def test_gateway_restart_and_replica_rebuild_the_same_snapshot_from_kafka(
    bootstrap: str,
    codec: Codec,
    start_gateway: Callable[..., str],
    start_process: Callable[..., Started],
) -> None:
    publish(bootstrap, codec, history(200) + [bar(s, s, instrument="MSFT") for s in range(1, 40)])
    request = {"op": "subscribe", "channels": [CHANNEL, "bars.1s.MSFT"], "snapshot": 30}

    async def snapshot_from(url: str) -> list[dict]:  # type: ignore[type-arg]
        ws = await subscribe(url, request)
        got = await events(ws, lambda g: sum(e["type"] == "snapshot" for e in g) == 2)
        await ws.close()
        return got

    first, replica = start_gateway(), start_gateway()
    before = await snapshot_from(first)
    from_replica = await snapshot_from(replica)
    restarted = await snapshot_from(start_gateway())

    assert before == from_replica == restarted
    assert [e["seq"] for e in before if e["type"] == "snapshot"] == [200, 39]


async def test_a_client_resumes_without_a_gap_across_a_gateway_restart(
    bootstrap: str, codec: Codec, start_process: Callable[..., Started]
) -> None:
    port = free_port()
    env = {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": str(port), "MS_WS_API_KEYS": KEY}
    url = f"ws://127.0.0.1:{port}"
    bars = history(300)
    publish(bootstrap, codec, bars[:100])
    first = start_process(["gateways.ws"], env)
    wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "snapshot": 5})
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    last = next(e["seq"] for e in got if e["type"] == "snapshot")

    first.process.send_signal(signal.SIGTERM)  # a rolling restart of the gateway
    assert first.process.wait(20) == 0
    publish(bootstrap, codec, bars[100:200])  # while no gateway runs
    start_process(["gateways.ws"], env)
    wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
    resumed = await subscribe(
        url, {"op": "subscribe", "channels": [CHANNEL], "resume": {CHANNEL: last}}
    )
    publish(bootstrap, codec, bars[200:])
    got = await events(resumed, lambda g: 300 in live_seqs(g))
    await resumed.close()

    assert got[0] == {"type": "subscribed", "channel": CHANNEL, "seq": last, "recovered": True}
    assert live_seqs(got) == list(range(last + 1, 301))


async def test_gateway_slow_client_is_disconnected_and_fast_client_gets_everything(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(MS_WS_MAX_LAG_S="2", MS_WS_SLOW_CLIENT_POLICY="disconnect")
    fast = await subscribe(url, {"op": "subscribe", "channels": ["bars.1s.*"], "snapshot": 0})
    slow = await subscribe(
        url, {"op": "subscribe", "channels": ["bars.1s.*"], "snapshot": 0}, max_queue=1
    )
    bars = [
        bar(s, s, instrument=f"S{i}") for s in range(1, 1001) for i in range(40)
    ]  # ~16 MB of frames

    def publish_in_bursts() -> None:
        for i in range(0, len(bars), 1000):
            publish(bootstrap, codec, bars[i : i + 1000])

    got, _ = await asyncio.gather(
        events(fast, lambda g: len(live_seqs(g)) >= len(bars), 60),
        asyncio.to_thread(publish_in_bursts),
    )

    assert sorted((e["channel"], e["seq"]) for e in got if e["type"] == "bar") == sorted(
        (f"bars.1s.{b.instrument}", b.seq) for b in bars
    )
    metrics = url.replace("ws://", "http://") + "/metrics"
    deadline = time.monotonic() + 30
    while 'ws_dropped_messages_total{reason="slow_client"}' not in wait_http(metrics).decode():
        assert time.monotonic() < deadline, "the gateway never judged the stalled client too slow"
        await asyncio.sleep(0.2)
    with pytest.raises(ConnectionClosed) as info:  # it reads what was sent before, then the close
        async with asyncio.timeout(30):
            while True:
                await slow.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4008
    await fast.close()


async def test_gateway_malformed_requests_get_errors_and_connection_survives(
    start_gateway: Callable[..., str],
) -> None:
    url = start_gateway(MS_WS_MAX_BAD_REQUESTS="5")
    ws = await connect(url, additional_headers={"X-API-Key": KEY})
    for bad in [
        "not json",
        '{"op":"launch"}',
        '{"op":"subscribe","channels":["ticks.AAPL"]}',
        '{"op":"subscribe","channels":["bars.7s.AAPL"]}',
        '{"op":"subscribe","channels":["bars.1s.A"],"snapshot":-1}',
    ]:
        await ws.send(bad)
    await ws.send('{"op":"ping"}')

    got = await events(ws, lambda g: {"type": "pong"} in g)

    assert [e["code"] for e in got if e["type"] == "error"] == ["bad_request"] * 5
    await ws.send("[]")
    with pytest.raises(ConnectionClosed) as info:
        await events(ws, lambda g: False, 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    health = orjson.loads(wait_http(url.replace("ws://", "http://") + "/health"))
    assert health["status"] == "ok"


async def test_gateway_fills_a_snapshot_deeper_than_its_buffer_from_the_database(
    bootstrap: str, codec: Codec, database_url: str, start_gateway: Callable[..., str]
) -> None:
    def daily(seq: int, window: int, revision: int = 0) -> Bar:
        return bar(seq, window, revision, instrument="DEEP", interval="1d")

    writer = BarWriter(database_url)  # what the sink wrote before the gateway (re)started
    assert await writer.write([daily(seq, seq) for seq in range(1, 7)]) == []
    await writer.close()
    publish(bootstrap, codec, [daily(7, 6, revision=1), daily(8, 7)])  # within the lookback
    url = start_gateway(MS_WS_SNAPSHOT_FROM_DATABASE="true", MS_DATABASE_URL=database_url)

    ws = await subscribe(url, {"op": "subscribe", "channels": ["bars.1d.DEEP"], "snapshot": 5})
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    (snapshot,) = [e for e in got if e["type"] == "snapshot"]
    publish(bootstrap, codec, [daily(9, 8)])
    live = await events(ws, lambda g: 9 in live_seqs(g))
    await ws.close()

    assert snapshot["seq"] == 8
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshot["bars"]] == [
        (T0 + 3_000_000, 0, 3),
        (T0 + 4_000_000, 0, 4),
        (T0 + 5_000_000, 0, 5),
        (T0 + 6_000_000, 1, 7),  # the buffer's revision, not the table's older row
        (T0 + 7_000_000, 0, 8),
    ]
    assert live_seqs(live) == [9]


async def test_postgres_stopped_while_the_gateway_fills_snapshots_then_back(
    bootstrap: str,
    codec: Codec,
    database_url: str,
    postgres: PostgresServer,
    start_gateway: Callable[..., str],
) -> None:
    def daily(seq: int) -> Bar:
        return bar(seq, seq, instrument="DOWNDB", interval="1d")

    writer = BarWriter(database_url)
    assert await writer.write([daily(seq) for seq in range(1, 7)]) == []
    await writer.close()
    publish(bootstrap, codec, [daily(7), daily(8)])
    url = start_gateway(MS_WS_SNAPSHOT_FROM_DATABASE="true", MS_DATABASE_URL=database_url)
    request = {"op": "subscribe", "channels": ["bars.1d.DOWNDB"], "snapshot": 5}

    postgres.stop()
    try:
        during = await subscribe(url, request)
        got = await events(during, lambda g: any(e["type"] == "snapshot" for e in g))
        publish(bootstrap, codec, [daily(9)])
        live = await events(during, lambda g: 9 in live_seqs(g))
        await during.close()
    finally:
        postgres.start()
    after = await subscribe(url, request)
    again = await events(after, lambda g: any(e["type"] == "snapshot" for e in g))
    await after.close()

    (short,) = [e for e in got if e["type"] == "snapshot"]
    (whole,) = [e for e in again if e["type"] == "snapshot"]
    assert [b["seq"] for b in short["bars"]] == [7, 8]  # the buffer's: the database was down
    assert live_seqs(live) == [9]  # and live bars never waited for it
    assert [b["seq"] for b in whole["bars"]] == [5, 6, 7, 8, 9]
    metrics = wait_http(url.replace("ws://", "http://") + "/metrics").decode()
    assert "ws_history_failures_total 1.0" in metrics


async def test_history_from_an_unreachable_database_is_empty_not_an_error() -> None:
    history = BarHistory(f"postgresql://postgres@127.0.0.1:{free_port()}/none")

    assert await history.before(parse_channel("bars.1d.DEEP"), None, 5) == []
    await history.close()


async def test_a_path_subscribes_to_the_symbols_1m_bars_and_resumes_by_query(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    """The runbook's `wscat -c ws://host:port/ws/NVDA`: the last 120 bars, then live."""
    minute = [
        dataclasses.replace(
            bar(seq, seq, instrument="NVDA", interval="1m"), ts_us=T0 + seq * 60_000_000
        )
        for seq in range(1, 161)
    ]
    publish(bootstrap, codec, minute[:150])
    url = start_gateway()

    ws = await connect(f"{url}/ws/NVDA?api_key={KEY}")
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    snapshot = next(e for e in got if e["type"] == "snapshot")
    publish(bootstrap, codec, minute[150:155])
    live = await events(ws, lambda g: 155 in live_seqs(g))
    ws.transport.abort()
    publish(bootstrap, codec, minute[155:])
    async with connect(f"{url}/ws/NVDA?api_key={KEY}&resume=155") as again:
        resumed = await events(again, lambda g: 160 in live_seqs(g))

    assert snapshot["channel"] == "bars.1m.NVDA" and snapshot["seq"] == 150
    assert [b["ts_us"] for b in snapshot["bars"]] == [b.ts_us for b in minute[30:150]]
    assert live_seqs(live) == [151, 152, 153, 154, 155]
    assert resumed[0] == {
        "type": "subscribed",
        "channel": "bars.1m.NVDA",
        "seq": 155,
        "recovered": True,
    }
    assert live_seqs(resumed) == [156, 157, 158, 159, 160]


async def test_a_malformed_path_subscription_is_closed_with_the_reason(
    start_gateway: Callable[..., str],
) -> None:
    url = start_gateway()

    for path in ("/ws/NV%20DA", "/ws/*", "/ws/NVDA?interval=7m"):
        async with connect(f"{url}{path}{'&' if '?' in path else '?'}api_key={KEY}") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()

        assert info.value.rcvd is not None and info.value.rcvd.code == 1008, path
        assert info.value.rcvd.reason, path
