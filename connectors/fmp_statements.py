"""FMP's fundamentals responses to domain values: pure parsing, no HTTP and no database here.

One refresh unit is one request: a (symbol, statement, period) such as (AAPL, balance_sheet,
quarter), answered by a JSON list of statements, newest first, each an object with `date` (the
fiscal period's end, yyyy-mm-dd), `symbol`, `period` (FY, Q1..Q4) and, for the three financial
statements, `fillingDate` and `acceptedDate` (when the filing reached the SEC's EDGAR, whose
clock is US Eastern time). A profile is a list of one object and no date; daily prices are an
object `{"symbol", "historical": [{date, open, high, low, close, volume, vwap, ...}]}`, and `{}`
for a symbol without any. Errors come as `{"Error Message": "..."}`, with HTTP 200 on older
endpoints ("Invalid API KEY. ...") and with 429 once the plan's limit is reached ("Limit Reach
. Please upgrade your plan ..."). Documented at
https://site.financialmodelingprep.com/developer/docs (financial-statement-free-api,
financial-ratio-free-api, company-key-metrics-api, companies-profile, historical-price-full).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, get_args
from urllib.parse import quote
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from connectors.base import Rejected
from shared.models import FundamentalStatement, ProviderBarBatch
from shared.symbols import symbol_problem

SOURCE: Final = "fmp"
Statement = Literal[
    "profile", "income_statement", "balance_sheet", "cash_flow", "ratios", "key_metrics"
]
STATEMENTS: Final[tuple[str, ...]] = get_args(Statement)
Period = Literal["annual", "quarter"]
PERIODS: Final[tuple[str, ...]] = get_args(Period)
PRICES: Final = "prices"  # the unit of daily prices: statement "prices", period "1d"
ENDPOINTS: Final = {
    "profile": "profile",
    "income_statement": "income-statement",
    "balance_sheet": "balance-sheet-statement",
    "cash_flow": "cash-flow-statement",
    "ratios": "ratios",
    "key_metrics": "key-metrics",
    PRICES: "historical-price-full",
}
EDGAR_CLOCK: Final = ZoneInfo("America/New_York")
KEY_REFUSED: Final = re.compile(r"invalid api ?key", re.IGNORECASE)
LIMIT_REACHED: Final = re.compile(r"limit reach", re.IGNORECASE)
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_TITLE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
PRICE_FIELDS: Final = ("open", "high", "low", "close")

Item = FundamentalStatement | ProviderBarBatch | Rejected  # what a refresh yields


@dataclass(frozen=True, slots=True)
class Unit:
    """One request of a refresh, and the grain of its progress."""

    symbol: str
    statement: str  # one of STATEMENTS, or PRICES
    period: str  # annual, quarter; snapshot for a profile; 1d for prices

    def __str__(self) -> str:
        return f"{self.symbol} {self.statement} {self.period}"


def parse_tickers(symbols: str, lines: Iterable[str] = ()) -> list[str]:
    """Comma-separated `symbols`, then one ticker a line (`#` starts a comment), upper-cased,
    each once; raise ValueError if there are none or one is malformed."""
    names = [*symbols.split(","), *(line.split("#", 1)[0] for line in lines)]
    tickers = [n.strip().upper() for n in names if n.strip()]
    if not tickers:
        raise ValueError("no symbols: set MS_FMP_SYMBOLS or MS_FMP_SYMBOLS_FILE")
    for ticker in tickers:
        if problem := symbol_problem(ticker):
            raise ValueError(problem)
    return list(dict.fromkeys(tickers))


def units(
    symbols: Iterable[str], statements: Sequence[str], periods: Sequence[str], *, prices: bool
) -> list[Unit]:
    """Every request of a refresh, symbol by symbol, in a fixed order."""
    out: list[Unit] = []
    for symbol in symbols:
        for statement in statements:
            if statement == "profile":
                out.append(Unit(symbol, statement, "snapshot"))
            else:
                out.extend(Unit(symbol, statement, period) for period in periods)
        if prices:
            out.append(Unit(symbol, PRICES, "1d"))
    return out


def request_of(
    unit: Unit, *, annual_limit: int, quarter_limit: int, price_days: int
) -> tuple[str, dict[str, str]]:
    """The path under the base URL and the query (without the key) that fetch `unit`."""
    path = f"/api/v3/{ENDPOINTS[unit.statement]}/{quote(unit.symbol, safe='')}"
    if unit.statement == "profile":
        return path, {}
    if unit.statement == PRICES:
        return path, {"timeseries": str(price_days)}
    limit = annual_limit if unit.period == "annual" else quarter_limit
    return path, {"period": unit.period, "limit": str(limit)}


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one response held: records and per-entry rejections in body order; `complete` if
    the body had the documented shape (the unit is answered, even with nothing); FMP's
    `Error Message` if it was an error body."""

    items: tuple[Item, ...] = ()
    complete: bool = False
    error: str | None = None

    @property
    def records(self) -> int:
        return sum(not isinstance(item, Rejected) for item in self.items)


