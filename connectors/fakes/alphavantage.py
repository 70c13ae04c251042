"""A fake Alpha Vantage on 127.0.0.1: TIME_SERIES_INTRADAY from a recorded trading day.

`GET /query?function=TIME_SERIES_INTRADAY&symbol=..&interval=1min|5min|15min|30min|60min
&outputsize=compact|full&extended_hours=true|false&apikey=KEY` answers as Alpha Vantage does,
always with HTTP 200, from `data/alphavantage_intraday_1min_2025-06-10.json`: full-size
1min answers in its format for AAPL, MSFT and SPY on Tuesday 10 June 2025, 04:00 to 20:00
US/Eastern (the same generated day as the Yahoo fake's, minutes without trades left out). The
fake's clock stands at one minute of that day (`now_s`, 10:00 by default): points up to it
are final, the point at it is still forming (as connectors.fakes.yahoo forms it), later ones
do not exist yet; `advance` moves it on. Compact is the latest 100 points, newest first;
longer intervals are folded from the minutes; without extended_hours only 09:30 to 16:00.

Like Alpha Vantage, it counts each key's requests: past `minute_limit` within
`minute_window_s` (5 a minute) it answers the classic rate-limit Note, past `daily_limit`
within `day_window_s` (off unless given) the daily Information. A wrong key gets the invalid
key Error Message, an unknown symbol or parameter "Invalid API call". The switches
(`rate_limit_note`, `serve_html`, `fail`, `revoke_keys`, `advance`) play the rest.

    python -m connectors.fakes.alphavantage --port 8773
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.serving import HttpFake
from connectors.fakes.yahoo import MAINTENANCE_PAGE, Bar
from connectors.fakes.yahoo import NOW_S as NOW_S  # the same clock, re-exported
from connectors.fakes.yahoo import forming as forming

log = logging.getLogger(__name__)

RECORDING: Final = Path(__file__).parent / "data" / "alphavantage_intraday_1min_2025-06-10.json"
API_KEY: Final = "fake-alphavantage-key"
EASTERN: Final = ZoneInfo("US/Eastern")
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
INTERVAL_S: Final = {"1min": 60, "5min": 300, "15min": 900, "30min": 1800, "60min": 3600}
VALUE_KEYS: Final = ("1. open", "2. high", "3. low", "4. close", "5. volume")
INVALID_CALL: Final = (
    "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for TIME_SERIES_INTRADAY."
)
INVALID_KEY: Final = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)
MINUTE_NOTE: Final = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per "
    "minute and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you "
    "would like to target a higher API call frequency."
}
DAILY_NOTE: Final = {
    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 "
    "requests per day. Please subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
}


def load_recording(path: Path = RECORDING) -> dict[str, dict[str, Any]]:
    """The recorded answers, by symbol: each `{"Meta Data":{...},"Time Series (1min)":{...}}`."""
    answers: dict[str, dict[str, Any]] = orjson.loads(path.read_bytes())
    return answers


def recorded_minutes(answer: dict[str, Any]) -> list[tuple[int, Bar]]:
    """A recorded answer's points as (UNIX seconds, bar), oldest first."""
    points = []
    for key, point in answer["Time Series (1min)"].items():
        local = datetime.strptime(key, TIME_FORMAT).replace(tzinfo=EASTERN)
        bar = tuple(float(point[k]) for k in VALUE_KEYS)
        points.append((int(local.timestamp()), bar))
    return sorted(points)  # type: ignore[arg-type]


def _regular(ts: int) -> bool:
    local = datetime.fromtimestamp(ts, EASTERN)
    return (9, 30) <= (local.hour, local.minute) < (16, 0)


def _point(bar: Bar) -> dict[str, str]:
    return {k: f"{v:.4f}" for k, v in zip(VALUE_KEYS[:4], bar[:4], strict=True)} | {
        "5. volume": str(int(bar[4]))
    }


