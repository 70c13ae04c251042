"""`GET /fundamentals/{symbol}`: an issuer's financial statements (sink_fundamentals'
`fundamentals` table, from FMP), newest fiscal date first, for dashboards that must answer fast.

`?statement=income_statement|balance_sheet|cash_flow|ratios|key_metrics&period=annual|quarter|
snapshot&limit=` (limit 1 to 200, default 20). Takes a read API key; 404 when nothing of the
symbol is stored.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.params import BadRequestError, parse_limit
from gateways.read_pool import database_answers
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import micros_of, rfc3339

STATEMENTS_SQL: Final = """
select statement, period, fiscal_date, provider, body, ts_event, ts_recv
from fundamentals
where symbol = %(symbol)s
  and (%(statement)s::text is null or statement = %(statement)s)
  and (%(period)s::text is null or period = %(period)s)
order by fiscal_date desc, statement, period, provider
limit %(limit)s
"""


def add_fundamentals_routes(
    app: web.Application, pool: AsyncConnectionPool, readers: KeyGuard
) -> None:
    async def fundamentals(request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        try:
            if problem := symbol_problem(symbol):
                raise BadRequestError(problem)
            params = {
                "symbol": symbol,
                "statement": request.query.get("statement"),
                "period": request.query.get("period"),
                "limit": parse_limit(request.query.get("limit"), 20, 200),
            }
        except BadRequestError as exc:
            return json_response({"error": str(exc)}, 400)
        async with pool.connection() as db:
            rows = await (await db.execute(STATEMENTS_SQL, params)).fetchall()
        if not rows:
            return json_response({"error": f"no fundamentals of {symbol} stored"}, 404)
        statements = [
            {
                "statement": statement,
                "period": period,
                "fiscal_date": fiscal_date.isoformat(),
                "provider": provider,
                "body": body,
                "ts_event": rfc3339(micros_of(ts_event)),
                "ts_recv": rfc3339(micros_of(ts_recv)),
            }
            for statement, period, fiscal_date, provider, body, ts_event, ts_recv in rows
        ]
        return json_response({"symbol": symbol, "statements": statements})

    app.router.add_get("/fundamentals/{symbol}", readers(database_answers(fundamentals)))
