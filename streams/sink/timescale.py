"""Write bars to PostgreSQL/TimescaleDB: COPY into a staging table, then one merge per batch.

The merge is idempotent on (instrument, interval, ts) and keeps the highest revision, so
replays and duplicates after a crash change nothing. A connection failure raises
TransientError for the caller to retry; rows the database refuses for good are returned with
the reason, after the rest of the batch has been written.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

import psycopg

from streams.errors import TransientError
from streams.models import Bar

log = logging.getLogger(__name__)

COLUMNS: Final = (
    "instrument",
    "interval",
    "ts",
    "revision",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
    "buy_volume",
    "sell_volume",
    "source",
    "ts_event",
    "ts_recv",
    "seq",
)
_COLUMN_LIST: Final = ", ".join(COLUMNS)
STAGING_SQL: Final = (
    "create temp table if not exists bars_staging (like bars) on commit delete rows"
)
COPY_SQL: Final = f"copy bars_staging ({_COLUMN_LIST}) from stdin"
MERGE_SQL: Final = f"""
insert into bars ({_COLUMN_LIST})
select distinct on (instrument, interval, ts) {_COLUMN_LIST}
from bars_staging order by instrument, interval, ts, revision desc
on conflict (instrument, interval, ts) do update set
    {", ".join(f"{c} = excluded.{c}" for c in COLUMNS[3:])}
where excluded.revision >= bars.revision
"""
INSERT_ONE_SQL: Final = (
    f"insert into bars ({_COLUMN_LIST}) values ({', '.join(['%s'] * len(COLUMNS))})"
    f" on conflict (instrument, interval, ts) do update set"
    f" {', '.join(f'{c} = excluded.{c}' for c in COLUMNS[3:])} where excluded.revision >= bars.revision"
)


def _micros_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def bar_row(bar: Bar) -> tuple[object, ...]:
    return (
        bar.instrument,
        bar.interval,
        _micros_to_datetime(bar.ts_us),
        bar.revision,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.vwap,
        bar.trade_count,
        bar.buy_volume,
        bar.sell_volume,
        bar.source,
        _micros_to_datetime(bar.ts_event_us),
        _micros_to_datetime(bar.ts_recv_us),
        bar.seq,
    )


class BarWriter:
    """One connection, reopened after failures; `write` merges a batch of bars."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=5)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def write(self, bars: list[Bar]) -> list[tuple[Bar, str]]:
        """Merge `bars`; return those refused for good with the reason. Raise TransientError."""
        refused: list[tuple[Bar, str]] = []
        writable: list[Bar] = []
        rows: list[tuple[object, ...]] = []
        for bar in bars:
            try:
                rows.append(bar_row(bar))
                writable.append(bar)
            except (ValueError, OverflowError) as exc:  # e.g. a time beyond year 9999
                refused.append((bar, f"cannot be stored: {exc}"))
        try:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    await conn.execute(STAGING_SQL)
                    async with conn.cursor().copy(COPY_SQL) as copy:
                        for row in rows:
                            await copy.write_row(row)
                    await conn.execute(MERGE_SQL)
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.CheckViolation):
                refused += await self._write_one_by_one(conn, writable, rows)
        except psycopg.OperationalError as exc:
            self._conn = None
            raise TransientError(f"database unavailable: {exc}") from exc
        return refused

    async def _write_one_by_one(
        self, conn: psycopg.AsyncConnection, bars: list[Bar], rows: list[tuple[object, ...]]
    ) -> list[tuple[Bar, str]]:
        """Find the rows the database refuses; write the others."""
        refused = []
        async with conn.transaction():
            for bar, row in zip(bars, rows, strict=True):
                try:
                    async with conn.transaction():
                        await conn.execute(INSERT_ONE_SQL, row)
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    refused.append((bar, f"{type(exc).__name__}: {exc}".strip()))
        return refused
