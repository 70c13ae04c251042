"""A fake of Alpaca's market-data REST API (history) on 127.0.0.1, in Alpaca's documented format.

It answers GET /v2/stocks/{bars,trades}?symbols=A,B, /v2/stocks/{symbol}/{bars,trades} and
/v1beta3/crypto/us/{bars,trades}?symbols=BTC/USD, with `timeframe` ([1-59]Min, [1-23]Hour,
1Day, or T, H, D), `start` and `end` (RFC 3339 or a date; both inclusive), `limit` (1 to 10000,
default 1000, across symbols), `feed` (iex, sip), `adjustment`, `sort=asc` and `page_token`:
sorted by symbol then time, cut at `limit`, with an opaque `next_page_token` (null on the last
page). Bad parameters get HTTP 422 with `{"code": 42210000, "message": ...}`.

The data are made up, the same for the same seed: a tape of trades per symbol and day (stocks
on weekdays from 04:00 to 20:00 New York time, with a trade in every minute of the regular
session, sparse ones outside it; crypto in every minute of the UTC day), and bars folded from
it, daily bars starting at midnight New York time (stocks, as Alpaca's do) or UTC (crypto).

Wrong or missing APCA-API-KEY-ID / APCA-API-SECRET-KEY get `refusal_status` with Alpaca's
body (401; Alpaca's FAQ says 403, which it plays too). Every answer carries X-RateLimit-Limit,
-Remaining and -Reset (UNIX seconds); past `limit` requests in a window, HTTP 429. The switches
`rate_limit` and `answer_next` play the failures; `requests` lists what it saw, and `early`
counts requests sent before a reset it had announced.

    python -m connectors.fakes.alpaca_rest --port 8775
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import math
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import orjson
from aiohttp import web
from numpy.typing import NDArray

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from connectors.fakes.serving import HttpFake
from connectors.sessions import NEW_YORK

log = logging.getLogger(__name__)

UNAUTHORIZED: Final = {"code": 40110000, "message": "request is not authorized"}
FORBIDDEN: Final = {"message": "forbidden."}
TOO_MANY_REQUESTS: Final = {"message": "too many requests."}
HTML_BAD_GATEWAY: Final = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>"
)
DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
FEEDS: Final = frozenset({"iex", "sip"})
ADJUSTMENTS: Final = frozenset({"raw", "split", "dividend", "spin-off", "all"})
# Levels of March 2024, where the recorded stream is; other symbols get one from their name.
BASE_PRICES: Final = {
    "AAPL": 172.8, "MSFT": 404.5, "TSLA": 177.6, "NVDA": 919.1, "SPY": 516.8,
    "BTC/USD": 71_450.0, "ETH/USD": 3_950.0,
}  # fmt: skip
SIP_EXCHANGES: Final = np.array(["V", "Q", "N", "P", "Z", "K", "D"])
MINUTE_NS: Final = 60 * 10**9
DAY_NS: Final = 1440 * MINUTE_NS
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIMEFRAME: Final = re.compile(r"([1-9][0-9]?)(Min|T|Hour|H|Day|D)")
_UNIT_NS: Final = {"Min": MINUTE_NS, "T": MINUTE_NS, "Hour": 60 * MINUTE_NS, "H": 60 * MINUTE_NS}


class BadRequest(Exception):
    """A parameter Alpaca would refuse with HTTP 422: the message is its `message`."""


@dataclass(frozen=True, slots=True, eq=False)
class Tape:
    """A day's trades of one symbol, in time order."""

    ts_ns: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    trade_id: NDArray[np.int64]
    exchange: NDArray[np.str_]  # stocks' SIP exchange codes
    taker: NDArray[np.str_]  # crypto's taker side, B or S
    regular: NDArray[np.bool_]  # within the regular session (stocks)

    def __len__(self) -> int:
        return len(self.ts_ns)

    def __getitem__(self, rows: Any) -> Tape:
        return Tape(*(getattr(self, f)[rows] for f in self.__slots__))

    @classmethod
    def joined(cls, tapes: list[Tape]) -> Tape:
        return cls(*(np.concatenate([getattr(t, f) for t in tapes]) for f in cls.__slots__))


