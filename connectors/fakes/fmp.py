"""A fake Financial Modeling Prep on 127.0.0.1: the /api/v3 fundamentals endpoints on one port.

It answers GET /api/v3/{profile,income-statement,balance-sheet-statement,cash-flow-statement,
ratios,key-metrics}/SYMBOL (`period=annual|quarter`, `limit=N`, newest first) and
/api/v3/historical-price-full/SYMBOL (`timeseries=N`) with the key as `apikey=`, in FMP's
documented shapes: recorded bodies for AAPL and MSFT (data/fmp/SYMBOL.ENDPOINT[.PERIOD].json)
and, for any other symbol, one of those with its amounts scaled (5 years, 6 quarters); daily
prices are always generated. Like FMP
it answers a bad key with `{"Error Message": "Invalid API KEY. ..."}` (HTTP 401, or 200 as its
older endpoints do), and once a key has had `limit` requests in `window_s` seconds, HTTP 429 with
`{"Error Message": "Limit Reach . ..."}` (and Retry-After unless told not to), counting each 429
in `rate_limited`. The switches `refuse_keys`, `serve_html` and `serve_empty` play the failures;
`requests` lists every request seen.

    python -m connectors.fakes.fmp --port 8772 [--limit 120 --window-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.serving import HttpFake

DATA: Final = Path(__file__).parent / "data" / "fmp"
API_KEY: Final = "fake-fmp-key"
DOCS: Final = "https://site.financialmodelingprep.com/developer/docs"
INVALID_KEY: Final = {
    "Error Message": f"Invalid API KEY. Please retry or visit our documentation to create one FREE {DOCS}"
}
LIMIT_REACH: Final = {
    "Error Message": "Limit Reach . Please upgrade your plan or visit our documentation for more "
    "details at https://site.financialmodelingprep.com/"
}
HTML_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>Financial Modeling Prep - Down for maintenance</title>"
    "</head><body><h1>We'll be back soon.</h1></body></html>"
)
ENDPOINTS: Final = (
    "profile", "income-statement", "balance-sheet-statement", "cash-flow-statement", "ratios",
    "key-metrics", "historical-price-full",
)  # fmt: skip
PRICES_END: Final = date(2025, 1, 31)  # the last day of generated prices


def _scaled(entry: dict[str, Any], factor: float, names: dict[str, str]) -> dict[str, Any]:
    """`entry` as another company's: its amounts (whole numbers of 1000 and more) times `factor`,
    so that every ratio and per-share value still holds, and its names replaced."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000:
            value = round(value * factor)
        elif isinstance(value, str):
            for old, new in names.items():
                value = value.replace(old, new)
        out[key] = value
    return out


def generated_body(symbol: str, endpoint: str, period: str, data: Path = DATA) -> list[Any]:
    """A plausible answer for any symbol, the same for the same symbol: a recorded company's
    (AAPL's or MSFT's, by the symbol) with each entry's amounts scaled by a factor of its own."""
    rng = random.Random(zlib.crc32(symbol.encode()))
    model = ("AAPL", "MSFT")[rng.randrange(2)]
    cik, size = rng.randrange(10**6, 10**7), rng.uniform(0.005, 0.8)
    profile = orjson.loads((data / f"{model}.profile.json").read_bytes())[0]
    names = {
        profile["companyName"]: f"{symbol.title()} Holdings Inc.",
        profile["cik"]: f"{cik:010d}",
        str(int(profile["cik"])): str(cik),
        model: symbol,
    }
    name = f"{model}.{endpoint}" + ("" if endpoint == "profile" else f".{period}")
    entries = orjson.loads((data / f"{name}.json").read_bytes())
    return [_scaled(e, size * rng.uniform(0.9, 1.1), names) for e in entries]