@dataclass(frozen=True, slots=True)
class Asked:
    """One request the fake received: when (time.monotonic() and time.time()) and its query,
    the key in it masked."""

    at_s: float
    wall_s: float
    query: dict[str, str]


class _AccessLogger(AbstractAccessLogger):
    """Method, path and status: never the query, which holds the key."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s", request.method, request.path, response.status)


class FakeAlphaVantage(HttpFake):
    """The fake API; `start` binds it (port 0: any free port) and returns the port."""

    access_log_class = _AccessLogger

    def __init__(
        self,
        answers: dict[str, dict[str, Any]] | None = None,
        *,
        now_s: int = NOW_S,
        api_key: str = API_KEY,
        minute_limit: int = 5,
        minute_window_s: float = 60.0,
        daily_limit: int | None = None,
        day_window_s: float = 86_400.0,
    ) -> None:
        self.answers = load_recording() if answers is None else answers
        self.now_s = now_s
        self.api_key = api_key
        self.keys_valid = True
        self.minute_limit, self.minute_window_s = minute_limit, minute_window_s
        self.daily_limit, self.day_window_s = daily_limit, day_window_s
        self.requests: list[Asked] = []
        self.notes_sent: Counter[str] = Counter()  # "minute", "day"
        self.notes_left: list[dict[str, str]] = []
        self.html_left = 0
        self.html_status = 200
        self.failing: dict[str, str] = {}
        self._seen: dict[str, deque[float]] = {}  # key -> its requests' times, a day's worth

    @property
    def url(self) -> str:
        """The query endpoint, as AlphaVantageConfig.base_url takes it."""
        return f"http://127.0.0.1:{self.port}/query"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/query", self._query)

    # switches

    def advance(self, minutes: int = 1) -> None:
        """Move the clock on: the forming point becomes final and the next minute forms."""
        self.now_s += 60 * minutes

    def rate_limit_note(self, times: int = 1, *, daily: bool = False) -> None:
        """Answer the next `times` requests with the minute Note (or the daily Information)."""
        self.notes_left += [DAILY_NOTE if daily else MINUTE_NOTE] * times

    def serve_html(self, times: int = 1, *, status: int = 200) -> None:
        """Answer the next `times` requests with an HTML page, not JSON."""
        self.html_left, self.html_status = times, status

    def fail(self, symbol: str, message: str = INVALID_CALL) -> None:
        """Answer `symbol` with this Error Message from now on (unknown symbols get one anyway)."""
        self.failing[symbol] = message

    def revoke_keys(self) -> None:
        """Every key is refused from now on."""
        self.keys_valid = False

    # the API

    def _counted_note(self, key: str) -> dict[str, str] | None:
        """Count the request against the key; the note it earns past a limit, if any."""
        now = time.monotonic()
        seen = self._seen.setdefault(key, deque())
        seen.append(now)
        while seen and seen[0] <= now - max(self.minute_window_s, self.day_window_s):
            seen.popleft()
        if sum(t > now - self.minute_window_s for t in seen) > self.minute_limit:
            return MINUTE_NOTE
        if self.daily_limit is not None:
            if sum(t > now - self.day_window_s for t in seen) > self.daily_limit:
                return DAILY_NOTE
        return None

    async def _query(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        key = query.get("apikey", "")
        masked = query | ({"apikey": "***"} if key else {})
        self.requests.append(Asked(time.monotonic(), time.time(), masked))
        if self.html_left > 0:
            self.html_left -= 1
            page = web.Response(text=MAINTENANCE_PAGE, content_type="text/html")
            page.set_status(self.html_status)
            return page
        if not self.keys_valid or key != self.api_key:
            return _json({"Error Message": INVALID_KEY})
        note = self._counted_note(key)
        if self.notes_left:
            note = self.notes_left.pop(0)
        if note is not None:
            self.notes_sent["day" if note is DAILY_NOTE else "minute"] += 1
            return _json(note)
        function = query.get("function", "")
        if function != "TIME_SERIES_INTRADAY":
            return _json({"Error Message": f"This API function ({function}) does not exist."})
        symbol, interval = query.get("symbol", ""), query.get("interval", "")
        if symbol in self.failing or symbol not in self.answers or interval not in INTERVAL_S:
            return _json({"Error Message": self.failing.get(symbol, INVALID_CALL)})
        extended = query.get("extended_hours", "true").lower() != "false"
        full = query.get("outputsize", "compact") == "full"
        return _json(self.series(symbol, interval, extended=extended, full=full))

    def series(self, symbol: str, interval: str, *, extended: bool, full: bool) -> dict[str, Any]:
        """Alpha Vantage's answer for `symbol` at the fake's clock."""
        width = INTERVAL_S[interval]
        folded: dict[int, list[Bar]] = {}
        for ts, bar in recorded_minutes(self.answers[symbol]):
            if ts > self.now_s:
                break
            if extended or _regular(ts):
                start = ts - ts % width  # US/Eastern is a whole number of hours from UTC
                folded.setdefault(start, []).append(forming(bar) if ts == self.now_s else bar)
        points = {}
        for start in sorted(folded, reverse=True)[: None if full else 100]:
            bars = folded[start]
            bar = (
                bars[0][0],
                max(b[1] for b in bars),
                min(b[2] for b in bars),
                bars[-1][3],
                sum(b[4] for b in bars),
            )
            key = datetime.fromtimestamp(start, EASTERN).strftime(TIME_FORMAT)
            points[key] = _point(bar)
        meta = {
            "1. Information": f"Intraday ({interval}) open, high, low, close prices and volume",
            "2. Symbol": symbol,
            "3. Last Refreshed": next(iter(points), ""),
            "4. Interval": interval,
            "5. Output Size": "Full size" if full else "Compact",
            "6. Time Zone": "US/Eastern",
        }
        return {"Meta Data": meta, f"Time Series ({interval})": points}


def _json(body: object) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_INDENT_2), content_type="application/json"
    )


async def _main(args: argparse.Namespace) -> None:
    # The key it accepts: the connector's (MS_ALPHAVANTAGE_API_KEY, else ALPHA_VANTAGE_API_KEY),
    # as `make up` sets it for both sides, else the fixed fake one, which alone is shown.
    key = (
        os.environ.get("MS_ALPHAVANTAGE_API_KEY")
        or os.environ.get("ALPHA_VANTAGE_API_KEY")
        or API_KEY
    )
    hour, minute = (int(part) for part in args.start.split(":"))
    start = datetime(2025, 6, 10, hour, minute, tzinfo=EASTERN)
    fake = FakeAlphaVantage(
        load_recording(args.data),
        now_s=int(start.timestamp()),
        api_key=key,
        minute_limit=args.minute_limit,
        daily_limit=args.daily_limit,
    )
    await fake.start(args.host, args.port)
    shown = key if key == API_KEY else "***"
    print(f"fake Alpha Vantage: {fake.url}?apikey={shown}", flush=True)
    while args.minute_s > 0:
        await asyncio.sleep(args.minute_s)
        fake.advance()
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("Alpha Vantage", "connectors.fakes.alphavantage", 8773, __doc__)
    parser.add_argument("--start", default="10:00", help="the clock's first minute, US/Eastern")
    parser.add_argument(
        "--minute-s", type=float, default=60.0, help="seconds per recorded minute; 0: stand still"
    )
    parser.add_argument("--minute-limit", type=int, default=5, help="requests a minute per key")
    parser.add_argument("--daily-limit", type=int, default=None, help="requests a day per key")
    parser.add_argument("--data", type=Path, default=RECORDING, help="recorded 1min answers")
    args = parser.parse_args()
    serve_until_interrupted(_main(args))


if __name__ == "__main__":
    main()