def day_start_ns(day: date, crypto: bool) -> int:
    """Where `day` starts: midnight UTC (crypto) or New York (stocks), in ns since the epoch."""
    zone = UTC if crypto else NEW_YORK
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()) * 10**9


def _day_of(ts_ns: int, crypto: bool) -> date:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC if crypto else NEW_YORK).date()


def base_price(symbol: str) -> float:
    return BASE_PRICES.get(symbol, 20.0 + zlib.crc32(symbol.encode()) % 48_000 / 100)


@functools.lru_cache(maxsize=512)
def tape(symbol: str, day: date, *, crypto: bool, seed: int = 0) -> Tape:
    """The made-up trades of `symbol` on `day`, the same for the same arguments."""
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode()), day.toordinal()])
    if crypto:
        minutes = np.arange(1440)
        regular = np.ones(1440, dtype=np.bool_)
        counts = rng.poisson(5, 1440) + 1
    elif day.weekday() >= 5:
        minutes = counts = np.empty(0, dtype=np.int64)
        regular = np.empty(0, dtype=np.bool_)
    else:
        minutes = np.arange(4 * 60, 20 * 60)  # 04:00 to 20:00 New York
        regular = (minutes >= 9 * 60 + 30) & (minutes < 16 * 60)
        sparse = rng.poisson(2, len(minutes)) * (rng.random(len(minutes)) < 0.3)
        counts = np.where(regular, rng.poisson(11, len(minutes)) + 1, sparse)
    n = int(counts.sum())
    minute_of = np.repeat(minutes, counts)
    ts = day_start_ns(day, crypto) + minute_of * MINUTE_NS + rng.integers(0, MINUTE_NS, n)
    order = np.argsort(ts, kind="stable")
    level = base_price(symbol) * math.exp(rng.normal(0, 0.02))
    price = np.round(level * np.exp(np.cumsum(rng.normal(0, 2.5e-4, n))), 2)
    if crypto:
        size = np.round(rng.exponential(0.03, n) + 1e-6, 6)
    else:
        size = np.where(
            rng.random(n) < 0.35, 100 * rng.integers(1, 6, n), rng.integers(1, 100, n)
        ).astype(np.float64)
    first_id = int(rng.integers(10**13, 6 * 10**13))
    return Tape(
        ts_ns=ts[order],
        price=price,
        size=size,
        trade_id=first_id + np.arange(n, dtype=np.int64),
        exchange=rng.choice(SIP_EXCHANGES, n, p=[0.03, 0.3, 0.2, 0.15, 0.12, 0.1, 0.1]),
        taker=rng.choice(np.array(["B", "S"]), n),
        regular=np.repeat(regular, counts)[order].astype(np.bool_),
    )


def _tapes(symbol: str, start_ns: int, end_ns: int, crypto: bool, seed: int) -> list[Tape]:
    first, last = _day_of(start_ns, crypto), _day_of(end_ns, crypto)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [tape(symbol, day, crypto=crypto, seed=seed) for day in days]


def trades_in(symbol: str, start_ns: int, end_ns: int, *, crypto: bool, seed: int = 0) -> Tape:
    """The made-up trades of `symbol` within [start_ns, end_ns], both inclusive."""
    joined = Tape.joined(_tapes(symbol, start_ns, end_ns, crypto, seed))
    return joined[(joined.ts_ns >= start_ns) & (joined.ts_ns <= end_ns)]


def timeframe_ns(timeframe: str) -> int:
    """The width of an Alpaca `timeframe` in ns (DAY_NS for 1Day); raise BadRequest if the
    fake does not serve it (weeks and months, more than 59 minutes, 23 hours or one day)."""
    match = _TIMEFRAME.fullmatch(timeframe)
    if not match:
        raise BadRequest("invalid timeframe")
    amount, unit = int(match[1]), match[2]
    if unit in ("Day", "D"):
        if amount != 1:
            raise BadRequest("invalid timeframe")
        return DAY_NS
    if amount > (59 if unit in ("Min", "T") else 23):
        raise BadRequest("invalid timeframe")
    return amount * _UNIT_NS[unit]


