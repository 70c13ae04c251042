"""Alpha Vantage TIME_SERIES_INTRADAY answers to bars, and what its other answers mean; no HTTP.

Documented at https://www.alphavantage.co/documentation/#intraday: `{"Meta Data":{"1.
Information":..,"2. Symbol":..,"3. Last Refreshed":..,"4. Interval":"1min","5. Output Size":..,
"6. Time Zone":"US/Eastern"},"Time Series (1min)":{"2025-06-10 09:30:00":{"1. open":"200.5800",
"2. high":..,"3. low":..,"4. close":..,"5. volume":"1542684"},...}}`, newest first, the keys
local times in "6. Time Zone", each the start of its bar; numbers are strings. Alpha Vantage
answers everything else with HTTP 200 too: {"Error Message": "Invalid API call. ..."} for a
bad symbol or parameter; {"Error Message": "the parameter apikey is invalid or missing. Please
claim your free API key on (https://www.alphavantage.co/support/#api-key) ..."} for a bad key;
and its rate limits as {"Note": "... Our standard API call frequency is 5 calls per minute and
500 calls per day ..."} (https://github.com/finance-quote/finance-quote/pull/104) or
{"Information": "... rate limit is 25 requests per day ..."} and, since 2025, one about
"1 request per second" (https://github.com/beancount/beanprice/issues/124).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from connectors.base import Rejected
from connectors.polled_bars import Bars, Row
from shared.errors import MarketstreamError

# our interval names -> Alpha Vantage's
INTERVALS: Final = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "1h": "60min"}
VALUE_KEYS: Final = ("1. open", "2. high", "3. low", "4. close", "5. volume")
KEY_REFUSED: Final = re.compile(
    r"apikey is invalid|invalid api ?key|api ?key is invalid|claim your free api key", re.I
)
PER_SECOND: Final = re.compile(r"per[- ]second|requests? per second", re.I)
PER_MINUTE: Final = re.compile(r"per minute|call frequency", re.I)
PER_DAY: Final = re.compile(r"per day|daily", re.I)
LIMITED: Final = re.compile(r"rate limit|call frequency|calls per|requests per|spreading out", re.I)
TIME_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")

Scope = Literal["second", "minute", "day"]


class KeyRefusedError(MarketstreamError):
    """Alpha Vantage refused the API key; the text is its message (which holds no key)."""


class ApiMessageError(MarketstreamError):
    """Alpha Vantage answered with a message instead of data: `kind` is "Error Message" or
    "Information" (e.g. a premium-only parameter)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"{kind}: {text}")
        self.kind = kind
        self.text = text


class MalformedResponseError(MarketstreamError):
    """The body is not a documented answer; `reason` is `undecodable` (not JSON) or
    `malformed_response`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LimitNote:
    """A rate-limit answer: its text and the limit it speaks of (a burst, the minute, the day)."""

    text: str
    scope: Scope


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """An intraday series: its bars in time order and the points rejected one by one."""

    bars: Bars
    time_zone: str
    rejected: list[Rejected] = field(default_factory=list)


def limit_scope(text: str) -> Scope:
    """Which limit a rate-limit note speaks of: a per-second burst, the minute (also when it
    names both the minute and the day, as the classic Note does) or the day."""
    if PER_SECOND.search(text):
        return "second"
    if PER_MINUTE.search(text):
        return "minute"
    if PER_DAY.search(text):
        return "day"
    return "minute"


def limit_wait_s(
    scope: Scope, now_s: float, minute_s: float = 60.0, day_s: float = 86_400
) -> float:
    """Seconds from `now_s` (UNIX) to the start of the next second, minute or UTC day: the
    next window of the limit the note spoke of (windows counted from the epoch, so that 60 s
    gives the next wall-clock minute and 86400 s the next UTC midnight)."""
    window = {"second": 1.0, "minute": minute_s, "day": day_s}[scope]
    return window - math.fmod(now_s, window)


def _local_us(key: str, zone: ZoneInfo) -> int | None:
    """A series key (local time in `zone`) as µs since the epoch, or None if it is not one."""
    for form in TIME_FORMATS:
        try:
            local = datetime.strptime(key, form)
        except ValueError:
            continue
        return int(local.replace(tzinfo=zone).timestamp()) * 1_000_000
    return None


def _point(key: str, point: object, zone: ZoneInfo) -> Row | str:
    """One series point as a row, or why it is not one."""
    ts_us = _local_us(key, zone)
    if ts_us is None:
        return f"{key!r} is not a local time like 2025-06-10 09:30:00"
    if not isinstance(point, dict):
        return f"{key}: a {type(point).__name__}, not an object"
    values: list[float] = []
    for name in VALUE_KEYS:
        text = point.get(name)
        try:
            value = float(text) if isinstance(text, str) else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and name != "5. volume"):
            return f"{key}: {name} {text!r} is not a number > 0 (volume >= 0)"
        values.append(value)
    return (ts_us, *values)  # type: ignore[return-value]


def parse_intraday(body: bytes, symbol: str, interval: str) -> Series | LimitNote:
    """Parse an answer to TIME_SERIES_INTRADAY for `interval` (our name: 1m .. 1h).

    Return the series, or the rate-limit note given instead. Raise KeyRefusedError for a
    refused key, ApiMessageError for an error message, MalformedResponseError for anything
    else. A point that does not parse is rejected alone, the others kept.
    """
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponseError("undecodable", f"{symbol}: not JSON ({exc})") from exc
    if not isinstance(message, dict):
        kind = type(message).__name__
        raise MalformedResponseError("malformed_response", f"{symbol}: a JSON {kind}")
    said = {k: str(message[k]) for k in ("Error Message", "Information", "Note") if k in message}
    if any(KEY_REFUSED.search(text) for text in said.values()):
        raise KeyRefusedError(" ".join(said.values()))
    series_key = f"Time Series ({INTERVALS[interval]})"
    if series_key not in message:
        if "Note" in said:
            return LimitNote(said["Note"], limit_scope(said["Note"]))
        if "Information" in said and LIMITED.search(said["Information"]):
            return LimitNote(said["Information"], limit_scope(said["Information"]))
        if said:
            kind, text = next(iter(said.items()))
            raise ApiMessageError(kind, text)
        keys = ", ".join(sorted(message)) or "nothing"
        raise MalformedResponseError("malformed_response", f"{symbol}: no {series_key}, {keys}")
    meta, points = message.get("Meta Data"), message[series_key]
    zone_name = meta.get("6. Time Zone") if isinstance(meta, dict) else None
    if not isinstance(points, dict) or not isinstance(zone_name, str):
        raise MalformedResponseError(
            "malformed_response", f"{symbol}: no Meta Data time zone or no series object"
        )
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MalformedResponseError(
            "malformed_response", f"{symbol}: unknown time zone {zone_name!r}"
        ) from exc
    rows: list[Row] = []
    rejected: list[Rejected] = []
    for key, point in points.items():
        row = _point(key, point, zone)
        if isinstance(row, str):
            payload = orjson.dumps({key: point})
            rejected.append(Rejected("malformed_bar", f"{symbol} {row}", payload))
        else:
            rows.append(row)
    return Series(Bars.from_rows(rows), zone_name, rejected)
