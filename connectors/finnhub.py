"""Finnhub: real-time trades over its WebSocket, and stock candles over REST for history.

A session opens `wss://ws.finnhub.io?token=KEY`, sends `{"type":"subscribe","symbol":S}` for
each symbol and turns every `{"type":"trade","data":[{"s","p","t","v","c"}]}` frame into one
TradeBatch (`t` is in milliseconds; `c`, the trade conditions, is not carried). Finnhub also
sends `{"type":"ping"}` every minute or two and `{"type":"error","msg":...}`. Finnhub refuses
a bad key with HTTP 401 on the handshake: a FatalError, never retried. A dropped socket, or one
silent (pings included) for `stale_after_s`, is a TransientError: the runner reconnects and the
new session subscribes again. Price updates with `v` = 0 (what venues without trades send) are
not trades: they are counted in `price_updates` and skipped. Documented at
https://finnhub.io/docs/api/websocket-trades and https://finnhub.io/docs/api/stock-candles.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, get_args
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp
import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.retry_after import retry_after_s
from connectors.urls import http_url
from shared.errors import FatalError, MarketstreamError, TransientError
from shared.models import TradeBatch
from shared.symbols import symbol_problem, well_formed_symbols

log = logging.getLogger(__name__)

WS_URL: Final = "wss://ws.finnhub.io"
REST_URL: Final = "https://finnhub.io/api/v1"
SOURCE: Final = "finnhub"
Resolution = Literal["1", "5", "15", "30", "60", "D", "W", "M"]
RESOLUTIONS: Final[tuple[str, ...]] = get_args(Resolution)
# Finnhub documents no wording for a refused key on an open socket; its REST answer is
# {"error":"Invalid API key."}, so an error message like that is taken as one.
KEY_REFUSED: Final = re.compile(r"api key|token|unauthori[sz]ed", re.IGNORECASE)
TRADE_FIELDS: Final = ("s", "p", "t", "v")
MAX_TS_MS: Final = 10**13  # the year 2286: a larger `t` is not milliseconds


# parsing: frames and candle responses to domain values, no sockets here


@dataclass(slots=True)
class Frame:
    """What one frame held: its trades as one batch (None without trades), what was rejected,
    the provider's error message if it was an error, and how many price updates were skipped."""

    trades: TradeBatch | None = None
    rejected: list[Rejected] = field(default_factory=list)
    error: str | None = None
    price_updates: int = 0