def bars_in(
    symbol: str, timeframe: str, start_ns: int, end_ns: int, *, crypto: bool, seed: int = 0
) -> dict[str, NDArray[Any]]:
    """The bars of `symbol` folded from its trades, t (bar start) within [start_ns, end_ns]:
    columns t (ns), o, h, l, c, v, n (trades) and vw (volume-weighted price)."""
    width = timeframe_ns(timeframe)
    # the days of every trade of a bar that starts by end_ns (bars start at their first trade's
    # bucket, so no trade before start_ns is in one that starts after it)
    days = [t for t in _tapes(symbol, start_ns, end_ns + width - 1, crypto, seed) if len(t)]
    if not days:
        empty = np.empty(0, dtype=np.int64)
        return {k: empty for k in ("t", "o", "h", "l", "c", "v", "n", "vw")}
    trades = Tape.joined(days)
    ts, price, size, n = trades.ts_ns, trades.price, trades.size, len(trades)
    if width == DAY_NS:
        starts_ns = [day_start_ns(_day_of(int(d.ts_ns[0]), crypto), crypto) for d in days]
        bucket = np.repeat(np.array(starts_ns, dtype=np.int64), [len(d) for d in days])
    else:
        bucket = ts // width * width
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    volume = np.add.reduceat(size, starts)
    columns = {
        "t": bucket[starts],
        "o": price[starts],
        "h": np.maximum.reduceat(price, starts),
        "l": np.minimum.reduceat(price, starts),
        "c": price[ends],
        "v": np.round(volume, 8),  # as it is sent: crypto sizes have 6 decimals, sums drift
        "n": ends - starts + 1,
        "vw": np.round(np.add.reduceat(price * size, starts) / volume, 6),
    }
    keep = (columns["t"] >= start_ns) & (columns["t"] <= end_ns)
    return {k: v[keep] for k, v in columns.items()}


def _times(ts_ns: NDArray[np.int64], unit: Literal["s", "ns"]) -> list[str]:
    return [f"{t}Z" for t in np.datetime_as_string(ts_ns.astype("datetime64[ns]"), unit=unit)]


def _bar_rows(columns: dict[str, NDArray[Any]], crypto: bool) -> list[dict[str, Any]]:
    volume = columns["v"].tolist() if crypto else columns["v"].astype(int).tolist()
    return [
        {"c": c, "h": h, "l": low, "n": n, "o": o, "t": t, "v": v, "vw": vw}
        for t, o, h, low, c, v, n, vw in zip(
            _times(columns["t"], "s"),
            *(columns[k].tolist() for k in ("o", "h", "l", "c")),
            volume,
            columns["n"].tolist(),
            columns["vw"].tolist(),
            strict=True,
        )
    ]


def _trade_rows(trades: Tape, crypto: bool, feed: str) -> list[dict[str, Any]]:
    times, prices, ids = _times(trades.ts_ns, "ns"), trades.price.tolist(), trades.trade_id.tolist()
    if crypto:
        return [
            {"i": i, "p": p, "s": s, "t": t, "tks": k}
            for t, p, s, i, k in zip(
                times, prices, trades.size.tolist(), ids, trades.taker.tolist(), strict=True
            )
        ]
    exchanges = ["V"] * len(trades) if feed == "iex" else trades.exchange.tolist()
    return [
        {"c": ["@"] if r else ["@", "T"], "i": i, "p": p, "s": s, "t": t, "x": x, "z": "C"}
        for t, x, p, s, i, r in zip(
            times,
            exchanges,
            prices,
            trades.size.astype(int).tolist(),
            ids,
            trades.regular.tolist(),
            strict=True,
        )
    ]


