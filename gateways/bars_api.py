"""`GET /bars/{symbol}`: an instrument's bars of one interval, oldest first, for people and
programs, as JSON, CSV or Parquet.

`?interval=1m&start=&end=&limit=&cursor=&format=`: `start` (inclusive) and `end` (exclusive)
are RFC 3339 times with a zone or microseconds since the epoch (default: everything); `limit`
1 to 50,000 bars a page (default 1,000); `format` `json`, `csv` or `parquet`, else the `Accept`
header (`text/csv`, `application/vnd.apache.parquet`), else JSON. Each bar is the latest
revision the sink merged. A page that is not the last names the next one: `next_cursor` and
`next` in the JSON body, and for every format the headers `X-Next-Cursor` and
`Link: <...>; rel="next"`; ask again with the same parameters and `cursor=`.

PostgreSQL does the per-row work: JSON comes from `json_agg`, CSV is streamed from `COPY`, and
Parquet is that CSV parsed and written by Arrow, so no bar becomes a Python object. Pages are
keyset ranges of the primary key (instrument, interval, ts): each costs an index range scan,
however deep into a year of bars it lies.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, urlencode

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.params import BadRequestError, parse_limit, parse_time
from gateways.read_pool import database_answers
from shared.intervals import parse_interval
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import MAX_US, MIN_US

DEFAULT_LIMIT: Final = 1_000
MAX_LIMIT: Final = 50_000
FORMATS: Final = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
# What the columns of CSV and Parquet hold (JSON has the same keys, symbol and interval once).
COLUMNS: Final = (
    ("symbol", pa.string()),
    ("interval", pa.string()),
    ("ts", pa.string()),
    ("ts_us", pa.int64()),
    ("revision", pa.int32()),
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
    ("vwap", pa.float64()),
    ("trade_count", pa.int64()),
    ("buy_volume", pa.float64()),
    ("sell_volume", pa.float64()),
    ("source", pa.string()),
    ("ts_event_us", pa.int64()),
    ("ts_recv_us", pa.int64()),
)


def _micros(column: str) -> str:
    return f"(extract(epoch from {column}) * 1000000)::bigint"


# RFC 3339 in UTC, with a fraction only where there is one (as shared.times.rfc3339 writes it).
_RFC3339: Final = (
    "to_char(ts at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || case when extract(microseconds from ts)::int %% 1000000 = 0 then ''"
    " else to_char(ts at time zone 'UTC', '.US') end || 'Z'"
)
_EXPRESSIONS: Final = {
    "symbol": "instrument",
    "ts": _RFC3339,
    "ts_us": _micros("ts"),
    "ts_event_us": _micros("ts_event"),
    "ts_recv_us": _micros("ts_recv"),
}
_SELECT: Final = ", ".join(f"{_EXPRESSIONS.get(name, name)} as {name}" for name, _ in COLUMNS)
RANGE_SQL: Final = (
    "from bars where instrument = %(symbol)s and interval = %(interval)s"
    " and ts >= to_timestamp(%(start)s / 1e6) and ts < to_timestamp(%(end)s / 1e6)"
)
# The first bar after this page: where the next one starts (an index-only walk of `limit` keys).
NEXT_SQL: Final = f"select {_micros('ts')} {RANGE_SQL} order by ts offset %(limit)s limit 1"
# Each bar its row made JSON whole (json_agg of the record: faster than json_build_object).
JSON_SQL: Final = (
    "select coalesce(json_agg(page order by page.ts_us), '[]')::text from (select "
    + ", ".join(f"{_EXPRESSIONS.get(name, name)} as {name}" for name, _ in COLUMNS[2:])
    + f" {RANGE_SQL} order by ts) page"
)
CSV_SQL: Final = (
    f"copy (select {_SELECT} {RANGE_SQL} order by ts) to stdout with (format csv, header)"
)
_CSV_TYPES: Final = pa_csv.ConvertOptions(
    column_types=dict(COLUMNS), strings_can_be_null=False, quoted_strings_can_be_null=False
)


def encode_cursor(start_us: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{start_us}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The start of the page a cursor names; raise BadRequestError for one we did not write."""
    try:
        version, _, start = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).partition(
            b":"
        )
        if version == b"v1" and start.isdigit() and MIN_US <= int(start) <= MAX_US:
            return int(start)
    except (binascii.Error, ValueError):
        pass
    raise BadRequestError("cursor is not one this API gave (take next_cursor of a page)")


