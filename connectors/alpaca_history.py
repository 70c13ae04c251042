"""Alpaca's market-data history over REST: one symbol's bars or trades over [start_us, end_us).

Stocks come from `GET /v2/stocks/{bars,trades}?symbols=S` with the configured feed (iex, sip),
crypto from `GET /v1beta3/crypto/us/{bars,trades}?symbols=S`: the multi-symbol endpoints, whose
`{"bars"|"trades": {S: [...]}, "next_page_token": ...}` is the same for both asset classes
(the parsers also take the single-symbol shape, `{"bars": [...], "symbol": S}`). Every
request carries the keys in APCA-API-KEY-ID and APCA-API-SECRET-KEY, never in a URL, and
pages are followed by `page_token` until `next_page_token` is null. A refused key (401, 403)
is a FatalError; HTTP 429 waits for Retry-After, else X-RateLimit-Reset (UNIX seconds), and
asks again; a body that is not the documented JSON (an HTML error page) is a
MalformedResponseError. Documented at https://docs.alpaca.markets/reference/stockbars.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Literal, TypeVar

import aiohttp
import numpy as np
import orjson
from numpy.typing import NDArray

from connectors.alpaca import AlpacaConfig
from connectors.alpaca_frames import TAKER_SIDE
from connectors.budget import GUARD_S, Priority, RequestBudget
from connectors.polled_bars import Bars
from connectors.retry_after import retry_after_s
from connectors.urls import http_url
from shared.errors import ConfigError, FatalError, MarketstreamError, TransientError
from shared.intervals import UNIT_US, parse_interval
from shared.models import Side, TradeBatch
from shared.symbols import symbol_problem

log = logging.getLogger(__name__)

PROVIDER: Final = "alpaca"
# Backfilled trades run on a clock of their own: under the live feed's source, months-old
# trades would be judged late against the live clock (see Connector.source).
SOURCE: Final = "alpaca-history"
MAX_LIMIT: Final = 10_000  # Alpaca's largest page
RATE_WINDOW_S: Final = 60.0  # Alpaca counts requests per minute: the wait if a 429 says none
Adjustment = Literal["raw", "split", "dividend", "spin-off", "all"]
KEYS: Final = "ALPACA_API_KEY and ALPACA_SECRET_KEY (or MS_ALPACA_KEY_ID and MS_ALPACA_SECRET_KEY)"
_RFC3339_UTC: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")
_TITLE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
T = TypeVar("T")


class MalformedResponseError(MarketstreamError):
    """Alpaca answered with a body that is not the documented response."""


class RateLimitedError(TransientError):
    """HTTP 429 asking for a longer wait than the client may take: try after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# parsing: response bodies to columns, no HTTP here


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a response: what it held, and the token of the next page (None: the last)."""

    items: T
    next_page_token: str | None


def alpaca_timeframe(interval: str) -> str:
    """Alpaca's `timeframe` for one of our intervals: 1m -> 1Min, 4h -> 4Hour, 1d -> 1Day.

    Raise ValueError for an interval that is not ours (shared.intervals) or that Alpaca has no
    bars of (seconds).
    """
    length_us = parse_interval(interval)
    minute_us, hour_us = UNIT_US["m"], UNIT_US["h"]
    if length_us == UNIT_US["d"]:
        return "1Day"
    if length_us % hour_us == 0:
        return f"{length_us // hour_us}Hour"
    if length_us % minute_us == 0:
        return f"{length_us // minute_us}Min"
    raise ValueError(f"Alpaca has no {interval} bars: its shortest are 1Min")


def describe_body(body: bytes, content_type: str = "") -> str:
    """What a body that is not JSON is, in a few words: an HTML page by its title, else its start."""
    head = body[:4096]
    if "html" in content_type.lower() or head.lstrip()[:1] == b"<":
        title = _TITLE.search(head)
        if title is None:
            return "an HTML page"
        text = " ".join(title[1].decode(errors="replace").split())[:80]
        return f"an HTML page ({text!r})"
    return repr(head[:80].decode(errors="replace").strip()) if head.strip() else "an empty body"


def error_text(body: bytes, content_type: str = "") -> str:
    """Alpaca's `message` (and `code`) from an error body, else what the body is."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return describe_body(body, content_type)
    said = message.get("message") if isinstance(message, dict) else None
    if not isinstance(said, str):
        return describe_body(body, content_type)
    code = message.get("code")
    return said + (f" (code {code})" if isinstance(code, int) else "")