def _time_ns(text: str | None, name: str, default_ns: int) -> int:
    """An RFC 3339 time or a date (midnight UTC) as ns; raise BadRequest if it is neither."""
    if text is None:
        return default_ns
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"invalid {name}") from None
    if when.tzinfo is None:
        if "T" in text:
            raise BadRequest(f"invalid {name}")  # RFC 3339 says the offset
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the fake answered."""

    at_s: float  # time.time(), the clock X-RateLimit-Reset is read on
    path: str
    query: dict[str, str]
    status: int


@dataclass(slots=True)
class _Canned:
    status: int
    body: bytes
    content_type: str
    after: int
    count: int


@dataclass(eq=False)
class FakeAlpacaRest(HttpFake):
    """The fake; `start` binds it (port 0: any free port) and returns the port."""

    key_id: str = KEY_ID
    secret_key: str = SECRET_KEY
    seed: int = 0
    refusal_status: int = 401
    limit: int = 200  # requests per window: Alpaca's free plan allows 200 a minute
    window_s: int = 60
    retry_after: bool = False  # also send Retry-After with a 429 (Alpaca documents none)
    requests: list[Seen] = field(default_factory=list)
    refused: int = 0
    rate_limited: int = 0  # 429s sent
    early: int = 0  # requests that came before a reset announced with a 429
    _reset_s: float = 0.0  # the current window's end
    _used: int = 0  # requests granted in the current window
    _announced_s: float = 0.0
    _canned: _Canned | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/stocks/{kind:bars|trades}", self._handle)
        app.router.add_get("/v2/stocks/{symbol}/{kind:bars|trades}", self._handle)
        app.router.add_get("/v1beta3/crypto/us/{kind:bars|trades}", self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # switches

    def rate_limit(self, after: int, *, window_s: int = 60, retry_after: bool = False) -> None:
        """Grant `after` requests per window of `window_s` seconds (one opens at the first
        request past the last window's end, a whole UNIX second), then HTTP 429 until it ends."""
        self.limit, self.window_s, self.retry_after = after, window_s, retry_after
        self._reset_s, self._used = 0.0, 0

    def answer_next(
        self,
        status: int,
        body: bytes | str | dict[str, Any],
        *,
        content_type: str = "application/json",
        after: int = 0,
        count: int = 1,
    ) -> None:
        """Answer `count` requests, after `after` answered as usual, with `body` as is (a dict:
        as JSON): an HTML error page, a truncated body, an error Alpaca sends."""
        data = orjson.dumps(body) if isinstance(body, dict) else body
        raw = data.encode() if isinstance(data, str) else data
        self._canned = _Canned(status, raw, content_type, after, count)

    # answers

    def _rate_headers(self, now: float) -> tuple[dict[str, str], bool]:
        """The X-RateLimit headers for a request at `now`, and whether it is granted."""
        if now >= self._reset_s:
            self._reset_s, self._used = float(math.ceil(now + self.window_s)), 0
        granted = self._used < self.limit
        self._used += granted
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self._used),
            "X-RateLimit-Reset": str(int(self._reset_s)),
        }
        return headers, granted

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time()
        self.early += now < self._announced_s
        response = self._answer(request, now)
        self.requests.append(Seen(now, request.path, dict(request.query), response.status))
        return response

    def _answer(self, request: web.Request, now: float) -> web.Response:
        key = request.headers.get("APCA-API-KEY-ID")
        secret = request.headers.get("APCA-API-SECRET-KEY")
        if key != self.key_id or secret != self.secret_key:
            self.refused += 1
            body = UNAUTHORIZED if self.refusal_status == 401 else FORBIDDEN
            return web.json_response(body, status=self.refusal_status)
        headers, granted = self._rate_headers(now)
        if not granted:
            self.rate_limited += 1
            self._announced_s = self._reset_s
            if self.retry_after:
                headers["Retry-After"] = str(math.ceil(self._reset_s - now))
            return web.json_response(TOO_MANY_REQUESTS, status=429, headers=headers)
        if (canned := self._canned) is not None:
            if canned.after:
                canned.after -= 1
            else:
                canned.count -= 1
                if not canned.count:
                    self._canned = None
                kind = canned.content_type
                return web.Response(body=canned.body, status=canned.status, content_type=kind)
        try:
            body = self._data(request, now)
        except BadRequest as exc:
            body, status = {"code": 42210000, "message": str(exc)}, 422
            return web.json_response(body, status=status, headers=headers)
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _data(self, request: web.Request, now: float) -> dict[str, Any]:
        """The body of a 200: one page of bars or trades; raise BadRequest for bad parameters."""
        query, kind = request.query, request.match_info["kind"]
        crypto = request.path.startswith("/v1beta3/")
        single = request.match_info.get("symbol")
        symbols = [single] if single else [s for s in query.get("symbols", "").split(",") if s]
        if not symbols:
            raise BadRequest("symbols is required")
        today_ns = int(now) // 86_400 * DAY_NS
        start_ns = _time_ns(query.get("start"), "start", today_ns)
        end_ns = _time_ns(query.get("end"), "end", int(now * 1e9))
        if end_ns < start_ns:
            raise BadRequest("end should not be before start")
        feed = query.get("feed", "sip")
        if not crypto and feed not in FEEDS:
            raise BadRequest("invalid feed")
        if not set(query.get("adjustment", "raw").split(",")) <= ADJUSTMENTS:
            raise BadRequest("invalid adjustment")
        if query.get("sort", "asc") != "asc":
            raise BadRequest("the fake sorts asc only")
        limit_text = query.get("limit", str(DEFAULT_LIMIT))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadRequest("invalid limit")
        limit = int(limit_text)
        timeframe = query.get("timeframe", "")
        if kind == "bars":
            timeframe_ns(timeframe)  # refuse a bad one before any work
        digest = hashlib.sha256(
            repr(
                [request.path, sorted((k, v) for k, v in query.items() if k != "page_token")]
            ).encode()
        ).hexdigest()[:16]
        offset = _offset(query.get("page_token"), digest)
        found: list[tuple[str, int, Any]] = []  # symbol, rows, columns
        for symbol in sorted(set(symbols)):
            if kind == "bars":
                columns: Any = bars_in(
                    symbol, timeframe, start_ns, end_ns, crypto=crypto, seed=self.seed
                )
                found.append((symbol, len(columns["t"]), columns))
            else:
                trades = trades_in(symbol, start_ns, end_ns, crypto=crypto, seed=self.seed)
                found.append((symbol, len(trades), trades))
        total = sum(n for _, n, _ in found)
        if offset > total:
            raise BadRequest("invalid page_token")
        page: dict[str, list[dict[str, Any]]] = {}
        at = 0
        for symbol, n, data in found:
            lo, hi = max(offset - at, 0), min(offset + limit - at, n)
            at += n
            if lo >= hi:
                continue
            if kind == "bars":
                page[symbol] = _bar_rows({k: v[lo:hi] for k, v in data.items()}, crypto)
            else:
                page[symbol] = _trade_rows(data[lo:hi], crypto, feed)
        after = offset + limit
        token = _token(symbols[0], digest, after) if after < total else None
        if single:
            return {kind: page.get(single), "next_page_token": token, "symbol": single}
        return {kind: page, "next_page_token": token}