def generated_prices(symbol: str, days: int, end: date = PRICES_END) -> dict[str, Any]:
    """FMP's historical-price-full answer: `days` weekdays up to `end`, newest first."""
    rng = random.Random(zlib.crc32(symbol.encode()) ^ 0x5EED)
    close, day = rng.uniform(20, 600), end
    rows: list[dict[str, Any]] = []
    while len(rows) < days:
        if day.weekday() < 5:
            move = close * rng.gauss(0, 0.015)
            o, c = round(close, 2), round(max(1.0, close + move), 2)
            high, low = round(max(o, c) * 1.006, 2), round(min(o, c) * 0.994, 2)
            volume = rng.randrange(1_000_000, 90_000_000)
            rows.append({"date": day.isoformat(), "open": o, "high": high, "low": low, "close": c,
                         "adjClose": c, "volume": volume, "unadjustedVolume": volume,
                         "change": round(c - o, 2), "changePercent": round((c - o) / o * 100, 5),
                         "vwap": round((high + low + c) / 3, 4), "label": day.strftime("%B %d, %y"),
                         "changeOverTime": round((c - o) / o, 7)})  # fmt: skip
            close = c
        day -= timedelta(days=1)
    return {"symbol": symbol, "historical": rows}


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the fake answered."""

    at_s: float  # time.monotonic()
    endpoint: str
    symbol: str
    period: str
    status: int


@dataclass(eq=False)
class FakeFmp(HttpFake):
    """The fake FMP; `start` binds it (port 0: any free port) and returns the port."""

    limit: int = 120
    window_s: float = 60.0
    api_key: str = API_KEY
    retry_after: bool = True
    data: Path = DATA
    requests: list[Seen] = field(default_factory=list)
    rate_limited: int = 0  # 429s sent
    refusal: int | None = None  # set by refuse_keys
    html: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)
    _windows: dict[str, deque[float]] = field(default_factory=dict)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/{endpoint}/{symbol}", self._handle)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # switches

    def refuse_keys(self, status: int = 401) -> None:
        """Every key is refused from now on, with `status` (200: as FMP's older endpoints do)."""
        self.refusal = status

    def serve_html(self, *symbols: str) -> None:
        """Answer every request for `symbols` with an HTML maintenance page (HTTP 200)."""
        self.html.update(symbols)

    def serve_empty(self, *symbols: str) -> None:
        """Answer every request for `symbols` as FMP does for a symbol it has nothing of."""
        self.empty.update(symbols)

    # what it serves

    def body(self, endpoint: str, symbol: str, period: str = "annual", limit: int = 1000) -> Any:
        """The JSON this fake answers to a request (recorded, else generated)."""
        if symbol in self.empty:
            return {} if endpoint == "historical-price-full" else []
        if endpoint == "historical-price-full":
            return generated_prices(symbol, limit)
        name = f"{symbol}.{endpoint}" + ("" if endpoint == "profile" else f".{period}")
        if (path := self.data / f"{name}.json").exists():
            return orjson.loads(path.read_bytes())[:limit]
        return generated_body(symbol, endpoint, period, self.data)[:limit]

    def _limited(self, key: str, now: float) -> float | None:
        """None if `key` may have another request now; else seconds until it may."""
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        if len(window) >= self.limit:
            return window[0] + self.window_s - now
        window.append(now)
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        endpoint, symbol = request.match_info["endpoint"], request.match_info["symbol"]
        query, now = request.query, time.monotonic()
        key = query.get("apikey", "")
        response: web.Response
        if self.refusal is not None or key != self.api_key:
            response = web.json_response(INVALID_KEY, status=self.refusal or 401)
        elif (wait_s := self._limited(key, now)) is not None:
            self.rate_limited += 1
            headers = {"Retry-After": str(math.ceil(wait_s))} if self.retry_after else {}
            response = web.json_response(LIMIT_REACH, status=429, headers=headers)
        elif endpoint not in ENDPOINTS:
            response = web.json_response({"Error Message": f"no endpoint {endpoint}"}, status=404)
        elif symbol in self.html:
            response = web.Response(text=HTML_PAGE, content_type="text/html")
        else:
            try:
                limit = int(query.get("limit") or query.get("timeseries") or 1000)
            except ValueError:
                limit = 1000
            body = self.body(endpoint, symbol, query.get("period", "annual"), limit)
            response = web.Response(body=orjson.dumps(body), content_type="application/json")
        self.requests.append(Seen(now, endpoint, symbol, query.get("period", ""), response.status))
        return response


async def _main(args: argparse.Namespace) -> None:
    # The key it accepts: the connector's (MS_FMP_API_KEY, else FMP_API_KEY), as `make up`
    # would set it for both sides, else the fixed fake one, which alone is shown.
    key = os.environ.get("MS_FMP_API_KEY") or os.environ.get("FMP_API_KEY") or API_KEY
    fake = FakeFmp(limit=args.limit, window_s=args.window_s, api_key=key)
    await fake.start(args.host, args.port)
    shown = key if key == API_KEY else "***"
    print(f"fake FMP: {fake.base_url}/api/v3/...?apikey={shown}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("FMP", "connectors.fakes.fmp", 8774, __doc__)
    parser.add_argument("--limit", type=int, default=120, help="requests per window and key")
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args()
    serve_until_interrupted(_main(args))


if __name__ == "__main__":
    main()
