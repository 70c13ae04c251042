"""`GET /stocks/{symbol}/price`: the latest trade and quote of an instrument, with their
provider and age, from the tables `track_prices` keeps (`latest_trades`, `latest_quotes`).

Takes an API key (`X-API-Key`, `Authorization: Bearer` or `?api_key=`): 401 without a known
one. 400 for a symbol we would never publish, 404 for one nothing was heard of, 503 while the
database cannot answer. `age_s` is the wall clock now minus the event time: a quiet market's
price is old, and says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.read_pool import database_answers
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import micros_of, rfc3339

log = logging.getLogger(__name__)

TRADE_SQL: Final = (
    "select price, size, ts_event, ts_recv, source, provider from latest_trades where symbol = %s"
)
QUOTE_SQL: Final = (
    "select bid_price, bid_size, ask_price, ask_size, ts_event, ts_recv, source, provider"
    " from latest_quotes where symbol = %s"
)
TRADE_FIELDS: Final = ("price", "size", "ts_event", "ts_recv", "source", "provider")
QUOTE_FIELDS: Final = (
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "ts_event",
    "ts_recv",
    "source",
    "provider",
)


def described(row: tuple[Any, ...] | None, fields: tuple[str, ...], now_us: int) -> object:
    """A row as the JSON clients get: times in RFC 3339 and microseconds, and the age."""
    if row is None:
        return None
    values = dict(zip(fields, row, strict=True))
    event, recv = values.pop("ts_event"), values.pop("ts_recv")
    return {
        **values,
        "ts": rfc3339(micros_of(event)),
        "ts_event_us": micros_of(event),
        "ts_recv_us": micros_of(recv),
        "age_s": round((now_us - micros_of(event)) / 1e6, 3),
    }


def add_price_routes(app: web.Application, pool: AsyncConnectionPool, readers: KeyGuard) -> None:
    async def price(request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        if problem := symbol_problem(symbol):
            return json_response({"error": problem}, 400)
        async with pool.connection() as db:
            trade = await (await db.execute(TRADE_SQL, (symbol,))).fetchone()
            quote = await (await db.execute(QUOTE_SQL, (symbol,))).fetchone()
        if trade is None and quote is None:
            return json_response({"error": f"no trade or quote of {symbol} yet"}, 404)
        now_us = time.time_ns() // 1000
        return json_response(
            {
                "symbol": symbol,
                "trade": described(trade, TRADE_FIELDS, now_us),
                "quote": described(quote, QUOTE_FIELDS, now_us),
            }
        )

    app.router.add_get("/stocks/{symbol}/price", readers(database_answers(price)))
