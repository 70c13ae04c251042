"""Write bars to PostgreSQL/TimescaleDB: COPY into a staging table, then one merge per batch.

The merge is idempotent on (instrument, interval, ts) and keeps the highest revision, so
replays and duplicates after a crash change nothing. A connection failure raises
TransientError for the caller to retry; rows the database refuses for good are returned with
the reason, after the rest of the batch has been written.
"""

from __future__ import annotations

import logging
import struct
from datetime import UTC, datetime, timedelta
from typing import Final

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from streams.connection import ReusedConnection
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
COPY_SQL: Final = f"copy bars_staging ({_COLUMN_LIST}) from stdin (format binary)"
# Binary COPY types, in COLUMNS order; times go as int microseconds (see _MicrosDumper).
COPY_TYPES: Final = (
    "text",
    "text",
    "timestamptz",
    "int4",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "int8",
    "float8",
    "float8",
    "text",
    "timestamptz",
    "timestamptz",
    "int8",
)
_PG_EPOCH_US: Final = 946_684_800_000_000  # 2000-01-01, PostgreSQL's binary time origin
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Times Python's datetime can hold (years 1 to 9999): readers of the table must be able to.
_MIN_US: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_US: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_pack_micros = struct.Struct(">q").pack


class _MicrosDumper(Dumper):
    """Dump int microseconds since the Unix epoch as a binary timestamptz, without a datetime.

    Registered by OID only, on the COPY cursor: building datetimes and formatting text cost
    more than the whole rest of a batch write.
    """

    format = Format.BINARY
    oid = psycopg.adapters.types["timestamptz"].oid

    def dump(self, obj: int) -> bytes:
        return _pack_micros(obj - _PG_EPOCH_US)


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
    """Convert for the row-by-row fallback, which passes ordinary parameters."""
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
        self._connection = ReusedConnection(url)

    async def close(self) -> None:
        await self._connection.close()

    async def write(self, bars: list[Bar]) -> list[tuple[Bar, str]]:
        """Merge `bars`; return those refused for good with the reason. Raise TransientError."""
        refused: list[tuple[Bar, str]] = []
        writable: list[Bar] = []
        for bar in bars:
            if all(_MIN_US <= t <= _MAX_US for t in (bar.ts_us, bar.ts_event_us, bar.ts_recv_us)):
                writable.append(bar)
            else:  # e.g. nanoseconds read as microseconds
                refused.append((bar, "a time is outside the years 1 to 9999"))
        try:
            conn = await self._connection.get()
            try:
                async with conn.transaction():
                    await conn.execute(STAGING_SQL)
                    cursor = conn.cursor()
                    cursor.adapters.register_dumper(None, _MicrosDumper)
                    async with cursor.copy(COPY_SQL) as copy:
                        copy.set_types(COPY_TYPES)
                        for b in writable:
                            await copy.write_row(
                                (
                                    b.instrument,
                                    b.interval,
                                    b.ts_us,
                                    b.revision,
                                    b.open,
                                    b.high,
                                    b.low,
                                    b.close,
                                    b.volume,
                                    b.vwap,
                                    b.trade_count,
                                    b.buy_volume,
                                    b.sell_volume,
                                    b.source,
                                    b.ts_event_us,
                                    b.ts_recv_us,
                                    b.seq,
                                )
                            )
                    await conn.execute(MERGE_SQL)
            except (psycopg.DataError, psycopg.IntegrityError, ValueError, OverflowError):
                # A value the database (or the binary dumper) refuses: find it row by row.
                refused += await self._write_one_by_one(conn, writable)
        except psycopg.OperationalError as exc:
            await self._connection.close()  # the next write opens a fresh one
            raise TransientError(f"database unavailable: {exc}") from exc
        return refused

    async def _write_one_by_one(
        self, conn: psycopg.AsyncConnection, bars: list[Bar]
    ) -> list[tuple[Bar, str]]:
        """Find the rows the database refuses; write the others."""
        refused = []
        async with conn.transaction():
            for bar in bars:
                row = bar_row(bar)
                try:
                    async with conn.transaction():
                        await conn.execute(INSERT_ONE_SQL, row)
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    refused.append((bar, f"{type(exc).__name__}: {exc}".strip()))
        return refused
