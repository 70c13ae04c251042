"""The read_api scenario's peer: `GET /bars/{symbol}` (JSON) as a hand-written endpoint
serves it (rows into Python dicts, orjson), and `?offset=` pages (OFFSET pagination), for
`python -m benchmarks read_api` to measure beside ours.

`python -m benchmarks.read_api_peer --port N DATABASE_URL` serves it until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final
from urllib.parse import urlencode

import orjson
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from gateways.bars_api import JSON_SQL, MAX_LIMIT, RANGE_SQL
from gateways.params import parse_limit, parse_time
from shared.times import MAX_US, MIN_US, micros_of, time_of

NAIVE_SQL: Final = (
    "select ts, revision, open, high, low, close, volume, vwap, trade_count, buy_volume,"
    " sell_volume, source, ts_event, ts_recv from bars where instrument = %s and interval = %s"
    " and ts >= %s and ts < %s order by ts limit %s"
)
# Our JSON of a page, its rows found by OFFSET instead of by a range of the key.
OFFSET_SQL: Final = JSON_SQL.replace(
    RANGE_SQL,
    "from (select * from bars where instrument = %(symbol)s and interval = %(interval)s"
    " order by ts offset %(offset)s limit %(limit)s) as bars",
)
assert OFFSET_SQL != JSON_SQL, "gateways.bars_api.JSON_SQL no longer reads RANGE_SQL"


def naive_app(database_url: str) -> web.Application:
    """`GET /bars/{symbol}` (JSON only) as a hand-written endpoint would serve it, plus
    `?offset=` pages; `/health/live`."""
    pool = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        open=False,
        kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
    )

    async def bars(request: web.Request) -> web.Response:
        symbol, query = request.match_info["symbol"], request.query
        interval = query.get("interval", "1m")
        try:
            limit = parse_limit(query.get("limit"), 1_000, MAX_LIMIT)
            if "offset" in query:
                return await offset_page(symbol, interval, int(query["offset"]), limit)
            start = parse_time(query["start"], "start") if "start" in query else MIN_US
            end = parse_time(query["end"], "end") if "end" in query else MAX_US
            start = max(start, int(query.get("cursor", MIN_US)))
        except ValueError as exc:  # BadRequestError is one
            return web.json_response({"error": str(exc)}, status=400)
        async with pool.connection() as db, db.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                NAIVE_SQL, (symbol, interval, time_of(start), time_of(end), limit + 1)
            )
            rows = await cur.fetchall()
        for row in rows:
            row["ts_us"] = micros_of(row["ts"])
            row["ts_event_us"] = micros_of(row.pop("ts_event"))
            row["ts_recv_us"] = micros_of(row.pop("ts_recv"))
        cursor = str(rows.pop()["ts_us"]) if len(rows) > limit else None
        link = f"{request.path}?{urlencode({**query, 'cursor': cursor})}" if cursor else None
        body = {
            "symbol": symbol,
            "interval": interval,
            "bars": rows,
            "next_cursor": cursor,
            "next": link,
        }
        headers = {"Link": f'<{link}>; rel="next"', "X-Next-Cursor": str(cursor)} if link else {}
        return web.Response(
            body=orjson.dumps(body, option=orjson.OPT_UTC_Z),
            content_type="application/json",
            headers=headers,
        )

    async def offset_page(symbol: str, interval: str, offset: int, limit: int) -> web.Response:
        params = {"symbol": symbol, "interval": interval, "offset": offset, "limit": limit}
        async with pool.connection() as db:
            row = await (await db.execute(OFFSET_SQL, params)).fetchone()
        head = orjson.dumps({"symbol": symbol, "interval": interval, "offset": offset})
        page = (row[0] if row else "[]").encode()
        return web.Response(
            body=head[:-1] + b',"bars":' + page + b"}", content_type="application/json"
        )

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def open_pool(_: web.Application) -> None:
        await pool.open(wait=True)

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    app = web.Application()
    app.router.add_get("/bars/{symbol}", bars)
    app.router.add_get("/health/live", live)
    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    return app


def serve_naive(argv: list[str]) -> int:
    """Serve the peer on 127.0.0.1:--port until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.read_api_peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("database_url")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    web.run_app(
        naive_app(args.database_url), host="127.0.0.1", port=args.port, access_log=None, print=None
    )
    return 0


if __name__ == "__main__":
    sys.exit(serve_naive(sys.argv[1:]))