def _reject(reason: str, detail: str, payload: bytes) -> Parsed:
    return Parsed((Rejected(reason, detail, payload),))


def _decode(body: bytes, content_type: str) -> tuple[Any, Parsed | None]:
    """The body as JSON, or a whole-body rejection: an HTML page, not JSON, FMP's error body."""
    if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
        title = _TITLE.search(body)
        shown = title[1].decode(errors="replace").strip()[:120] if title else "no title"
        return None, _reject("html_page", f"an HTML page ({shown}), not JSON", body)
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return None, _reject("undecodable", f"not JSON: {exc}", body)
    if isinstance(message, dict) and "Error Message" in message:
        text = " ".join(str(message["Error Message"]).split())
        return None, Parsed((Rejected("provider_error", text, body),), error=text)
    return message, None


def edgar_time_us(text: object) -> int | None:
    """`acceptedDate` / `fillingDate` ("2024-11-01 06:01:36", "2024-11-01") as UTC micros, read
    on EDGAR's clock (US Eastern); None if it is not such a time."""
    if not isinstance(text, str) or not _ISO_DATE.match(text):
        return None
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=EDGAR_CLOCK)
    return int(local.timestamp() * 1_000_000)


def _filed_us(entry: dict[str, Any]) -> int | None:
    """When the statement was filed: acceptedDate (to the second), else the filing's date."""
    for key in ("acceptedDate", "fillingDate", "filingDate"):  # filingDate: FMP's newer name
        if (when := edgar_time_us(entry.get(key))) is not None:
            return when
    return None


def _fiscal_date(value: object) -> str | None:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None


def parse_statements(
    body: bytes, unit: Unit, ts_recv_us: int, content_type: str = "application/json"
) -> Parsed:
    """Parse a statements (or profile) response for `unit`; never raises for bad input.

    Each entry becomes one FundamentalStatement whose body is the entry re-encoded as compact
    JSON (same keys and values, in order). An entry that is not an object, has no valid
    `date` or names another symbol is rejected alone; the others are kept. A profile's fiscal
    date is the UTC day it was received (a snapshot has no period).
    """
    message, rejected = _decode(body, content_type)
    if rejected is not None:
        return rejected
    if not isinstance(message, list):
        return _reject("malformed_response", f"a JSON {type(message).__name__}, not a list", body)
    items: list[Item] = []
    for position, entry in enumerate(message):
        payload = orjson.dumps(entry)
        if not isinstance(entry, dict):
            kind = type(entry).__name__
            items.append(Rejected("malformed_statement", f"[{position}] is a {kind}", payload))
            continue
        named = entry.get("symbol", unit.symbol)
        if named != unit.symbol:
            detail = f"[{position}] is of {named!r}, not {unit.symbol!r}"
            items.append(Rejected("wrong_symbol", detail, payload))
            continue
        if unit.statement == "profile":
            fiscal: str | None = datetime.fromtimestamp(ts_recv_us / 1e6, UTC).date().isoformat()
        else:
            fiscal = _fiscal_date(entry.get("date"))
        if fiscal is None:
            detail = f"[{position}] date {entry.get('date')!r} is not yyyy-mm-dd"
            items.append(Rejected("malformed_statement", detail, payload))
            continue
        items.append(
            FundamentalStatement(
                symbol=unit.symbol,
                statement=unit.statement,
                period=unit.period,
                fiscal_date=fiscal,
                provider=SOURCE,
                body=payload,
                ts_event_us=_filed_us(entry) or ts_recv_us,
                ts_recv_us=ts_recv_us,
            )
        )
    return Parsed(tuple(items), complete=True)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bar_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return f"a {type(row).__name__}, not an object"
    if _fiscal_date(row.get("date")) is None:
        return f"date {row.get('date')!r} is not yyyy-mm-dd"
    for key in PRICE_FIELDS:
        price = _finite(row.get(key))
        if price is None or price <= 0:
            return f"{key} {row.get(key)!r} is not a finite number > 0"
    volume = _finite(row.get("volume"))
    if volume is None or volume < 0:
        return f"volume {row.get('volume')!r} is not a finite number >= 0"
    return None