def _number(value: object) -> float | None:
    """The value as a finite float, or None if it is not a JSON number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _trade_problem(trade: dict[str, Any]) -> tuple[str, str] | None:
    """Why one element of `data` is not a trade, as (reason, detail), or None if it is one."""
    if missing := [k for k in TRADE_FIELDS if trade.get(k) is None]:
        return "malformed_trade", f"missing {', '.join(missing)}"
    symbol = trade["s"]
    if not isinstance(symbol, str):
        return "bad_symbol", f"s {symbol!r} is not a string"
    if problem := symbol_problem(symbol):
        return "bad_symbol", problem
    price = _number(trade["p"])
    if price is None or price <= 0:
        return "bad_price", f"p {trade['p']!r} is not a finite number > 0"
    ts_ms = trade["t"]
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not 0 < ts_ms < MAX_TS_MS:
        return "bad_timestamp", f"t {ts_ms!r} is not milliseconds since the epoch"
    size = _number(trade["v"])
    if size is None or size < 0:
        return "bad_size", f"v {trade['v']!r} is not a finite number >= 0"
    conditions = trade.get("c")
    if conditions is not None and not (
        isinstance(conditions, list) and all(isinstance(c, str) for c in conditions)
    ):
        return "malformed_trade", f"c {conditions!r} is not a list of strings"
    return None


def parse_trades(data: list[Any], ts_recv_us: int, source: str = SOURCE) -> Frame:
    """Turn the `data` of a trade frame into one batch; reject bad trades one by one.

    A rejected trade's payload is that trade, as JSON; the frame's other trades are kept.
    """
    frame = Frame()
    positions: dict[str, int] = {}
    index: list[int] = []
    ts_ms: list[int] = []
    price: list[float] = []
    size: list[float] = []
    for position, trade in enumerate(data):
        if not isinstance(trade, dict):
            detail = f"data[{position}] is a JSON {type(trade).__name__}, not an object"
            frame.rejected.append(Rejected("malformed_trade", detail, orjson.dumps(trade)))
            continue
        if problem := _trade_problem(trade):
            reason, detail = problem
            frame.rejected.append(
                Rejected(reason, f"data[{position}]: {detail}", orjson.dumps(trade))
            )
            continue
        if trade["v"] == 0:
            frame.price_updates += 1
            continue
        index.append(positions.setdefault(trade["s"], len(positions)))
        ts_ms.append(trade["t"])
        price.append(trade["p"])
        size.append(trade["v"])
    if index:
        ts_event_us = np.array(ts_ms, dtype=np.int64) * 1000
        frame.trades = TradeBatch(
            source=source,
            instruments=tuple(positions),
            instrument_index=np.array(index, dtype=np.int32),
            ts_event_us=ts_event_us,
            ts_recv_us=np.full(len(index), ts_recv_us, dtype=np.int64),
            price=np.array(price, dtype=np.float64),
            size=np.array(size, dtype=np.float64),
        )
    return frame


def parse_frame(payload: bytes | str, ts_recv_us: int, source: str = SOURCE) -> Frame:
    """Parse one WebSocket frame received at `ts_recv_us`; never raises for bad input.

    A ping gives an empty Frame; an error frame gives its message and a `provider_error`
    rejection; anything else that is not a trade frame is rejected whole, with its bytes.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Frame(rejected=[Rejected("undecodable", f"not JSON: {exc}", raw)])
    if not isinstance(message, dict):
        detail = f"a frame is a JSON object, not a {type(message).__name__}"
        return Frame(rejected=[Rejected("malformed_frame", detail, raw)])
    kind = message.get("type")
    if kind == "trade":
        data = message.get("data")
        if not isinstance(data, list):
            detail = f"a trade frame's data is a list, not {type(data).__name__}"
            return Frame(rejected=[Rejected("malformed_frame", detail, raw)])
        return parse_trades(data, ts_recv_us, source)
    if kind == "ping":
        return Frame()
    if kind == "error":
        text = str(message.get("msg", ""))
        return Frame(rejected=[Rejected("provider_error", text, raw)], error=text)
    if not isinstance(kind, str):
        return Frame(rejected=[Rejected("malformed_frame", f"type {kind!r} is not a string", raw)])
    return Frame(rejected=[Rejected("unknown_type", f"type {kind!r}", raw)])


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """OHLCV candles as columns; candle i starts at `ts_us[i]` (µs since the epoch, UTC)."""

    symbol: str
    resolution: str
    ts_us: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ts_us)

    @classmethod
    def empty(cls, symbol: str, resolution: str) -> Candles:
        f64 = np.empty(0, dtype=np.float64)
        return cls(symbol, resolution, np.empty(0, dtype=np.int64), f64, f64, f64, f64, f64)


class MalformedResponseError(MarketstreamError):
    """Finnhub answered with a body that is not the documented response."""


class RateLimitedError(TransientError):
    """HTTP 429: ask again after `retry_after_s` seconds (None: Finnhub did not say)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


CANDLE_COLUMNS: Final = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


def parse_candles(body: bytes, symbol: str, resolution: str) -> Candles:
    """Parse a /stock/candle response: `s` ok with the columns t, o, h, l, c, v (t in seconds),
    or `s` no_data, which gives no candles. Raise MalformedResponseError for anything else."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponseError(f"{symbol} candles: not JSON ({exc})") from exc
    if not isinstance(message, dict):
        raise MalformedResponseError(f"{symbol} candles: a {type(message).__name__}, not an object")
    status = message.get("s")
    if status == "no_data":
        return Candles.empty(symbol, resolution)
    if status != "ok":
        said = message.get("error", f"s {status!r}")
        raise MalformedResponseError(f"{symbol} candles: {said}")
    columns: dict[str, NDArray[Any]] = {}
    for key in ("t", *CANDLE_COLUMNS):
        values = message.get(key)
        if not isinstance(values, list):
            raise MalformedResponseError(f"{symbol} candles: {key} is not a list")
        try:
            array = np.asarray(values)
        except ValueError:  # lists nested to different depths, e.g. [1, [2]]
            raise MalformedResponseError(
                f"{symbol} candles: {key} holds more than numbers"
            ) from None
        kinds = "iu" if key == "t" else "iuf"
        if len(values) and (
            array.ndim != 1 or array.dtype.kind not in kinds or array.dtype == np.bool_
        ):
            raise MalformedResponseError(f"{symbol} candles: {key} holds more than numbers")
        columns[key] = array
    if len({len(c) for c in columns.values()}) != 1:
        lengths = ", ".join(f"{k} {len(c)}" for k, c in columns.items())
        raise MalformedResponseError(f"{symbol} candles: columns differ in length ({lengths})")
    return Candles(
        symbol=symbol,
        resolution=resolution,
        ts_us=columns["t"].astype(np.int64) * 1_000_000,
        **{name: columns[key].astype(np.float64) for key, name in CANDLE_COLUMNS.items()},
    )


