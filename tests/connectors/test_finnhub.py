"""The Finnhub connector against the fake Finnhub on 127.0.0.1: recorded trades arrive exactly,
a refused key is fatal without showing it, bad frames are rejected, dead sockets reconnect, and
the REST candles parse."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import connector_stream
from pydantic import SecretStr, ValidationError

from connectors.base import Rejected
from connectors.fakes.finnhub import API_KEY, FakeFinnhub, load_recording
from connectors.finnhub import (
    FinnhubConfig,
    FinnhubConnector,
    MalformedResponseError,
    RateLimitedError,
    parse_candles,
    parse_frame,
)
from connectors.retry_after import retry_after_s
from shared.errors import FatalError, TransientError
from shared.models import TradeBatch

ROOT = Path(__file__).resolve().parents[2]
RECORDED = load_recording()
ALL = ("AAPL", "MSFT", "BINANCE:BTCUSDT")
OPEN_S = 1_749_562_200  # 2025-06-10 13:30:00 UTC, the US open, where the recording starts
SECRET = "sk-live-7f3a9c1e2b"


def _connector(fake: FakeFinnhub, **overrides: Any) -> FinnhubConnector:
    settings = {
        "ws_url": fake.url,
        "rest_url": fake.rest_url,
        "symbols": ",".join(ALL),
        "api_key": API_KEY,
    } | overrides
    return FinnhubConnector(FinnhubConfig(**settings))


def _trades(frames: list[dict[str, Any]], symbols: tuple[str, ...] = ALL) -> list[tuple[Any, ...]]:
    """The recorded trades of `symbols` as (symbol, ts_event_us, price, size)."""
    return [
        (t["s"], t["t"] * 1000, t["p"], t["v"])
        for frame in frames
        for t in frame["data"]
        if t["s"] in symbols
    ]


def _flatten(batches: list[TradeBatch]) -> list[tuple[Any, ...]]:
    return [
        trade
        for b in batches
        for trade in zip(
            b.instrument_column(),
            b.ts_event_us.tolist(),
            b.price.tolist(),
            b.size.tolist(),
            strict=True,
        )
    ]


async def _take(
    stream: AsyncIterator[object], trades: int, timeout_s: float = 4.0
) -> tuple[list[TradeBatch], list[Rejected]]:
    """Read the stream until `trades` trades have arrived; fail after `timeout_s`."""
    batches: list[TradeBatch] = []
    rejected: list[Rejected] = []
    async with asyncio.timeout(timeout_s):
        async for item in stream:
            if isinstance(item, TradeBatch):
                batches.append(item)
            else:
                assert isinstance(item, Rejected), item
                rejected.append(item)
            if sum(len(b) for b in batches) >= trades:
                break
    return batches, rejected


# the stream


async def test_finnhub_recorded_frames_arrive_as_one_batch_per_frame_with_exact_values() -> None:
    # Arrange
    async with FakeFinnhub(replay_when_subscribed=ALL) as fake:
        connector = _connector(fake)
        before_us = time.time_ns() // 1000

        # Act
        async with connector_stream(connector) as stream:
            batches, rejected = await _take(stream, len(_trades(RECORDED)))
        after_us = time.time_ns() // 1000

    # Assert
    assert rejected == []
    assert [len(b) for b in batches] == [len(f["data"]) for f in RECORDED]
    assert _flatten(batches) == _trades(RECORDED)
    assert len(_flatten(batches)) == 654
    for batch in batches:
        assert batch.source == "finnhub"
        assert batch.side is None and batch.trade_id is None  # Finnhub says neither
        assert len(set(batch.ts_recv_us.tolist())) == 1  # one receive time per frame
        assert before_us <= int(batch.ts_recv_us[0]) <= after_us


async def test_finnhub_one_symbol_subscribed_gets_only_its_trades() -> None:
    # Arrange
    async with FakeFinnhub() as fake:
        connector = _connector(fake, symbols="AAPL")
        expected = _trades(RECORDED, ("AAPL",))

        # Act
        async with connector_stream(connector) as stream:
            batches, _ = await _take(stream, len(expected))

    # Assert
    assert _flatten(batches) == expected
    assert len(batches) == sum(any(t["s"] == "AAPL" for t in f["data"]) for f in RECORDED)
    assert {b.instruments for b in batches} == {("AAPL",)}


async def test_finnhub_refused_key_is_fatal_on_one_line_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    caplog.set_level(logging.DEBUG)
    async with FakeFinnhub() as fake:
        connector = _connector(fake, api_key=SECRET)

        # Act
        with pytest.raises(FatalError) as raised:
            async with asyncio.timeout(4), connector_stream(connector) as stream:
                await anext(stream)

    # Assert
    message = str(raised.value)
    assert "HTTP 401" in message and "FINNHUB_API_KEY" in message
    assert "\n" not in message
    assert SECRET not in message and SECRET not in str(raised.value.__cause__)
    client_log = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )  # what the connector's process logs; the fake server's own log is not its
    assert "token=***" in client_log  # the websockets library's debug log, masked
    assert SECRET not in client_log
    assert (fake.refused, fake.connections) == (1, 0)


async def test_finnhub_revoked_key_drops_the_session_then_the_reconnect_is_fatal() -> None:
    # Arrange
    async with FakeFinnhub(replay_when_subscribed=ALL) as fake:
        connector = _connector(fake)
        async with connector_stream(connector) as stream:
            await _take(stream, 1)

            # Act
            await fake.revoke_keys()
            with pytest.raises(TransientError, match="no close frame"):
                async with asyncio.timeout(4):
                    async for _ in stream:
                        pass

        # Assert
        with pytest.raises(FatalError, match="HTTP 401"):
            async with asyncio.timeout(4), connector_stream(connector) as stream:
                await anext(stream)


async def test_finnhub_malformed_frames_are_rejected_and_the_stream_goes_on() -> None:
    # Arrange
    good: dict[str, Any] = {"c": ["1"], "p": 200.61, "s": "AAPL", "t": 1_749_562_201_000, "v": 100}
    bad_trades = [
        ({"s": "AAPL", "p": "200.5", "t": 1_749_562_201_000, "v": 100}, "bad_price"),
        ({"s": "AAPL", "t": 1_749_562_201_000}, "malformed_trade"),
        ({"s": "AAPL", "p": 200.5, "t": "1749562201000", "v": 100}, "bad_timestamp"),
        ({"s": "AAPL", "p": 200.5, "t": 1_749_562_201_000, "v": -3}, "bad_size"),
        ({"s": 42, "p": 200.5, "t": 1_749_562_201_000, "v": 1}, "bad_symbol"),
    ]
    whole_frames: list[tuple[bytes | str, str]] = [
        ("<html><head><title>502 Bad Gateway</title></head></html>", "undecodable"),
        (b"\xff\xfe\x00garbage", "undecodable"),
        ('{"type":"news","data":[]}', "unknown_type"),
        ('["trade"]', "malformed_frame"),
        ('{"type":"trade","data":{"s":"AAPL"}}', "malformed_frame"),
        ('{"msg":"Subscribing to too many symbols","type":"error"}', "provider_error"),
    ]
    async with FakeFinnhub(replay_when_subscribed=ALL) as fake:
        for payload, _ in whole_frames:
            await fake.inject(payload, after_frames=3)
        for trade, _ in bad_trades:
            frame = {"data": [good, trade], "type": "trade"}
            await fake.inject(orjson.dumps(frame).decode(), after_frames=3)
        connector = _connector(fake)

        # Act
        async with connector_stream(connector) as stream:
            batches, rejected = await _take(stream, len(_trades(RECORDED)) + len(bad_trades))

    # Assert
    assert [r.reason for r in rejected] == [r for _, r in whole_frames] + [r for _, r in bad_trades]
    whole = [p.encode() if isinstance(p, str) else p for p, _ in whole_frames]
    assert [r.payload for r in rejected[: len(whole)]] == whole
    assert [r.payload for r in rejected[len(whole) :]] == [orjson.dumps(t) for t, _ in bad_trades]
    assert "missing p, v" in rejected[len(whole) + 1].detail
    good_row = ("AAPL", good["t"] * 1000, good["p"], good["v"])
    before, after = _trades(RECORDED[:3]), _trades(RECORDED[3:])
    assert _flatten(batches) == before + [good_row] * len(bad_trades) + after


async def test_finnhub_error_message_about_the_key_is_fatal() -> None:
    # Arrange
    async with FakeFinnhub(replay_when_subscribed=ALL) as fake:
        await fake.inject('{"msg":"Invalid API key.","type":"error"}', after_frames=2)
        connector = _connector(fake)

        # Act
        with pytest.raises(FatalError, match="Invalid API key"):
            async with asyncio.timeout(4), connector_stream(connector) as stream:
                async for _ in stream:
                    pass


async def test_finnhub_abrupt_close_is_transient_after_everything_sent() -> None:
    # Arrange
    async with FakeFinnhub(replay_when_subscribed=ALL) as fake:
        await fake.drop_connections(after_frames=5)
        connector = _connector(fake)
        items: list[object] = []

        # Act
        with pytest.raises(TransientError, match="no close frame"):
            async with asyncio.timeout(4), connector_stream(connector) as stream:
                async for item in stream:
                    items.append(item)

    # Assert
    assert [len(b) for b in items if isinstance(b, TradeBatch)] == [
        len(f["data"]) for f in RECORDED[:5]
    ]


async def test_finnhub_silent_open_socket_is_stale_and_transient() -> None:
    # Arrange
    async with FakeFinnhub(ping_interval_s=0.05) as fake:
        fake.go_silent()
        connector = _connector(fake, stale_after_s=0.3)

        # Act
        with pytest.raises(TransientError, match="stale socket"):
            async with asyncio.timeout(3), connector_stream(connector) as stream:
                await anext(stream)

    # Assert
    assert fake.connections == 1


async def test_finnhub_pings_keep_a_quiet_socket_alive() -> None:
    # Arrange
    async with FakeFinnhub(ping_interval_s=0.05, replay_when_subscribed=ALL) as fake:
        connector = _connector(fake, stale_after_s=0.4)
        async with connector_stream(connector) as stream:
            await _take(stream, len(_trades(RECORDED)))  # the recording is over: pings only

            # Act, Assert: three stale periods pass with no trade and no error
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.2):
                    await anext(stream)
        assert fake.connections == 1


async def test_finnhub_unreachable_provider_is_transient_for_stream_and_candles() -> None:
    # Arrange: a port that nothing listens on any more
    async with FakeFinnhub() as fake:
        connector = _connector(fake)

    # Act, Assert
    with pytest.raises(TransientError, match="cannot reach Finnhub"):
        async with asyncio.timeout(4), connector_stream(connector) as stream:
            await anext(stream)
    with pytest.raises(TransientError, match="cannot reach"):
        await connector.candles("AAPL", "1", OPEN_S, OPEN_S + 600)


async def test_finnhub_fake_runs_as_a_module_on_any_free_port_with_the_key_it_is_given() -> None:
    # Arrange: the key in the environment of both sides, as `make up` would hand it out
    env = {k: v for k, v in os.environ.items() if k != "MS_FINNHUB_API_KEY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "connectors.fakes.finnhub", "--port", "0", "--speed", "0", "--once"),
        "--recorded-times",
        cwd=ROOT,
        env=env | {"FINNHUB_API_KEY": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(4):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"(ws://127\.0\.0\.1:\d+)/\?token=\*\*\*,", line)
        assert match and SECRET not in line, line
        connector = FinnhubConnector(
            FinnhubConfig(ws_url=match[1], symbols="MSFT", api_key=SecretStr(SECRET))
        )

        # Act
        async with connector_stream(connector) as stream:
            batches, _ = await _take(stream, 1)

        # Assert
        first_msft = next(f for f in RECORDED if any(t["s"] == "MSFT" for t in f["data"]))
        assert _flatten(batches[:1]) == _trades([first_msft], ("MSFT",))
    finally:
        process.terminate()
        async with asyncio.timeout(4):
            await process.wait()


# candles


def _fold(symbol: str, width_s: int) -> list[tuple[int, float, float, float, float, float]]:
    """Candles folded here from the recording, trade by trade in time order."""
    candles: dict[int, list[float]] = {}
    for trade in sorted((t for f in RECORDED for t in f["data"]), key=lambda t: t["t"]):
        if trade["s"] != symbol:
            continue
        start = trade["t"] // 1000 - (trade["t"] // 1000) % width_s
        c = candles.setdefault(start, [trade["p"], trade["p"], trade["p"], trade["p"], 0.0])
        c[1], c[2], c[3], c[4] = (
            max(c[1], trade["p"]),
            min(c[2], trade["p"]),
            trade["p"],
            c[4] + trade["v"],
        )
    return [(start * 1_000_000, *c) for start, c in sorted(candles.items())]  # type: ignore[misc]


async def test_finnhub_candles_parse_exactly() -> None:
    # Arrange
    async with FakeFinnhub() as fake:
        connector = _connector(fake)

        # Act
        candles = await connector.candles("MSFT", "1", OPEN_S, OPEN_S + 3599)

    # Assert
    assert candles.ts_us.tolist() == [(OPEN_S + 60 * i) * 1_000_000 for i in range(3)]
    columns = zip(
        candles.ts_us.tolist(),
        candles.open.tolist(),
        candles.high.tolist(),
        candles.low.tolist(),
        candles.close.tolist(),
        candles.volume.tolist(),
        strict=True,
    )
    assert list(columns) == _fold("MSFT", 60)
    assert candles.ts_us.dtype.name == "int64" and candles.volume.dtype.name == "float64"


async def test_finnhub_candles_no_data_gives_empty_columns() -> None:
    # Arrange
    async with FakeFinnhub() as fake:
        connector = _connector(fake)

        # Act: the day before the recording
        candles = await connector.candles("AAPL", "D", OPEN_S - 2 * 86_400, OPEN_S - 86_400)

    # Assert
    assert len(candles) == 0
    for column in (candles.open, candles.high, candles.low, candles.close, candles.volume):
        assert column.shape == (0,) and column.dtype.name == "float64"
    assert candles.ts_us.shape == (0,) and candles.ts_us.dtype.name == "int64"


async def test_finnhub_candles_rate_limited_is_transient_with_retry_after() -> None:
    # Arrange
    async with FakeFinnhub() as fake:
        connector = _connector(fake)
        fake.rate_limit(retry_after_s=7)

        # Act
        with pytest.raises(RateLimitedError) as raised:
            await connector.candles("AAPL", "1", OPEN_S, OPEN_S + 600)
        fake.rate_limit(retry_after_s=None)
        with pytest.raises(RateLimitedError) as unsaid:
            await connector.candles("AAPL", "1", OPEN_S, OPEN_S + 600)

    # Assert
    assert isinstance(raised.value, TransientError)
    assert raised.value.retry_after_s == 7.0 and "HTTP 429" in str(raised.value)
    assert unsaid.value.retry_after_s is None


async def test_finnhub_candles_refused_key_is_fatal_without_the_key() -> None:
    async with FakeFinnhub() as fake:
        with pytest.raises(FatalError, match="HTTP 401") as raised:
            await _connector(fake, api_key=SECRET).candles("AAPL", "1", OPEN_S, OPEN_S + 600)
    assert SECRET not in str(raised.value)


def test_finnhub_parse_candles_rejects_columns_that_differ_or_hold_text() -> None:
    with pytest.raises(MalformedResponseError, match="differ in length"):
        parse_candles(b'{"s":"ok","t":[1,2],"o":[1],"h":[1],"l":[1],"c":[1],"v":[1]}', "X", "1")
    with pytest.raises(MalformedResponseError, match="more than numbers"):
        parse_candles(b'{"s":"ok","t":[1],"o":["1"],"h":[1],"l":[1],"c":[1],"v":[1]}', "X", "1")
    with pytest.raises(MalformedResponseError, match="no access"):
        parse_candles(b'{"error":"no access"}', "X", "1")


def test_finnhub_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 6, 10, 13, 30, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Tue, 10 Jun 2025 13:30:30 GMT", now) == 30.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


# frames and settings


def test_finnhub_ping_frame_is_nothing_and_price_updates_are_skipped() -> None:
    ping = parse_frame('{"type":"ping"}', 1)
    assert (ping.trades, ping.rejected, ping.error) == (None, [], None)
    fx = orjson.dumps(
        {
            "data": [{"p": 1.0843, "s": "OANDA:EUR_USD", "t": 1_749_562_200_000, "v": 0}],
            "type": "trade",
        }
    )
    frame = parse_frame(fx, 1)
    assert (frame.trades, frame.rejected, frame.price_updates) == (None, [], 1)


def test_finnhub_config_takes_the_operators_key_name_and_hides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MS_FINNHUB_API_KEY", raising=False)
    monkeypatch.setenv("FINNHUB_API_KEY", SECRET)
    config = FinnhubConfig()
    assert config.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    monkeypatch.setenv("MS_FINNHUB_API_KEY", "ours-wins")
    assert FinnhubConfig().api_key.get_secret_value() == "ours-wins"


def test_finnhub_config_without_a_key_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MS_FINNHUB_API_KEY", raising=False)
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    with pytest.raises(ValidationError) as raised:
        FinnhubConfig()
    (error,) = raised.value.errors()
    assert error["loc"] == ("api_key",)
    assert "FINNHUB_API_KEY" in error["msg"] and "MS_FINNHUB_API_KEY" in error["msg"]


def test_finnhub_config_cleans_symbols_and_refuses_a_token_in_the_url() -> None:
    config = FinnhubConfig(symbols=" AAPL, ,BINANCE:BTCUSDT,AAPL", api_key=SecretStr("k"))
    assert FinnhubConnector(config).symbols == ("AAPL", "BINANCE:BTCUSDT")
    with pytest.raises(ValidationError, match="whitespace"):
        FinnhubConfig(symbols="AA PL", api_key=SecretStr("k"))
    with pytest.raises(ValidationError, match="token"):
        FinnhubConfig(ws_url="wss://ws.finnhub.io?token=abc", api_key=SecretStr("k"))
