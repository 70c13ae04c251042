"""The Alpaca connector against the fake Alpaca stream on 127.0.0.1: the documented protocol in
JSON and MessagePack, its error codes, bad frames, and the runner's stale-feed watchdog."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgpack
import numpy as np
import pytest
from conftest import at_least, read_topic

from connectors.alpaca import AlpacaConfig, AlpacaConnector
from connectors.alpaca_frames import decode_frame
from connectors.base import Rejected
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca, load_recording
from connectors.runner import ConnectorRunner
from connectors.sessions import IEX_HOURS, us_equities_trading
from connectors.watchdog import watched
from shared.codec import Codec
from shared.errors import FatalError, TransientError
from shared.metrics import STALE_FEEDS
from shared.models import QuoteBatch, TradeBatch
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.topics import FEED_EVENTS, TRADES

RECORDED = [m for frame in load_recording() for m in frame if m["T"] == "t"]


def _connector(fake: FakeAlpaca, **overrides: object) -> AlpacaConnector:
    settings: dict[str, object] = {
        "url": fake.url,
        "symbols": "AAPL,MSFT,TSLA",
        "key_id": KEY_ID,
        "secret_key": SECRET_KEY,
    } | overrides
    return AlpacaConnector(AlpacaConfig(**settings))


async def _take(
    stream: AsyncIterator[object], trades: int
) -> tuple[list[TradeBatch], list[Rejected]]:
    batches: list[TradeBatch] = []
    rejected: list[Rejected] = []
    async with asyncio.timeout(10):
        async for item in stream:
            if isinstance(item, TradeBatch):
                batches.append(item)
            elif isinstance(item, Rejected):
                rejected.append(item)
            if sum(len(b) for b in batches) >= trades:
                break
    return batches, rejected


def _rows(batches: list[TradeBatch]) -> list[tuple[str, int, float, float, str]]:
    return [
        (symbol, ts, price, size, trade_id)
        for b in batches
        for symbol, ts, price, size, trade_id in zip(
            b.instrument_column(),
            b.ts_event_us.tolist(),
            b.price.tolist(),
            b.size.tolist(),
            b.trade_id or [""] * len(b),
            strict=True,
        )
    ]


def _recorded_rows(symbols: set[str]) -> list[tuple[str, int, float, float, str]]:
    return [
        (
            m["S"],
            int(np.datetime64(m["t"][:-1], "ns").astype(np.int64)) // 1000,
            float(m["p"]),
            float(m["s"]),
            str(m["i"]),
        )
        for m in RECORDED
        if m["S"] in symbols
    ]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_alpaca_every_recorded_trade_arrives_exactly_one_batch_per_frame(
    encoding: str,
) -> None:
    # Arrange: the recording's own times, so that they can be compared exactly
    async with FakeAlpaca(live_times=False) as fake:
        connector = _connector(fake, encoding=encoding)

        # Act
        batches, rejected = await _take(connector.stream(), len(RECORDED))

    # Assert: symbols, nanosecond times (to µs), prices, sizes and ids as recorded
    assert _rows(batches) == _recorded_rows({"AAPL", "MSFT", "TSLA"})
    assert len(batches) == 120 and not rejected
    assert {b.source for b in batches} == {"alpaca"}
    assert connector.unpublished == 0  # quotes and statuses were not subscribed


async def test_alpaca_subscribes_to_its_symbols_only_and_stamps_live_times() -> None:
    # Arrange
    async with FakeAlpaca(live_times=True) as fake:
        connector = _connector(fake, symbols="TSLA")
        want = len(_recorded_rows({"TSLA"}))
        before_us = datetime.now().timestamp() * 1e6

        # Act
        batches, _ = await _take(connector.stream(), want)

    # Assert: TSLA's trades, moved to the wall clock, received just after
    rows = _rows(batches)
    assert {row[0] for row in rows} == {"TSLA"} and len(rows) == want
    first = batches[0]
    assert before_us - 5e6 < first.ts_event_us[0] <= first.ts_recv_us[0] + 1e6


async def test_alpaca_wrong_key_is_fatal_and_the_error_never_shows_the_secret() -> None:
    async with FakeAlpaca() as fake:
        connector = _connector(fake, secret_key="revoked-secret-123")

        with pytest.raises(FatalError, match="402: auth failed") as caught:
            await _take(connector.stream(), 1)

    assert "revoked-secret-123" not in str(caught.value)
    assert fake.auth_failures == 1


async def test_alpaca_missing_keys_are_fatal_naming_the_variables() -> None:
    async with FakeAlpaca() as fake:
        connector = AlpacaConnector(AlpacaConfig(url=fake.url, key_id=None, secret_key=None))

        with pytest.raises(FatalError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
            await _take(connector.stream(), 1)

    assert fake.connections == 0


async def test_alpaca_second_connection_gets_406_and_is_transient() -> None:
    async with FakeAlpaca(live_times=False) as fake:
        first = _connector(fake).stream()
        await _take(first, 1)  # holds the key's connection slot

        with pytest.raises(TransientError, match="406: connection limit exceeded"):
            await _take(_connector(fake).stream(), 1)
        await first.aclose()


async def test_alpaca_malformed_frames_are_rejected_and_the_stream_goes_on() -> None:
    async with FakeAlpaca(live_times=False) as fake:
        fake.go_silent()
        stream = _connector(fake).stream()
        taking = asyncio.ensure_future(_take(stream, 5))
        await _until(lambda: bool(fake.sessions))

        # Act: an HTML error page, a truncated MessagePack frame, a bad trade beside a good one
        await fake.inject("<html><body>502 Bad Gateway</body></html>")
        await fake.inject(msgpack.packb([{"T": "t", "S": "AAPL", "p": 1.5}])[:-3])
        await fake.inject(
            '[{"T":"t","S":"AAPL","p":"172.5","s":100,"t":"2024-03-12T13:30:01Z"},'
            '{"T":"t","S":"AAPL","i":7,"p":172.5,"s":100,"t":"2024-03-12T13:30:01.5Z"},'
            '{"T":"zz","S":"AAPL"}]'
        )
        fake.go_silent(False)
        batches, rejected = await taking

    assert [r.reason for r in rejected] == [
        "undecodable",
        "undecodable",
        "malformed_trade",
        "unknown_message_type",
    ]
    assert "'172.5' is not a positive number" in rejected[2].detail
    assert _rows(batches)[0] == ("AAPL", 1_710_250_201_500_000, 172.5, 100.0, "7")


def test_decode_frame_wrong_shapes_are_rejected_never_raised() -> None:
    for payload, reason in [
        ('{"T":"t"}', "malformed_frame"),
        ("[1]", "unknown_message_type"),
        ('[{"T":"t","S":"","p":1,"s":1,"t":"2024-03-12T13:30:01Z"}]', "malformed_trade"),
        ('[{"T":"t","S":"AAPL","p":1,"s":1,"t":"yesterday"}]', "malformed_trade"),
        ('[{"T":"t","S":"AAPL","p":true,"s":1,"t":"2024-03-12T13:30:01Z"}]', "malformed_trade"),
        ('[{"T":"t","S":"AAPL","p":1,"s":1,"t":"NaTZ"}]', "malformed_trade"),
        ('[{"T":["t"],"S":"AAPL"}]', "unknown_message_type"),
    ]:
        frame = decode_frame(payload, "alpaca", 1_710_250_201_000_000)
        assert [r.reason for r in frame.rejected] == [reason], payload
        assert frame.trades is None


def test_decode_frame_statuses_are_instrument_statuses_halted_or_not() -> None:
    frame = decode_frame(
        '[{"T":"s","S":"TSLA","sc":"H","sm":"Trading Halt","rc":"LUDP",'
        '"rm":"Volatility Trading Pause","t":"2024-03-12T14:41:10.5Z","z":"C"},'
        '{"T":"s","S":"TSLA","sc":"T","sm":"Trading Resumption","rc":"","rm":"",'
        '"t":"2024-03-12T14:50:30Z","z":"C"},{"T":"s","S":"TSLA","sm":"no code","t":"x"}]',
        "alpaca",
        1_710_254_430_000_000,
    )

    assert [(s.instrument, s.halted, s.status_code, s.reason_code) for s in frame.statuses] == [
        ("TSLA", True, "H", "LUDP"),
        ("TSLA", False, "T", ""),
    ]
    assert frame.statuses[0].ts_event_us == 1_710_254_470_500_000
    assert [r.reason for r in frame.rejected] == ["malformed_status"]
    assert frame.unpublished == 0


def test_decode_frame_crypto_taker_side_is_kept() -> None:
    frame = decode_frame(
        '[{"T":"t","S":"BTC/USD","p":68250.5,"s":0.012,"t":"2024-03-12T13:30:01.25Z",'
        '"i":4021,"tks":"S"},{"T":"t","S":"BTC/USD","p":68251,"s":0.5,'
        '"t":"2024-03-12T13:30:01.5Z","i":4022,"tks":"B"}]',
        "alpaca",
        1_710_250_202_000_000,
    )

    assert frame.trades is not None
    assert frame.trades.side is not None and frame.trades.side.tolist() == [-1, 1]
    assert frame.trades.ts_event_us.tolist() == [1_710_250_201_250_000, 1_710_250_201_500_000]


async def test_runner_stale_feed_while_market_trades_reconnects_and_resubscribes(
    bootstrap: str, codec: Codec
) -> None:
    # Arrange: the fake keeps its socket open but sends nothing after the first frames
    async with FakeAlpaca(live_times=True, frame_interval_s=0.01) as fake:
        connector = _connector(fake, feed="crypto", stale_after_s=0.5)  # crypto always trades
        publisher = Publisher(KafkaSettings(bootstrap=bootstrap).producer_config("test-alpaca"))
        runner = ConnectorRunner(
            connector,
            publisher,
            codec,
            partitions=publisher.partitions(TRADES),
            batch_max_trades=10_000,
            linger_ms=5,
        )
        running = asyncio.ensure_future(runner.run())
        await _until(lambda: runner.summary.published > 0)
        stale_before = STALE_FEEDS.labels("alpaca")._value.get()
        fake.go_silent()
        silenced_at = fake.connections

        # Act: a silent second connection comes once the watchdog gave up on the first
        await _until(lambda: fake.connections > silenced_at, timeout_s=10)
        fake.go_silent(False)
        published = runner.summary.published
        await _until(lambda: runner.summary.published > published, timeout_s=10)
        runner.stop()
        await running

    assert fake.connections >= 2
    assert STALE_FEEDS.labels("alpaca")._value.get() >= stale_before + 1
    # gap detection is told where the feed was blind: from its last data to its next
    events = [
        codec.decode_feed_event(m.value())
        for m in read_topic(bootstrap, FEED_EVENTS, at_least(2), timeout_s=30)
    ]
    disconnected, reconnected = events[:2]
    assert (disconnected.kind, reconnected.kind) == ("disconnected", "reconnected")
    assert "stale feed" in disconnected.detail and disconnected.source == "alpaca"
    assert disconnected.blind_since_us is not None
    assert disconnected.blind_since_us == reconnected.blind_since_us
    assert disconnected.blind_since_us <= disconnected.ts_event_us < reconnected.ts_event_us


async def test_watchdog_quiet_market_does_not_reconnect() -> None:
    # Arrange: a stock feed on a Saturday
    saturday = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)
    async with FakeAlpaca(live_times=True) as fake:
        connector = _connector(fake, stale_after_s=0.2)
        connector.expects_data = lambda now: us_equities_trading(saturday)  # type: ignore[method-assign]
        fake.go_silent()

        # Act: five stale periods of silence
        items = watched(connector)
        pending = asyncio.ensure_future(anext(items))
        done, _ = await asyncio.wait({pending}, timeout=1.0)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await items.aclose()  # type: ignore[attr-defined]

    # Assert: still waiting on the first connection, nothing counted stale
    assert not done and fake.connections == 1


def test_us_equities_trade_weekdays_4_to_20_new_york_time() -> None:
    assert us_equities_trading(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))  # 04:00 EST
    assert not us_equities_trading(datetime(2026, 12, 1, 8, 59, tzinfo=UTC))
    assert not us_equities_trading(datetime(2026, 12, 2, 1, 0, tzinfo=UTC))  # 20:00 EST
    assert us_equities_trading(datetime(2026, 7, 1, 23, 59, tzinfo=UTC))  # 19:59 EDT
    assert not us_equities_trading(datetime(2026, 12, 5, 15, 0, tzinfo=UTC))  # Saturday
    assert not us_equities_trading(datetime(2026, 12, 1, 12, 59, tzinfo=UTC), IEX_HOURS)  # 07:59
    assert us_equities_trading(datetime(2026, 12, 1, 21, 59, tzinfo=UTC), IEX_HOURS)  # 16:59


async def _until(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_alpaca_minute_bars_and_their_updates_are_provider_bars_with_revisions() -> None:
    # Arrange: a minute bar, Alpaca's correction of it, and the day's bar twice
    bar = {"S": "AAPL", "o": 172.75, "h": 173.1, "l": 172.6, "c": 173.02, "v": 48211, "n": 611}
    frames = [
        [{"T": "b", "t": "2024-03-12T13:30:00Z", "vw": 172.91} | bar],
        [{"T": "u", "t": "2024-03-12T13:30:00Z", "vw": 172.92} | bar | {"v": 48311}],
        [{"T": "d", "t": "2024-03-12T04:00:00Z", "vw": 172.9} | bar],
        [{"T": "d", "t": "2024-03-12T04:00:00Z", "vw": 172.95} | bar | {"c": 173.4}],
    ]
    async with FakeAlpaca(frames, live_times=False) as fake:
        connector = _connector(fake, symbols="AAPL", encoding="json")

        # Act
        got = []
        async with asyncio.timeout(10):
            async for item in connector.stream():
                got.append(item)
                if len(got) == 4:
                    break

    # Assert
    assert [(b.interval, b.revision.tolist(), b.provider) for b in got] == [
        ("1m", [0], "alpaca"),
        ("1m", [1], "alpaca"),
        ("1d", [0], "alpaca"),
        ("1d", [1], "alpaca"),
    ]
    assert got[1].volume.tolist() == [48311.0] and got[3].close.tolist() == [173.4]
    assert got[0].ts_us.tolist() == [1_710_250_200_000_000]
    assert got[0].vwap.tolist() == [172.91] and got[0].trade_count.tolist() == [611]


async def test_alpaca_quotes_are_quote_batches_of_the_recorded_values() -> None:
    # Arrange: the recording's quotes
    recorded = [m for frame in load_recording() for m in frame if m["T"] == "q"]
    async with FakeAlpaca(live_times=False) as fake:
        connector = _connector(fake, encoding="json", bars=False)

        # Act
        quotes: list[QuoteBatch] = []
        async with asyncio.timeout(10):
            async for item in connector.stream():
                if isinstance(item, QuoteBatch):
                    quotes.append(item)
                if sum(len(q) for q in quotes) == len(recorded):
                    break

    # Assert
    got = [
        (q.instruments[i], t, bp, bs, ap, sz)
        for q in quotes
        for i, t, bp, bs, ap, sz in zip(
            q.instrument_index.tolist(),
            q.ts_event_us.tolist(),
            q.bid_price.tolist(),
            q.bid_size.tolist(),
            q.ask_price.tolist(),
            q.ask_size.tolist(),
            strict=True,
        )
    ]
    assert got == [
        (
            m["S"],
            int(np.datetime64(m["t"][:-1], "ns").astype(np.int64)) // 1000,
            m["bp"],
            m["bs"],
            m["ap"],
            m["as"],
        )
        for m in recorded
    ]
    assert len(recorded) >= 5 and {q.source for q in quotes} == {"alpaca"}