def _error_text(body: bytes) -> str:
    """Finnhub's `error` from a JSON error body, or the start of the body as text."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:120].decode(errors="replace").strip()
    if isinstance(message, dict) and "error" in message:
        return str(message["error"])
    return body[:120].decode(errors="replace").strip()


async def fetch_candles(
    rest_url: str,
    api_key: SecretStr,
    symbol: str,
    resolution: Resolution,
    start_s: int,
    end_s: int,
    *,
    timeout_s: float = 10.0,
    session: aiohttp.ClientSession | None = None,
) -> Candles:
    """GET /stock/candle for [start_s, end_s] (UNIX seconds) and return the candles.

    The key goes in the X-Finnhub-Token header, which Finnhub accepts as well as `token=`, so
    that no URL (in an error, a log or a proxy) carries it. Raise FatalError if the key is
    refused (401, 403) or the request is wrong (other 4xx), RateLimitedError on 429,
    TransientError for 5xx, timeouts and network errors, MalformedResponseError for a body
    that is not the documented one.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    params = {"symbol": symbol, "resolution": resolution, "from": str(start_s), "to": str(end_s)}
    headers = {"X-Finnhub-Token": api_key.get_secret_value(), "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    owned = session is None
    client = aiohttp.ClientSession() if session is None else session
    try:
        async with client.get(
            f"{rest_url}/stock/candle", params=params, headers=headers, timeout=timeout
        ) as response:
            status, body = response.status, await response.read()
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        cause = str(exc) or type(exc).__name__
        raise TransientError(f"{symbol} candles: cannot reach {rest_url}: {cause}") from exc
    finally:
        if owned:
            await client.close()
    if status == 200:
        return parse_candles(body, symbol, resolution)
    said = _error_text(body)
    if status in (401, 403):
        raise FatalError(
            f"Finnhub refused the API key for {symbol} candles (HTTP {status}: {said})"
        )
    if status == 429:
        wait_s = retry_after_s(retry_after)
        after = f"; retry after {wait_s:g} s" if wait_s is not None else ""
        raise RateLimitedError(f"Finnhub rate limit reached (HTTP 429: {said}){after}", wait_s)
    if status >= 500 or status == 408:
        raise TransientError(f"{symbol} candles: Finnhub answered HTTP {status}: {said}")
    raise FatalError(f"{symbol} candles: Finnhub answered HTTP {status}: {said}")


# settings and the connector


class FinnhubConfig(ConnectorConfig):
    model_config = SettingsConfigDict(
        env_prefix="MS_FINNHUB_", extra="forbid", populate_by_name=True, loc_by_alias=False
    )

    ws_url: str = Field(default=WS_URL, description="the trades WebSocket, without the token")
    rest_url: str = Field(default=REST_URL, description="the REST API's base URL, for candles")
    symbols: str = Field(
        default="AAPL,MSFT,BINANCE:BTCUSDT",
        min_length=1,
        description="comma-separated symbols as Finnhub names them, e.g. AAPL,BINANCE:BTCUSDT",
    )
    # FINNHUB_API_KEY is the name operators (and Finnhub's own examples) already use.
    api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("MS_FINNHUB_API_KEY", "FINNHUB_API_KEY"),
        validate_default=True,
        description="the Finnhub API key (FINNHUB_API_KEY or MS_FINNHUB_API_KEY)",
    )
    stale_after_s: float = Field(
        default=180.0, gt=0, description="no frame, pings included, for this long: reconnect"
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, description="deadline for the WebSocket handshake"
    )
    request_timeout_s: float = Field(
        default=10.0, gt=0, description="deadline for one REST request"
    )

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, key: SecretStr) -> SecretStr:
        if not key.get_secret_value().strip():
            raise ValueError("no Finnhub API key: set FINNHUB_API_KEY (or MS_FINNHUB_API_KEY)")
        return SecretStr(key.get_secret_value().strip())

    @field_validator("ws_url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
        if any(k == "token" for k, _ in parse_qsl(parts.query)):
            raise ValueError("leave the token out of the URL; set FINNHUB_API_KEY instead")
        return url

    @field_validator("rest_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)

    @field_validator("symbols")
    @classmethod
    def _well_formed(cls, text: str) -> str:
        return well_formed_symbols(text)


def _closed(exc: ConnectionClosed) -> TransientError:
    close = exc.rcvd
    how = f"close code {close.code}" if close is not None else "no close frame"
    return TransientError(f"Finnhub closed the connection ({how})")


class _RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for the websockets library that masks the key: its debug log shows the path."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self.secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        self.logger.log(level, "%s", text.replace(self.secret, "***"), **kwargs)


class FinnhubConnector(Connector):
    name: ClassVar[str] = "finnhub"
    Config: ClassVar[type[ConnectorConfig]] = FinnhubConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, FinnhubConfig)
        self.cfg = config
        self.symbols = tuple(config.symbols.split(","))
        self.price_updates = 0  # trades with v = 0 received and skipped

    def _url(self, token: str) -> str:
        parts = urlsplit(self.cfg.ws_url)
        query = urlencode([*parse_qsl(parts.query), ("token", token)], safe="*")
        return urlunsplit(parts._replace(path=parts.path or "/", query=query))

    def _redact(self, text: str) -> str:
        key = self.cfg.api_key.get_secret_value()
        return text.replace(key, "***").replace(quote(key, safe=""), "***")

    async def _open(self) -> ClientConnection:
        """Connect; raise FatalError if the key or the URL is refused, TransientError otherwise."""
        key = self.cfg.api_key.get_secret_value()
        shown = self._url("***")
        try:
            return await connect(
                self._url(key),
                open_timeout=self.cfg.open_timeout_s,
                close_timeout=2,
                max_size=2**22,
                logger=_RedactingLogger(logging.getLogger("websockets.client"), key),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise FatalError(
                    f"Finnhub refused the API key (HTTP {status} on the WebSocket handshake at "
                    f"{shown}): set a valid FINNHUB_API_KEY or MS_FINNHUB_API_KEY"
                ) from exc
            if 400 <= status < 500 and status not in (408, 429):
                raise FatalError(
                    f"{shown} answered the WebSocket handshake with HTTP {status}: "
                    "is MS_FINNHUB_WS_URL Finnhub's trades WebSocket?"
                ) from exc
            raise TransientError(
                f"Finnhub answered the WebSocket handshake with HTTP {status}"
            ) from exc
        except InvalidURI:
            # from None: the InvalidURI's own message holds the URL with the key in it
            raise FatalError(f"MS_FINNHUB_WS_URL {shown} is not a valid WebSocket URL") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            cause = self._redact(str(exc) or type(exc).__name__)
            raise TransientError(f"cannot reach Finnhub at {shown}: {cause}") from exc

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        socket = await self._open()
        async with socket:
            try:
                for symbol in self.symbols:
                    subscribe = {"type": "subscribe", "symbol": symbol}
                    await socket.send(orjson.dumps(subscribe).decode())
            except ConnectionClosed as exc:
                raise _closed(exc) from exc
            log.info("finnhub: subscribed to %s at %s", ",".join(self.symbols), self._url("***"))
            while True:
                try:
                    async with asyncio.timeout(self.cfg.stale_after_s):
                        payload = await socket.recv()
                except TimeoutError as exc:
                    raise TransientError(
                        f"no frame from Finnhub, not even a ping, for {self.cfg.stale_after_s:g} s:"
                        " stale socket"
                    ) from exc
                except ConnectionClosed as exc:
                    raise _closed(exc) from exc
                frame = parse_frame(payload, time.time_ns() // 1000, self.source)
                if frame.error is not None:
                    self._on_error(frame.error)
                self.price_updates += frame.price_updates
                for rejected in frame.rejected:
                    yield rejected
                if frame.trades is not None:
                    yield frame.trades

    def _on_error(self, message: str) -> None:
        if KEY_REFUSED.search(message):
            raise FatalError(
                f"Finnhub refused the API key ({self._redact(message)}): set a valid "
                "FINNHUB_API_KEY or MS_FINNHUB_API_KEY"
            )
        log.warning("finnhub: error message from Finnhub: %s", self._redact(message))

    async def candles(
        self,
        symbol: str,
        resolution: Resolution,
        start_s: int,
        end_s: int,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> Candles:
        """Fetch `symbol`'s candles over [start_s, end_s] from the configured REST API."""
        return await fetch_candles(
            self.cfg.rest_url,
            self.cfg.api_key,
            symbol,
            resolution,
            start_s,
            end_s,
            timeout_s=self.cfg.request_timeout_s,
            session=session,
        )