def negotiated_format(request: web.Request) -> str:
    """`format=`, else the first format the Accept header names, else JSON."""
    if (name := request.query.get("format")) is not None:
        if name not in FORMATS:
            raise BadRequestError(f"format is one of {', '.join(FORMATS)}, not {name!r}")
        return name
    accept = request.headers.get("Accept", "")
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        for name, media_type in FORMATS.items():
            if media in (media_type, "application/x-parquet" if name == "parquet" else None):
                return name
    return "json"


def parse_bars_query(request: web.Request) -> dict[str, object]:
    """The query's parameters, checked and defaulted; raise BadRequestError saying what is wrong."""
    symbol = request.match_info["symbol"]
    if problem := symbol_problem(symbol):
        raise BadRequestError(problem)
    interval = request.query.get("interval", "1m")
    try:
        parse_interval(interval)
    except ValueError as exc:
        raise BadRequestError(f"interval: {exc}") from None
    query = request.query
    start = parse_time(query["start"], "start") if "start" in query else MIN_US
    end = parse_time(query["end"], "end") if "end" in query else MAX_US
    if "cursor" in query:
        start = max(start, decode_cursor(query["cursor"]))
    if end <= start and "cursor" not in query:
        raise BadRequestError("end must be after start")
    return {
        "symbol": symbol,
        "interval": interval,
        "start": start,
        "end": end,
        "limit": parse_limit(query.get("limit"), DEFAULT_LIMIT, MAX_LIMIT),
    }


def next_link(request: web.Request, cursor: str) -> str:
    """The next page's path and query (the key left out), the symbol quoted: it may hold `#`."""
    query = {k: v for k, v in request.query.items() if k not in ("cursor", "api_key")}
    path = f"/bars/{quote(request.match_info['symbol'], safe='')}"
    return f"{path}?{urlencode({**query, 'cursor': cursor})}"


def parquet_of(csv: bytes) -> bytes:
    """The CSV that COPY wrote, as a Parquet file (zstd) with the columns' types."""
    table = pa_csv.read_csv(io.BytesIO(csv), convert_options=_CSV_TYPES)  # a header at least
    table = table.set_column(
        table.schema.get_field_index("ts"),
        "ts",
        table["ts_us"].cast(pa.timestamp("us", tz="UTC")),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def add_bars_routes(app: web.Application, pool: AsyncConnectionPool, readers: KeyGuard) -> None:
    async def bars(request: web.Request) -> web.StreamResponse:
        try:
            wanted = parse_bars_query(request)
            kind = negotiated_format(request)
        except BadRequestError as exc:
            return json_response({"error": str(exc)}, 400)
        async with pool.connection() as db:
            row = await (await db.execute(NEXT_SQL, wanted)).fetchone()
            page = {**wanted, "end": row[0]} if row else wanted
            cursor = encode_cursor(row[0]) if row else None
            headers = {"Link": f'<{next_link(request, cursor)}>; rel="next"'} if cursor else {}
            headers |= {"X-Next-Cursor": cursor} if cursor else {}
            if kind == "json":
                (body,) = await (await db.execute(JSON_SQL, page)).fetchone() or ("[]",)
                head = {"symbol": wanted["symbol"], "interval": wanted["interval"]}
                tail = {
                    "next_cursor": cursor,
                    "next": next_link(request, cursor) if cursor else None,
                }
                return web.Response(
                    body=_json_with_bars(head, body, tail),
                    content_type="application/json",
                    headers=headers,
                )
            chunks = []
            async with db.cursor().copy(CSV_SQL, page) as copy:
                async for chunk in copy:
                    chunks.append(bytes(chunk))
        csv = b"".join(chunks)
        body = csv if kind == "csv" else await asyncio.to_thread(parquet_of, csv)
        name = quote(f"{wanted['symbol']}-{wanted['interval']}.{kind}", safe="")
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{name}"
        return web.Response(body=body, headers=headers, content_type=FORMATS[kind])

    app.router.add_get("/bars/{symbol:.+}", readers(database_answers(bars)))


def _json_with_bars(head: Mapping[str, object], bars: str, tail: Mapping[str, object]) -> bytes:
    """`{...head, "bars": <PostgreSQL's JSON array, as it is>, ...tail}` without parsing it."""
    return orjson.dumps(head)[:-1] + b',"bars":' + bars.encode() + b"," + orjson.dumps(tail)[1:]
