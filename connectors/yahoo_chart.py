"""Yahoo Finance chart responses (`/v8/finance/chart/{symbol}`) to bars; no HTTP here.

Yahoo documents none of this; the format is the one its own site reads and every client uses
(yfinance's `scrapers/history.py`, https://github.com/ranaroussi/yfinance):
`{"chart":{"result":[{"meta":{...},"timestamp":[s...],"indicators":{"quote":[{"open":[...],
"high":[...],"low":[...],"close":[...],"volume":[...]}]}}],"error":null}}`, `timestamp` in UNIX
seconds, each the start of its bar. Minutes without trades come as nulls in every column and
are skipped. A result without data has no `timestamp` and a quote of `{}`. An error is
`{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may
be delisted"}}}` (yfinance issue #1548). Quirks handled as yfinance does (its `utils.py`):
the live price can come as a separate last row inside the previous bar's interval (merged
into it), and pre/post-market rows can come although not asked for (dropped, by the regular
trading periods in `meta`). Daily bars are stamped with the exchange's open; we stamp them
with the UTC midnight of the exchange's trading date, as shared.intervals aligns days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from connectors.base import Rejected
from connectors.polled_bars import Bars, Row
from shared.errors import MarketstreamError

# our interval names -> Yahoo's (Yahoo's 60m is our 1h) and their lengths in seconds
INTERVALS: Final = {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "60m", "1d": "1d"}
INTERVAL_S: Final = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}
QUOTE_COLUMNS: Final = ("open", "high", "low", "close", "volume")
MAX_TS_S: Final = 10**11  # the year 5138: a larger timestamp is not in seconds


class ChartError(MarketstreamError):
    """Yahoo answered with `chart.error`: its `code` ("Not Found", "Bad Request") and text."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class MalformedChartError(MarketstreamError):
    """The body is not a chart response; `reason` is `undecodable` (not JSON) or
    `malformed_response` (JSON of another shape)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, eq=False)
class Chart:
    """One chart response: its bars, the rows Yahoo sent as nulls (skipped), the pre/post-market
    rows dropped because they were not asked for, and the rows rejected one by one."""

    bars: Bars
    nulls: int = 0
    outside_regular: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _number(value: object) -> float | None:
    """The value as a finite float, or None if it is not a JSON number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _periods(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """The regular trading periods in `meta` as [start, end) UNIX seconds: `tradingPeriods`
    (a list of lists of periods, or with pre/post asked for, a dict whose `regular` is one),
    else `currentTradingPeriod.regular`; empty if `meta` has neither."""
    found: list[Any] = []
    trading = meta.get("tradingPeriods")
    if isinstance(trading, dict):
        trading = trading.get("regular")
    if isinstance(trading, list):
        found = [p for day in trading if isinstance(day, list) for p in day]
    if not found and isinstance(current := meta.get("currentTradingPeriod"), dict):
        found = [current.get("regular")]
    periods = []
    for period in found:
        if isinstance(period, dict):
            start, end = period.get("start"), period.get("end")
            if isinstance(start, int) and isinstance(end, int) and start < end:
                periods.append((start, end))
    return periods


def _exchange_zone(meta: dict[str, Any]) -> timezone | ZoneInfo:
    """The exchange's time zone: `exchangeTimezoneName`, else the fixed `gmtoffset`, else UTC."""
    name = meta.get("exchangeTimezoneName")
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    offset = meta.get("gmtoffset")
    if isinstance(offset, int) and abs(offset) < 86_400:
        return timezone(timedelta(seconds=offset))
    return UTC


def _trading_day_us(ts_s: int, zone: timezone | ZoneInfo) -> int:
    """The UTC midnight (µs) of the exchange's date at `ts_s`."""
    day = datetime.fromtimestamp(ts_s, zone).date()
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _merge(rows: list[Row], interval: str, zone: timezone | ZoneInfo) -> list[Row]:
    """Put the rows on bar starts: days at UTC midnight (a repeated day keeps its last row,
    the live one); a last intraday row inside the previous bar's interval merged into it
    (high, low, close and volume added), one past it put on the previous bar's grid."""
    if interval == "1d":
        days: dict[int, Row] = {}
        for ts_us, *values in rows:
            day_us = _trading_day_us(ts_us // 1_000_000, zone)
            days[day_us] = (day_us, *values)  # type: ignore[assignment]
        return list(days.values())
    if len(rows) < 2:
        return rows
    width_us = INTERVAL_S[interval] * 1_000_000
    (prev_us, o, h, low, _, v), (last_us, _, h2, low2, c2, v2) = rows[-2], rows[-1]
    if last_us - prev_us < width_us:
        return [*rows[:-2], (prev_us, o, max(h, h2), min(low, low2), c2, v + v2)]
    on_grid_us = prev_us + (last_us - prev_us) // width_us * width_us
    return [*rows[:-1], (on_grid_us, *rows[-1][1:])]


def _columns(result: dict[str, Any], symbol: str) -> tuple[list[Any], dict[str, list[Any]]]:
    """The `timestamp` list and the quote columns of a result; raise MalformedChartError."""
    timestamps = result.get("timestamp", [])
    indicators = result.get("indicators")
    quotes = indicators.get("quote") if isinstance(indicators, dict) else None
    if not isinstance(timestamps, list) or not isinstance(quotes, list) or not quotes:
        raise MalformedChartError("malformed_response", f"{symbol}: no timestamp or quote list")
    quote = quotes[0]
    if not timestamps:
        return [], {}
    if not isinstance(quote, dict):
        raise MalformedChartError("malformed_response", f"{symbol}: the quote is not an object")
    columns = {}
    for name in QUOTE_COLUMNS:
        column = quote.get(name)
        if not isinstance(column, list) or len(column) != len(timestamps):
            raise MalformedChartError(
                "malformed_response",
                f"{symbol}: quote {name} is not a list as long as timestamp ({len(timestamps)})",
            )
        columns[name] = column
    return timestamps, columns


def parse_chart(body: bytes, symbol: str, interval: str, *, include_pre_post: bool) -> Chart:
    """Parse a chart response for `interval` (our name: 1m, 5m, 15m, 1h, 1d).

    Raise ChartError for Yahoo's `chart.error`, MalformedChartError for a body that is not a
    chart response. A row with a value that is no number, or a price <= 0, is rejected alone.
    Without `include_pre_post`, intraday rows outside the regular trading periods are dropped.
    """
    if interval not in INTERVAL_S:
        raise ValueError(f"interval {interval!r} is not one of {', '.join(INTERVAL_S)}")
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedChartError("undecodable", f"{symbol}: not JSON ({exc})") from exc
    chart = message.get("chart") if isinstance(message, dict) else None
    if not isinstance(chart, dict):
        raise MalformedChartError("malformed_response", f"{symbol}: no chart object")
    if (error := chart.get("error")) is not None:
        if isinstance(error, dict):
            raise ChartError(str(error.get("code", "")), str(error.get("description", "")))
        raise ChartError("", str(error))
    results = chart.get("result")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise MalformedChartError("malformed_response", f"{symbol}: no result")
    result = results[0]
    meta = result.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    timestamps, columns = _columns(result, symbol)
    regular = [] if include_pre_post or interval == "1d" else _periods(meta)
    rows: list[Row] = []
    chart_nulls = outside = 0
    rejected: list[Rejected] = []
    for i, ts_s in enumerate(timestamps):
        raw = [columns[name][i] for name in QUOTE_COLUMNS]
        if any(value is None for value in raw):
            chart_nulls += 1
            continue
        values = [_number(value) for value in raw]
        problem = None
        if isinstance(ts_s, bool) or not isinstance(ts_s, int) or not 0 < ts_s < MAX_TS_S:
            problem = "bad_timestamp", f"timestamp {ts_s!r} is not UNIX seconds"
        elif any(v is None or v <= 0 for v in values[:4]):
            problem = "bad_price", f"a price of {raw[:4]!r} is not a finite number > 0"
        elif values[4] is None or values[4] < 0:
            problem = "bad_size", f"volume {raw[4]!r} is not a finite number >= 0"
        if problem is not None:
            row = {"timestamp": ts_s, **dict(zip(QUOTE_COLUMNS, raw, strict=True))}
            detail = f"{symbol} row {i}: {problem[1]}"
            rejected.append(Rejected(problem[0], detail, orjson.dumps(row)))
            continue
        if regular and not any(start <= ts_s < end for start, end in regular):
            outside += 1
            continue
        rows.append((ts_s * 1_000_000, *values))
    rows.sort(key=lambda row: row[0])
    merged = _merge(rows, interval, _exchange_zone(meta))
    return Chart(Bars.from_rows(merged), chart_nulls, outside, rejected)