def _rows(
    body: bytes, key: str, symbol: str, what: str, content_type: str
) -> tuple[list[dict[str, Any]], str | None]:
    """The objects under `key` for `symbol` and the next page's token; raise
    MalformedResponseError unless the body is a documented single- or multi-symbol response."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        described = describe_body(body, content_type)
        raise MalformedResponseError(f"{what}: Alpaca answered {described}, not JSON") from exc
    if not isinstance(message, dict):
        got = type(message).__name__
        raise MalformedResponseError(f"{what}: the response is a JSON {got}, not an object")
    token = message.get("next_page_token")
    if token is not None and not isinstance(token, str):
        raise MalformedResponseError(f"{what}: next_page_token {token!r} is not a string")
    data = message.get(key, ...)
    if data is ...:
        raise MalformedResponseError(f"{what}: the response has no {key!r}")
    if isinstance(data, dict):  # the multi-symbol shape, by symbol
        data = data.get(symbol)
    elif data is not None and message.get("symbol", symbol) != symbol:
        raise MalformedResponseError(f"{what}: the response is for {message['symbol']!r}")
    rows = [] if data is None else data
    if not isinstance(rows, list):
        got = type(rows).__name__
        raise MalformedResponseError(f"{what}: {key} of {symbol} is a JSON {got}, not a list")
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            got = type(row).__name__
            raise MalformedResponseError(
                f"{what}: {key}[{position}] is a JSON {got}, not an object"
            )
    return rows, token or None


def _numbers(
    rows: list[dict[str, Any]], key: str, what: str, *, positive: bool
) -> NDArray[np.float64]:
    """Column `key` of `rows` as floats; raise MalformedResponseError at the first value that is
    not a finite JSON number (booleans are not), or not > 0 (`positive`) or >= 0."""
    values = [row.get(key) for row in rows]
    for position, value in enumerate(values):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise MalformedResponseError(f"{what}: [{position}].{key} {value!r} is not a number")
        if value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise MalformedResponseError(f"{what}: [{position}].{key} {value!r} is not {bound}")
    return np.array(values, dtype=np.float64)


def _times_us(rows: list[dict[str, Any]], what: str) -> NDArray[np.int64]:
    """Column `t` (RFC 3339 UTC, up to nanoseconds) as µs since the epoch, parsed by numpy."""
    texts: list[str] = []
    for position, row in enumerate(rows):
        value = row.get("t")
        if not isinstance(value, str) or not _RFC3339_UTC.fullmatch(value):
            raise MalformedResponseError(
                f"{what}: [{position}].t {value!r} is not an RFC 3339 time"
            )
        texts.append(value[:-1])
    try:
        ns = np.array(texts, dtype="datetime64[ns]")
    except ValueError as exc:  # a well-shaped but impossible date: 2024-02-30
        raise MalformedResponseError(f"{what}: a time is not a real date ({exc})") from exc
    return ns.astype(np.int64) // 1000


def parse_bars(body: bytes, symbol: str, content_type: str = "", what: str = "") -> Page[Bars]:
    """Parse a bars response: each bar's t (its start), o, h, l, c, v; n and vw are not carried.

    Raise MalformedResponseError for anything but the documented response; no bars (`null`, or
    the symbol missing from the map) give empty columns.
    """
    what = what or f"alpaca {symbol} bars"
    rows, token = _rows(body, "bars", symbol, what, content_type)
    bars = Bars(
        ts_us=_times_us(rows, what),
        open=_numbers(rows, "o", what, positive=True),
        high=_numbers(rows, "h", what, positive=True),
        low=_numbers(rows, "l", what, positive=True),
        close=_numbers(rows, "c", what, positive=True),
        volume=_numbers(rows, "v", what, positive=False),
    )
    return Page(bars, token)


def parse_trades(
    body: bytes,
    symbol: str,
    ts_recv_us: int,
    *,
    source: str = SOURCE,
    content_type: str = "",
    what: str = "",
) -> Page[TradeBatch | None]:
    """Parse a trades response into one batch (None without trades): t, p, s, the id `i`, and
    the taker side `tks` (crypto; stocks say none). Raise MalformedResponseError as parse_bars."""
    what = what or f"alpaca {symbol} trades"
    rows, token = _rows(body, "trades", symbol, what, content_type)
    if not rows:
        return Page(None, token)
    n = len(rows)
    takers = [row.get("tks") for row in rows]
    ids = [row.get("i") for row in rows]
    batch = TradeBatch(
        source=source,
        instruments=(symbol,),
        instrument_index=np.zeros(n, dtype=np.int32),
        ts_event_us=_times_us(rows, what),
        ts_recv_us=np.full(n, ts_recv_us, dtype=np.int64),
        price=_numbers(rows, "p", what, positive=True),
        size=_numbers(rows, "s", what, positive=True),
        side=(
            np.array(
                [TAKER_SIDE.get(t, Side.UNKNOWN) if isinstance(t, str) else 0 for t in takers],
                dtype=np.int8,
            )
            if any(isinstance(t, str) for t in takers)
            else None
        ),
        trade_id=(
            tuple("" if i is None else str(i) for i in ids)
            if any(i is not None for i in ids)
            else None
        ),
        provider=PROVIDER,
    )
    return Page(batch, token)


def rate_limit_wait_s(retry_after: str | None, reset: str | None, now_s: float) -> float | None:
    """Seconds a 429 asks to wait: Retry-After, else until X-RateLimit-Reset (UNIX seconds,
    read against `now_s`, the wall clock); None if neither says."""
    said = retry_after_s(retry_after)
    if said is not None:
        return said
    try:
        reset_s = float(reset) if reset else math.nan
    except ValueError:
        return None
    return max(0.0, reset_s - now_s) if math.isfinite(reset_s) else None


def rfc3339(ts_us: int) -> str:
    """µs since the epoch as RFC 3339 UTC with microseconds: 2024-03-12T13:30:00.000000Z."""
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# the client


class AlpacaHistory:
    """Bars and trades of one symbol over a time range from Alpaca's REST API, page by page.

    Ranges are half-open, [start_us, end_us), so that adjacent ranges never repeat a bar or a
    trade. `budget`: the process's Alpaca RequestBudget, if others call Alpaca too; each request
    takes one grant at `priority`. Use as `async with`, or `close` it. Requests raise FatalError
    if the key is refused (401, 403) or the request is (other 4xx), TransientError for 5xx,
    timeouts and network errors, RateLimitedError (transient) for a 429 whose wait passes
    `max_wait_s`, MalformedResponseError for a body that is not the documented one, and
    ValueError for a bad symbol, interval or range.
    """

    def __init__(
        self,
        config: AlpacaConfig,
        *,
        budget: RequestBudget | None = None,
        priority: Priority = Priority.BACKFILL,
        page_limit: int = MAX_LIMIT,
        adjustment: Adjustment = "raw",
        source: str = SOURCE,
        timeout_s: float = 30.0,
        max_wait_s: float = 120.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if config.key_id is None or config.secret_key is None:
            raise FatalError(f"alpaca history needs {KEYS} in the environment")
        if not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"page_limit {page_limit} is not within 1 to {MAX_LIMIT}")
        try:
            self.rest_url = http_url(config.rest_url)
        except ValueError as exc:
            raise ConfigError(f"MS_ALPACA_REST_URL: {exc}") from None
        self.cfg = config
        self.crypto = config.feed == "crypto"
        self.budget, self.priority, self.page_limit = budget, priority, page_limit
        self.adjustment, self.source, self.max_wait_s = adjustment, source, max_wait_s
        self.requests = 0  # sent, 429s included
        self.rate_limited = 0  # 429s waited out
        self._secrets = (config.key_id.get_secret_value(), config.secret_key.get_secret_value())
        self._headers = {
            "APCA-API-KEY-ID": self._secrets[0],
            "APCA-API-SECRET-KEY": self._secrets[1],
            "Accept": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session, self._owned = session, session is None

    async def __aenter__(self) -> AlpacaHistory:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def bars(self, symbol: str, interval: str, start_us: int, end_us: int) -> Bars:
        """Every `interval` bar (1m, 5m, 1h, 1d ...) of `symbol` starting in [start_us, end_us),
        in time order, all pages concatenated: a range's bars are few (a day of 1m bars is at
        most 1440), and one Bars is what a caller folds or publishes."""
        what = f"alpaca {symbol} {interval} bars"
        params = self._params(symbol, start_us, end_us) | {"timeframe": alpaca_timeframe(interval)}
        if not self.crypto:
            params["adjustment"] = self.adjustment
        pages = [
            page
            async for page in self._pages(
                "bars", params, what, lambda body, kind: parse_bars(body, symbol, kind, what)
            )
        ]
        bars = Bars(*(np.concatenate(c) for c in zip(*(_columns(p) for p in pages), strict=True)))
        _check_times(bars.ts_us, start_us, end_us, what, strictly=True)
        return bars

    async def trades(self, symbol: str, start_us: int, end_us: int) -> AsyncIterator[TradeBatch]:
        """The trades of `symbol` in [start_us, end_us), in time order, one TradeBatch per page
        (at most `page_limit` trades): a liquid stock's SIP day is millions of trades, too many
        to hold at once, and a page is the size of one Kafka message of batches."""
        what = f"alpaca {symbol} trades"
        last_us = start_us
        pages = self._pages(
            "trades",
            self._params(symbol, start_us, end_us),
            what,
            lambda body, kind: parse_trades(
                body,
                symbol,
                time.time_ns() // 1000,
                source=self.source,
                content_type=kind,
                what=what,
            ),
        )
        async for batch in pages:
            if batch is None:
                continue
            _check_times(batch.ts_event_us, last_us, end_us, what, strictly=False)
            last_us = int(batch.ts_event_us[-1])
            yield batch

    def _params(self, symbol: str, start_us: int, end_us: int) -> dict[str, str]:
        if problem := symbol_problem(symbol):
            raise ValueError(problem)
        if start_us >= end_us:
            raise ValueError(f"an empty range: start_us {start_us} is not before end_us {end_us}")
        params = {
            "symbols": symbol,
            "start": rfc3339(start_us),
            "end": rfc3339(end_us - 1),  # Alpaca's end is inclusive
            "limit": str(self.page_limit),
            "sort": "asc",
        }
        return params if self.crypto else params | {"feed": self.cfg.feed}

    async def _pages(
        self,
        kind: Literal["bars", "trades"],
        params: dict[str, str],
        what: str,
        parse: Callable[[bytes, str], Page[T]],
    ) -> AsyncIterator[T]:
        """Each page's items, following next_page_token until Alpaca gives none."""
        path = f"/v1beta3/crypto/us/{kind}" if self.crypto else f"/v2/stocks/{kind}"
        url, token, number = f"{self.rest_url}{path}", None, 0
        while True:
            query = params if token is None else params | {"page_token": token}
            body, content_type = await self._get(url, query, what)
            page = parse(body, content_type)
            number += 1
            log.debug("alpaca: %s: page %d, next %s", what, number, page.next_page_token)
            yield page.items
            if page.next_page_token is None:
                return
            if page.next_page_token == token:
                raise MalformedResponseError(f"{what}: page {number} repeats its own page_token")
            token = page.next_page_token

    async def _get(self, url: str, params: dict[str, str], what: str) -> tuple[bytes, str]:
        """GET until Alpaca answers other than 429; return the 200's body and Content-Type."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        while True:
            if self.budget is not None:
                await self.budget.acquire(self.priority)
            self.requests += 1
            try:
                async with self._session.get(
                    url,
                    params=params,
                    headers=self._headers,
                    timeout=self._timeout,
                    allow_redirects=False,  # a redirect would carry the key headers along
                ) as response:
                    status, body = response.status, await response.read()
                    headers = response.headers
            except (aiohttp.ClientError, TimeoutError) as exc:
                cause = self._redact(str(exc) or type(exc).__name__)
                raise TransientError(f"{what}: cannot reach {url}: {cause}") from exc
            content_type = headers.get("Content-Type", "")
            if status == 200:
                return body, content_type
            said = self._redact(error_text(body, content_type))
            if status != 429:
                raise _failure(status, said, what)
            wait_s = rate_limit_wait_s(
                headers.get("Retry-After"), headers.get("X-RateLimit-Reset"), time.time()
            )
            wait_s = RATE_WINDOW_S if wait_s is None else wait_s
            if wait_s > self.max_wait_s:
                raise RateLimitedError(
                    f"{what}: Alpaca rate limit reached (HTTP 429: {said}); it resets in "
                    f"{wait_s:.0f} s, more than the {self.max_wait_s:g} s this client waits",
                    wait_s,
                )
            self.rate_limited += 1
            log.warning("alpaca: %s: rate limited (%s); asking again in %.1f s", what, said, wait_s)
            if self.budget is not None:
                self.budget.defer(wait_s + GUARD_S)  # every caller of the budget waits
            else:
                await asyncio.sleep(wait_s + GUARD_S)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _failure(status: int, said: str, what: str) -> MarketstreamError:
    """The error for a status other than 200 and 429, with Alpaca's message `said`."""
    if status in (401, 403) and "subscription" in said.lower():
        return FatalError(f"{what}: the Alpaca plan does not allow it (HTTP {status}: {said})")
    if status in (401, 403):
        return FatalError(
            f"Alpaca refused the API key for {what} (HTTP {status}: {said}): set valid {KEYS}"
        )
    if status >= 500 or status == 408:
        return TransientError(f"{what}: Alpaca answered HTTP {status}: {said}")
    if 300 <= status < 400:
        return FatalError(
            f"{what}: Alpaca answered HTTP {status}, a redirect: is MS_ALPACA_REST_URL right?"
        )
    return FatalError(f"{what}: Alpaca answered HTTP {status}: {said}")


def _columns(bars: Bars) -> tuple[NDArray[Any], ...]:
    return bars.ts_us, bars.open, bars.high, bars.low, bars.close, bars.volume


def _check_times(
    ts_us: NDArray[np.int64], start_us: int, end_us: int, what: str, *, strictly: bool
) -> None:
    """Raise MalformedResponseError unless the times lie in [start_us, end_us) in time order
    (`strictly`: each after the one before, as bars of one symbol are)."""
    if not len(ts_us):
        return
    steps = np.diff(ts_us)
    if (steps <= 0).any() if strictly else (steps < 0).any():
        raise MalformedResponseError(f"{what}: the pages are not in time order or repeat")
    if ts_us[0] < start_us or ts_us[-1] >= end_us:
        first, last = rfc3339(int(ts_us[0])), rfc3339(int(ts_us[-1]))
        raise MalformedResponseError(f"{what}: times {first} to {last} leave the range asked for")
