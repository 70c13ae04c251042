"""Create our tables: TimescaleDB hypertables when the extension is available, plain tables otherwise."""

from __future__ import annotations

import logging
from typing import Final

import psycopg

log = logging.getLogger(__name__)

BARS_TABLE: Final = """
create table if not exists bars (
    instrument  text             not null,
    interval    text             not null,
    ts          timestamptz      not null,
    revision    integer          not null,
    open        double precision not null,
    high        double precision not null,
    low         double precision not null,
    close       double precision not null,
    volume      double precision not null,
    vwap        double precision not null,
    trade_count bigint           not null,
    buy_volume  double precision not null default 0,
    sell_volume double precision not null default 0,
    source      text             not null,
    ts_event    timestamptz      not null,
    ts_recv     timestamptz      not null,
    primary key (instrument, interval, ts)
)
"""
PLAIN_INDEXES: Final = ("create index if not exists bars_interval_ts on bars (interval, ts desc)",)


def timescale_available(conn: psycopg.Connection) -> bool:
    """Return True if the TimescaleDB extension is installed or can be created in this database."""
    row = conn.execute(
        "select 1 from pg_available_extensions where name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(url: str) -> bool:
    """Create the tables (idempotent); return True if they are TimescaleDB hypertables."""
    with psycopg.connect(url, autocommit=True) as conn:
        timescale = timescale_available(conn)
        if timescale:
            conn.execute("create extension if not exists timescaledb")
        conn.execute(BARS_TABLE)
        if timescale:
            conn.execute(
                "select create_hypertable('bars', by_range('ts', interval '1 day'), if_not_exists => true)"
            )
        else:
            for statement in PLAIN_INDEXES:
                conn.execute(statement)
    log.info("tables ready (%s)", "TimescaleDB" if timescale else "plain PostgreSQL")
    return timescale
