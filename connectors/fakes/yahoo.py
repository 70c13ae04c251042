"""A fake Yahoo Finance chart API on 127.0.0.1, serving one trading day, minute by minute.

`GET /v8/finance/chart/{symbol}?interval=..&range=..&includePrePost=true|false` answers as
Yahoo does, from `data/yahoo_chart_1m_2025-06-10.json`: answers in Yahoo's format
(interval=1m, range=1d, includePrePost=true) for AAPL, MSFT and SPY on Tuesday 10 June 2025,
04:00 to 20:00 New York time, with minutes sent as nulls and pre/post-market minutes without
trades left out. The prices are not Yahoo's: they were generated once, a random walk through
that day's opens and closes, so that the day looks real and can be committed.

The fake's clock stands at one minute of that day (`now_s`, 10:00 by default): bars up to it
are final, the bar at it is still forming (`forming`), later ones do not exist yet, and
`advance` moves it on, so that the next poll sees a new bar and a changed one. 5m, 15m, 60m
(from the 09:30 open, as Yahoo aligns US hours) and 1d (the regular session) are folded from
the minutes. Without includePrePost (Yahoo's default) only the regular session is served.

An unknown symbol gets HTTP 404 and Yahoo's "Not Found" chart error; an unsupported interval
HTTP 400 "Bad Request". The switches (`rate_limit`, `serve_html`, `fail`, `leak_pre_post`,
`advance`) play what the real API does; `requests` records what was asked.

    python -m connectors.fakes.yahoo --port 8772
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.serving import HttpFake

log = logging.getLogger(__name__)

RECORDING: Final = Path(__file__).parent / "data" / "yahoo_chart_1m_2025-06-10.json"
NEW_YORK: Final = ZoneInfo("America/New_York")
NOW_S: Final = int(datetime(2025, 6, 10, 10, 0, tzinfo=NEW_YORK).timestamp())
COLUMNS: Final = ("open", "high", "low", "close", "volume")
FOLDED_S: Final = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600, "1h": 3600}
VALID_INTERVALS: Final = "1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 4h, 1d, 5d, 1wk, 1mo, 3mo"
VALID_RANGES: Final = ("1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max")
NOT_FOUND: Final = "No data found, symbol may be delisted"
# what Yahoo serves while it is down (yfinance looks for "Will be right back")
MAINTENANCE_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>Yahoo</title></head><body><h1>Will be right back...</h1>"
    "<p>Thank you for your patience. Our engineers are working quickly to resolve the issue."
    "</p></body></html>"
)

Bar = tuple[float, float, float, float, float]  # open, high, low, close, volume


def load_recording(path: Path = RECORDING) -> dict[str, dict[str, Any]]:
    """The recorded chart answers, by symbol: each `{"chart":{"result":[...],"error":null}}`."""
    charts: dict[str, dict[str, Any]] = orjson.loads(path.read_bytes())
    return charts


def recorded_minutes(chart: dict[str, Any]) -> list[tuple[int, Bar | None]]:
    """A recorded answer's minutes as (UNIX seconds, bar), None where Yahoo sent nulls."""
    result = chart["chart"]["result"][0]
    quote = result["indicators"]["quote"][0]
    rows = zip(*(quote[c] for c in COLUMNS), strict=True)
    return [
        (ts, None if None in row else row)
        for ts, row in zip(result["timestamp"], rows, strict=True)
    ]


