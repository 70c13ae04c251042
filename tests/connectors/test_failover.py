"""Failover between the fake Finnhub (primary) and the fake Alpaca (backup), both replaying the
same market: the runbook's "set an invalid key" scenario, and the way back."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.alpaca import AlpacaConfig, AlpacaConnector
from connectors.failover import FailoverConfig, FailoverConnector, load_universe
from connectors.fakes import alpaca as fake_alpaca
from connectors.fakes import finnhub as fake_finnhub
from connectors.finnhub import FinnhubConfig, FinnhubConnector
from shared.errors import ConfigError
from shared.models import TradeBatch

OPEN_MS = 1_749_562_200_000  # 2025-06-10T13:30:00Z, the US open
TRADES = [(OPEN_MS + 100 * k, round(201.5 + 0.01 * (k % 17), 2), 100 + k % 5) for k in range(300)]


def _finnhub_frames() -> list[dict[str, object]]:
    return [
        {"type": "trade", "data": [{"s": "AAPL", "p": p, "t": t, "v": v, "c": ["1"]}]}
        for t, p, v in TRADES
    ]


def _alpaca_frames() -> list[list[dict[str, object]]]:
    def rfc3339(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"

    return [
        [
            {
                "T": "t",
                "S": "AAPL",
                "i": k,
                "x": "V",
                "p": p,
                "s": v,
                "c": ["@"],
                "z": "C",
                "t": rfc3339(t),
            }
        ]
        for k, (t, p, v) in enumerate(TRADES)
    ]


def _failover(
    finnhub: fake_finnhub.FakeFinnhub, alpaca: fake_alpaca.FakeAlpaca, **settings: float
) -> FailoverConnector:
    providers = {
        "finnhub": FinnhubConnector(
            FinnhubConfig(ws_url=finnhub.url, api_key=fake_finnhub.API_KEY, symbols="AAPL")
        ),
        "alpaca": AlpacaConnector(
            AlpacaConfig(
                url=alpaca.url,
                symbols="AAPL",
                key_id=fake_alpaca.KEY_ID,
                secret_key=fake_alpaca.SECRET_KEY,
                feed="crypto",  # its stale watchdog must not care about market hours here
            )
        ),
    }
    # The fakes replay recorded times, a year behind the wall clock: feed delay is no signal
    config = FailoverConfig(
        symbols="AAPL",
        providers="finnhub,alpaca",
        open_s=0.5,
        return_after_s=0.2,
        latency_budget_s=1e9,
        **settings,
    )
    return FailoverConnector(config, providers)


async def test_failover_revoked_key_moves_to_backup_without_gap_or_repeat_and_back() -> None:
    # Arrange: both fakes replay the same 300 trades, 10 ms apart
    async with (
        fake_finnhub.FakeFinnhub(_finnhub_frames(), speed=10) as finnhub,
        fake_alpaca.FakeAlpaca(_alpaca_frames(), frame_interval_s=0.01, live_times=False) as alpaca,
    ):
        failover = _failover(finnhub, alpaca)
        batches: list[TradeBatch] = []
        revoked_at = moved_after_s = None
        stats_when_moved: dict[str, dict[str, object]] = {}

        # Act: revoke Finnhub's key after 60 trades; restore it once Alpaca serves
        async with asyncio.timeout(30):
            async for item in failover.stream():
                assert isinstance(item, TradeBatch), item
                batches.append(item)
                forwarded = sum(len(b) for b in batches)
                if revoked_at is None and forwarded >= 60:
                    revoked_at = time.monotonic()
                    await finnhub.revoke_keys()
                if moved_after_s is None and item.provider == "alpaca":
                    moved_after_s = time.monotonic() - (revoked_at or 0)
                    stats_when_moved = failover.provider_stats()
                    finnhub.keys_valid = True
                if int(max(b.ts_event_us.max() for b in batches)) == TRADES[-1][0] * 1000:
                    break

    # Assert: every trade once, in the feed's clock, from finnhub, then alpaca, then finnhub
    times = sorted(t for b in batches for t in b.ts_event_us.tolist())
    assert times == [t * 1000 for t, _, _ in TRADES]
    assert {b.source for b in batches} == {"failover"}
    runs = [
        b.provider for k, b in enumerate(batches) if k == 0 or b.provider != batches[k - 1].provider
    ]
    assert runs == ["finnhub", "alpaca", "finnhub"]
    assert moved_after_s is not None and moved_after_s < 2.0
    assert stats_when_moved["finnhub"]["state"] == "open"
    assert stats_when_moved["finnhub"]["errors"] == {"transient": 1, "fatal": 1}
    assert stats_when_moved["alpaca"]["instruments_served"] == 1


def test_universe_file_orders_providers_per_symbol_and_skips_inactive(tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_text(
        "symbol,exchange,asset_type,tier,active,providers\n"
        "AAPL,NASDAQ,stock,T0,true,finnhub|alpaca\n"
        "BRK.B,NYSE,stock,T1,true,alpaca|finnhub\n"
        "GME,NYSE,stock,T2,false,finnhub\n"
    )

    universe = load_universe(FailoverConfig(universe_file=path))

    assert universe == {"AAPL": ["finnhub", "alpaca"], "BRK.B": ["alpaca", "finnhub"]}


def test_universe_file_without_providers_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_text("symbol,providers\nAAPL,finnhub\nMSFT,\n")

    with pytest.raises(ConfigError, match="line 3: symbol and providers are required"):
        load_universe(FailoverConfig(universe_file=path))


async def test_failover_silent_primary_moves_once_stale_and_misses_nothing_meanwhile() -> None:
    # Arrange: the primary's socket stays open and goes quiet after 60 trades
    async with (
        fake_finnhub.FakeFinnhub(_finnhub_frames(), speed=10) as finnhub,
        fake_alpaca.FakeAlpaca(_alpaca_frames(), frame_interval_s=0.01, live_times=False) as alpaca,
    ):
        failover = _failover(finnhub, alpaca, stale_after_s=0.3)
        batches: list[TradeBatch] = []

        # Act
        async with asyncio.timeout(30):
            async for item in failover.stream():
                assert isinstance(item, TradeBatch), item
                batches.append(item)
                if sum(len(b) for b in batches) >= 60:
                    finnhub.go_silent()
                if int(max(b.ts_event_us.max() for b in batches)) == TRADES[-1][0] * 1000:
                    break

    # Assert: what Alpaca sent while Finnhub was silent, before the move, is not lost
    times = sorted(t for b in batches for t in b.ts_event_us.tolist())
    assert times == [t * 1000 for t, _, _ in TRADES]
    runs = [
        b.provider for k, b in enumerate(batches) if k == 0 or b.provider != batches[k - 1].provider
    ]
    assert runs == ["finnhub", "alpaca"]
