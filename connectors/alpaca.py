"""Alpaca's real-time market data: stocks (`iex`, `sip`) over stream v2, crypto over v1beta3.

A session connects, waits for `connected`, authenticates within Alpaca's deadline, subscribes
to the trades of its symbols and turns each frame into one TradeBatch (see alpaca_frames).
Every reconnect runs a new session, so it subscribes again. Alpaca's error codes decide what
the runner does: a refused key or a plan without the feed (402, 409) and requests it will
refuse again (400, 405, 410) are fatal for the provider; a taken connection slot (406), a
missed auth deadline (404), a slow client (407) or an internal error (500) are transient.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import ClassVar, Final, Literal

import msgpack
import numpy as np
import orjson
import websockets
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import CliSuppress, SettingsConfigDict

from connectors.alpaca_frames import Control, FrameDecoder
from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.sessions import IEX_HOURS, SIP_HOURS, us_equities_trading
from shared.errors import FatalError, TransientError
from shared.models import ProviderBarBatch

log = logging.getLogger(__name__)

STREAM_URLS: Final = {
    "iex": "wss://stream.data.alpaca.markets/v2/iex",
    "sip": "wss://stream.data.alpaca.markets/v2/sip",
    "crypto": "wss://stream.data.alpaca.markets/v1beta3/crypto/us",
}
FATAL_CODES: Final = {400, 401, 402, 403, 405, 409, 410}
MSGPACK: Final = "application/msgpack"
CLOSE_TIMEOUT_S: Final = 0.5
MAX_TRACKED_BARS: Final = 200_000
DAY_US: Final = 86_400_000_000


class AlpacaConfig(ConnectorConfig):
    model_config = SettingsConfigDict(
        env_prefix="MS_ALPACA_", extra="forbid", populate_by_name=True
    )

    feed: Literal["iex", "sip", "crypto"] = Field("iex", description="Alpaca data feed")
    url: str = Field("", description="stream URL; empty: Alpaca's for the feed")
    rest_url: str = Field(
        "https://data.alpaca.markets", description="market-data REST base URL, for history"
    )
    symbols: str = Field("AAPL,MSFT", min_length=1, description="comma-separated symbols")
    # The names operators already use (Alpaca's docs, alpaca-py), besides ours; from the
    # environment only, never flags (a command line is visible to every user of the machine).
    key_id: CliSuppress[SecretStr | None] = Field(
        None, validation_alias=AliasChoices("MS_ALPACA_KEY_ID", "ALPACA_API_KEY", "APCA_API_KEY_ID")
    )
    secret_key: CliSuppress[SecretStr | None] = Field(
        None,
        validation_alias=AliasChoices(
            "MS_ALPACA_SECRET_KEY", "ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY"
        ),
    )
    encoding: Literal["msgpack", "json"] = Field("msgpack", description="frame encoding")
    bars: bool = Field(
        True, description="also publish Alpaca's minute bars, their updates and daily bars"
    )
    quotes: bool = Field(True, description="also publish the top-of-book quotes")
    statuses: bool = Field(
        True, description="also publish trading statuses (halts, resumptions); stocks only"
    )
    auth_timeout_s: float = Field(10.0, gt=0, description="Alpaca's deadline for auth")
    stale_after_s: float = Field(
        60.0, gt=0, description="no trade for this long while the market trades: reconnect"
    )


class AlpacaConnector(Connector):
    name: ClassVar[str] = "alpaca"
    Config: ClassVar[type[ConnectorConfig]] = AlpacaConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, AlpacaConfig)
        self.cfg = config
        self.symbols = [s.strip() for s in config.symbols.split(",") if s.strip()]
        self.url = config.url or STREAM_URLS[config.feed]
        self.unpublished = 0  # quotes, statuses ... received but not published (yet)
        self._revisions: dict[tuple[str, str, int], int] = {}  # (interval, symbol, ts) -> last
        self._frames = FrameDecoder()  # its symbols outlive a session: reconnects reuse them
        # compiled (or loaded from numba's cache) here, not within a session: neither Alpaca's
        # deadline for auth nor the stale-feed watchdog waits for a compiler
        self._frames.warm_up()

    @property
    def stale_after_s(self) -> float:
        return self.cfg.stale_after_s

    def expects_data(self, now: datetime) -> bool:
        if self.cfg.feed == "crypto":
            return True
        return us_equities_trading(now, IEX_HOURS if self.cfg.feed == "iex" else SIP_HOURS)

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        key, secret = self._credentials()
        headers = {"Content-Type": MSGPACK} if self.cfg.encoding == "msgpack" else {}
        try:
            # close_timeout: a session left with frames still queued (reading paused for
            # backpressure) never reads the server's close frame, and would wait 10 s for it
            async with websockets.connect(
                self.url,
                additional_headers=headers,
                open_timeout=10,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=2**24,
            ) as socket:
                await self._expect(socket, "connected", timeout_s=10.0)
                await socket.send(self._request({"action": "auth", "key": key, "secret": secret}))
                await self._expect(socket, "authenticated", timeout_s=self.cfg.auth_timeout_s)
                channels = ["trades"]
                channels += ["quotes"] if self.cfg.quotes else []
                channels += ["bars", "updatedBars", "dailyBars"] if self.cfg.bars else []
                channels += ["statuses"] if self.cfg.statuses and self.cfg.feed != "crypto" else []
                request: dict[str, object] = {"action": "subscribe"}
                request |= {c: self.symbols for c in channels}
                await socket.send(self._request(request))
                async for payload in socket:
                    self.heard_at_s = time.monotonic()
                    frame = self._frames.decode(payload, self.source, time.time_ns() // 1000)
                    for control in frame.controls:
                        self._on_control(control)
                    self.unpublished += frame.unpublished
                    for rejected in frame.rejected:
                        yield rejected
                    if frame.trades is not None:
                        yield frame.trades
                    if frame.quotes is not None:
                        yield frame.quotes
                    for bars in frame.bars.values():
                        yield self._revised(bars)
                    for trading in frame.statuses:
                        yield trading
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise FatalError(f"alpaca refused the connection (HTTP {status})") from exc
            raise TransientError(f"alpaca answered HTTP {status}") from exc
        except websockets.ConnectionClosed as exc:
            raise TransientError(f"alpaca closed the stream ({exc})") from exc
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise TransientError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from exc
        raise TransientError("alpaca ended the stream")

    def _revised(self, bars: ProviderBarBatch) -> ProviderBarBatch:
        """Number each bar's publications: a bar Alpaca sends again (an updated minute bar,
        the day's bar as the day goes on) is a revision of the one before."""
        revisions = []
        for symbol, ts in zip(
            [bars.instruments[i] for i in bars.instrument_index.tolist()],
            bars.ts_us.tolist(),
            strict=True,
        ):
            key = (bars.interval, symbol, ts)
            revisions.append(self._revisions[key] + 1 if key in self._revisions else 0)
            self._revisions[key] = revisions[-1]
        if len(self._revisions) > MAX_TRACKED_BARS:  # forget bars older than two days
            horizon = int(bars.ts_us.max()) - 2 * DAY_US
            self._revisions = {k: r for k, r in self._revisions.items() if k[2] >= horizon}
        return dataclasses.replace(bars, revision=np.array(revisions, dtype=np.int32))

    def _request(self, request: dict[str, object]) -> str | bytes:
        """A request in the encoding negotiated at connect, as Alpaca's own clients send it."""
        if self.cfg.encoding == "msgpack":
            packed: bytes = msgpack.packb(request)
            return packed
        return orjson.dumps(request).decode()

    def _credentials(self) -> tuple[str, str]:
        if self.cfg.key_id is None or self.cfg.secret_key is None:
            raise FatalError(
                "alpaca needs ALPACA_API_KEY and ALPACA_SECRET_KEY (or MS_ALPACA_KEY_ID and "
                "MS_ALPACA_SECRET_KEY) in the environment"
            )
        return self.cfg.key_id.get_secret_value(), self.cfg.secret_key.get_secret_value()

    async def _expect(
        self, socket: websockets.ClientConnection, message: str, timeout_s: float
    ) -> None:
        """Read frames until a `success` with `message`; raise on an error or the deadline."""
        async with asyncio.timeout(timeout_s):
            while True:
                payload = await socket.recv()
                frame = self._frames.decode(payload, self.source, time.time_ns() // 1000)
                for control in frame.controls:
                    self._on_control(control)
                    if control.kind == "success" and control.message == message:
                        return

    def _on_control(self, control: Control) -> None:
        if control.kind == "subscription":
            log.info("alpaca: subscribed to trades of %s", ",".join(control.body.get("trades", [])))
        elif control.kind == "error":
            what = f"alpaca error {control.code}: {control.message}"
            if control.code in FATAL_CODES:
                raise FatalError(what)
            raise TransientError(what)