def parse_prices(
    body: bytes, unit: Unit, ts_recv_us: int, content_type: str = "application/json"
) -> Parsed:
    """Parse a historical-price-full response into one ProviderBarBatch of daily bars, oldest
    first, each at 00:00 UTC of its date; bad rows are rejected alone, `{}` means none."""
    message, rejected = _decode(body, content_type)
    if rejected is not None:
        return rejected
    if not isinstance(message, dict):
        return _reject(
            "malformed_response", f"a JSON {type(message).__name__}, not an object", body
        )
    history = message.get("historical", [])
    if not isinstance(history, list):
        return _reject("malformed_response", "historical is not a list", body)
    items: list[Item] = []
    rows: list[dict[str, Any]] = []
    for position, row in enumerate(history):
        if problem := _bar_problem(row):
            items.append(
                Rejected("bad_bar", f"historical[{position}]: {problem}", orjson.dumps(row))
            )
        else:
            rows.append(row)
    rows.sort(key=lambda r: str(r["date"]))
    if rows:
        n = len(rows)
        day_s = [datetime.fromisoformat(r["date"]).replace(tzinfo=UTC).timestamp() for r in rows]
        vwap = [_finite(r.get("vwap")) for r in rows]

        def column(key: str) -> np.ndarray[Any, np.dtype[np.float64]]:
            return np.array([float(r[key]) for r in rows], dtype=np.float64)

        items.append(
            ProviderBarBatch(
                source=SOURCE,
                provider=SOURCE,
                interval="1d",
                instruments=(unit.symbol,),
                instrument_index=np.zeros(n, dtype=np.int32),
                ts_us=np.array(day_s, dtype=np.int64) * 1_000_000,
                open=column("open"),
                high=column("high"),
                low=column("low"),
                close=column("close"),
                volume=column("volume"),
                vwap=np.array([math.nan if v is None else v for v in vwap], dtype=np.float64),
                trade_count=np.full(n, -1, dtype=np.int64),
                revision=np.zeros(n, dtype=np.int32),
                ts_recv_us=ts_recv_us,
            )
        )
    return Parsed(tuple(items), complete=True)


def parse_unit(body: bytes, unit: Unit, ts_recv_us: int, content_type: str) -> Parsed:
    """Parse the 200 response to `unit`, whichever endpoint answered it."""
    parse = parse_prices if unit.statement == PRICES else parse_statements
    return parse(body, unit, ts_recv_us, content_type)


def error_text(body: bytes, limit: int = 160) -> str:
    """FMP's `Error Message` from an error body, else the start of the body, on one line."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        message = None
    if isinstance(message, dict) and "Error Message" in message:
        text = str(message["Error Message"])
    else:
        text = body[:limit].decode(errors="replace")
    return " ".join(text.split())[:limit]