def forming(bar: Bar) -> Bar:
    """The bar as it stood partway through its minute: its open, a close halfway to the final
    one (to the cent), the range of those two, a third of the volume."""
    o, _, _, c, v = bar
    close = round(o + (c - o) / 2, 2)
    return o, max(o, close), min(o, close), close, float(int(v) // 3)


def _f32(price: float) -> float:
    """The price as Yahoo writes it: a float32 widened to JSON (201.22 -> 201.22000122070312)."""
    return float(np.float32(price))


def _fold(minutes: list[tuple[int, Bar | None]], start: int, width: int) -> list[Any]:
    """Minutes folded into bars of `width` seconds on a grid through `start`; a bar with only
    null minutes is null."""
    folded: dict[int, list[Bar | None]] = {}
    for ts, bar in minutes:
        folded.setdefault(start + (ts - start) // width * width, []).append(bar)
    out: list[Any] = []
    for ts, bars in folded.items():
        real = [b for b in bars if b is not None]
        if not real:
            out.append((ts, None))
            continue
        high, low = max(b[1] for b in real), min(b[2] for b in real)
        volume = sum(b[4] for b in real)
        out.append((ts, (real[0][0], high, low, real[-1][3], volume)))
    return out


@dataclass(frozen=True, slots=True)
class Asked:
    """One request the fake received: when (time.monotonic()), the symbol and the query."""

    at_s: float
    symbol: str
    query: dict[str, str]


class _AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s", request.method, request.path_qs, response.status)


class FakeYahoo(HttpFake):
    """The fake chart API; `start` binds it (port 0: any free port) and returns the port."""

    access_log_class = _AccessLogger

    def __init__(self, charts: dict[str, dict[str, Any]] | None = None, *, now_s: int = NOW_S):
        self.charts = load_recording() if charts is None else charts
        self.now_s = now_s
        self.requests: list[Asked] = []
        self.rate_limited: int | None = 0  # requests still to answer 429 (None: until lifted)
        self.retry_after_s: float | None = None
        self.html_left = 0
        self.html_status = 200
        self.failing: dict[str, tuple[int, str, str]] = {}
        self.leaking_pre_post = False

    @property
    def url(self) -> str:
        """The base URL, as YahooConfig.base_url takes it."""
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v8/finance/chart/{symbol}", self._chart)

    # switches

    def advance(self, minutes: int = 1) -> None:
        """Move the clock on: the forming bar becomes final and the next minute forms."""
        self.now_s += 60 * minutes

    def rate_limit(
        self, limited: bool = True, *, retry_after_s: float | None = None, times: int | None = None
    ) -> None:
        """Answer HTTP 429 (with Retry-After, if given) to the next `times` requests, or to
        every request until called with False."""
        self.rate_limited = times if limited else 0
        self.retry_after_s = retry_after_s

    def serve_html(self, times: int = 1, *, status: int = 200) -> None:
        """Answer the next `times` requests with Yahoo's maintenance page (HTML, not JSON)."""
        self.html_left, self.html_status = times, status

    def fail(
        self,
        symbol: str,
        code: str = "Not Found",
        description: str = NOT_FOUND,
        *,
        status: int = 404,
    ) -> None:
        """Answer `symbol` with a chart error from now on (unknown symbols get one anyway)."""
        self.failing[symbol] = (status, code, description)

    def leak_pre_post(self, leak: bool = True) -> None:
        """Serve pre/post-market bars even without includePrePost, as Yahoo does for some
        tickers (yfinance: fix_Yahoo_returning_prepost_unrequested)."""
        self.leaking_pre_post = leak

    # the API

    async def _chart(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        query = dict(request.query)
        self.requests.append(Asked(time.monotonic(), symbol, query))
        if self.rate_limited is None or self.rate_limited > 0:
            if self.rate_limited is not None:
                self.rate_limited -= 1
            wait = {} if self.retry_after_s is None else {"Retry-After": f"{self.retry_after_s:g}"}
            return web.Response(status=429, text="Too Many Requests\r\n", headers=wait)
        if self.html_left > 0:
            self.html_left -= 1
            return web.Response(
                status=self.html_status, text=MAINTENANCE_PAGE, content_type="text/html"
            )
        if symbol in self.failing or symbol not in self.charts:
            status, code, description = self.failing.get(symbol, (404, "Not Found", NOT_FOUND))
            return _error(status, code, description)
        interval = query.get("interval", "1d")
        if interval not in FOLDED_S and interval != "1d":
            return _error(
                400,
                "Bad Request",
                f"Invalid input - interval={interval} is not supported. "
                f"Valid intervals: [{VALID_INTERVALS}] (the fake folds 1m to 60m, 1h and 1d)",
            )
        chart_range = query.get("range", "1mo")
        if chart_range not in VALID_RANGES:
            return _error(400, "Bad Request", f"Invalid input - range={chart_range}")
        pre_post = query.get("includePrePost", "false").lower() == "true"
        body = self.chart(symbol, interval, chart_range, pre_post or self.leaking_pre_post)
        if not pre_post:
            meta = body["chart"]["result"][0]["meta"]
            meta["tradingPeriods"] = meta["tradingPeriods"]["regular"]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def chart(self, symbol: str, interval: str, chart_range: str, pre_post: bool) -> dict[str, Any]:
        """Yahoo's answer for `symbol` at the fake's clock (the recorded day whatever the range)."""
        recorded = self.charts[symbol]
        meta = copy.deepcopy(recorded["chart"]["result"][0]["meta"])
        regular = meta["currentTradingPeriod"]["regular"]
        minutes = []
        for ts, bar in recorded_minutes(recorded):
            if ts > self.now_s:
                break
            if bar is not None and ts == self.now_s:
                bar = forming(bar)
            if pre_post or regular["start"] <= ts < regular["end"]:
                minutes.append((ts, bar))
        if interval == "1d":
            session = [m for m in minutes if regular["start"] <= m[0] < regular["end"]]
            rows = _fold(session, regular["start"], 86_400)
        elif interval == "1m":
            rows = minutes
        else:
            rows = _fold(minutes, regular["start"], FOLDED_S[interval])
        last = [bar for ts, bar in minutes if bar is not None and ts < regular["end"]]
        if last:
            meta["regularMarketPrice"] = _f32(last[-1][3])
        meta["regularMarketTime"] = min(self.now_s, regular["end"])
        meta["dataGranularity"], meta["range"] = interval, chart_range
        result: dict[str, Any] = {"meta": meta}
        if rows:
            result["timestamp"] = [ts for ts, _ in rows]
            quote: dict[str, Any] = {}
            for i, column in enumerate(COLUMNS):
                quote[column] = [
                    None if bar is None else (int(bar[i]) if i == 4 else _f32(bar[i]))
                    for _, bar in rows
                ]
            result["indicators"] = {"quote": [quote]}
        else:
            result["indicators"] = {"quote": [{}]}
        return {"chart": {"result": [result], "error": None}}


def _error(status: int, code: str, description: str) -> web.Response:
    body = {"chart": {"result": None, "error": {"code": code, "description": description}}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _main(args: argparse.Namespace) -> None:
    hour, minute = (int(part) for part in args.start.split(":"))
    start = datetime(2025, 6, 10, hour, minute, tzinfo=NEW_YORK)
    fake = FakeYahoo(load_recording(args.data), now_s=int(start.timestamp()))
    await fake.start(args.host, args.port)
    print(f"fake Yahoo Finance: {fake.url}/v8/finance/chart/{{symbol}}", flush=True)
    while args.minute_s > 0:
        await asyncio.sleep(args.minute_s)
        fake.advance()
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("Yahoo", "connectors.fakes.yahoo", 8772, __doc__)
    parser.add_argument("--start", default="10:00", help="the clock's first minute, New York")
    parser.add_argument(
        "--minute-s", type=float, default=60.0, help="seconds per recorded minute; 0: stand still"
    )
    parser.add_argument("--data", type=Path, default=RECORDING, help="recorded chart answers")
    args = parser.parse_args()
    serve_until_interrupted(_main(args))


if __name__ == "__main__":
    main()