def _token(symbol: str, digest: str, offset: int) -> str:
    return base64.b64encode(f"{symbol}|{digest}|{offset}".encode()).decode()


def _offset(token: str | None, digest: str) -> int:
    """Where a page token says to go on; raise BadRequest unless this query issued it."""
    if token is None:
        return 0
    try:
        _, said, offset = base64.b64decode(token, validate=True).decode().split("|")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("invalid page_token") from None
    if said != digest or not offset.isdigit():
        raise BadRequest("invalid page_token")
    return int(offset)


async def _main(args: argparse.Namespace) -> None:
    # The keys it accepts: ALPACA_API_KEY / ALPACA_SECRET_KEY if set (as `make up` sets them
    # for both sides), else the fixed fake ones.
    fake = FakeAlpacaRest(
        key_id=os.environ.get("ALPACA_API_KEY", KEY_ID),
        secret_key=os.environ.get("ALPACA_SECRET_KEY", SECRET_KEY),
        seed=args.seed,
        limit=args.limit,
        window_s=args.window_s,
    )
    await fake.start(args.host, args.port)
    print(f"fake Alpaca REST on {fake.url} (set MS_ALPACA_REST_URL to it)", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("Alpaca REST", "connectors.fakes.alpaca_rest", 8775, __doc__)
    parser.add_argument("--seed", type=int, default=0, help="which made-up data")
    parser.add_argument("--limit", type=int, default=200, help="requests per rate window")
    parser.add_argument("--window-s", type=int, default=60, help="the rate window, in seconds")
    args = parser.parse_args()
    serve_until_interrupted(_main(args))


if __name__ == "__main__":
    main()
