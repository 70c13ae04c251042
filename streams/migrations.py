"""Create our tables and policies: TimescaleDB when the extension is available, plain PostgreSQL otherwise.

Both paths give the same tables and the same `bars_1w` weekly bars. With TimescaleDB, `bars` is a
hypertable (1-day chunks) compressed after `compress_after_days`, per-interval retention runs as
a TimescaleDB job, and `bars_1w` is a continuous aggregate over the 1d bars. On plain PostgreSQL
`bars_1w` is a view and retention runs with `python -m streams db retention` (from cron). The
gap and backfill tables and the `candles_intraday` view are the same on both paths.
"""

from __future__ import annotations

import logging
from typing import Final

import orjson
import psycopg
from psycopg import sql

from shared.bar_fields import BAR_FIELDS, BAR_KEY, BarField
from shared.errors import ConfigError
from shared.intervals import parse_interval

log = logging.getLogger(__name__)


def _column(field: BarField) -> str:
    """The column definition of a bar field: not null, with the field's Avro default if any."""
    default = "" if field.default is None else f" default {sql.Literal(field.default).as_string()}"
    return f"{field.name} {field.pg_type} not null{default}"


BARS_TABLE: Final = (
    "create table if not exists bars ("
    + ", ".join(_column(f) for f in BAR_FIELDS)
    + f", primary key ({', '.join(BAR_KEY)}))"
)

# The aggregate_bars agent's checkpoints (streams.bars.checkpoints). Two statements:
# checkpoints from before topic ids gain the column, empty.
CHECKPOINTS_TABLE: Final = """
create table if not exists bar_checkpoints (
    app_id     text        not null,
    topic      text        not null,
    partition  integer     not null,
    "offset"   bigint      not null,
    layout     text        not null,
    state      bytea       not null,
    updated_at timestamptz not null default now(),
    topic_id   text,
    primary key (app_id, topic, partition)
);
alter table bar_checkpoints add column if not exists topic_id text
"""
# Fields added to the schema later (those with a default) are added to tables made before them.
BARS_ADDED_COLUMNS: Final = tuple(
    f"alter table bars add column if not exists {_column(f)}"
    for f in BAR_FIELDS
    if f.default is not None
)
BARS_BY_TIME: Final = "create index if not exists bars_interval_ts on bars (interval, ts desc)"
# Financial statements (md.fundamentals.v1, sink_fundamentals): typed keys, the body as JSONB.
FUNDAMENTALS_TABLE: Final = """
create table if not exists fundamentals (
    symbol      text        not null,
    statement   text        not null,
    period      text        not null,
    fiscal_date date        not null,
    provider    text        not null,
    body        jsonb       not null,
    ts_event    timestamptz not null,
    ts_recv     timestamptz not null,
    primary key (symbol, statement, period, fiscal_date, provider)
)
"""
# The latest trade and quote of each instrument (track_prices), for GET /stocks/{symbol}/price.
LATEST_TRADES_TABLE: Final = """
create table if not exists latest_trades (
    symbol   text             primary key,
    price    double precision not null,
    size     double precision not null,
    ts_event timestamptz      not null,
    ts_recv  timestamptz      not null,
    source   text             not null,
    provider text             not null
)
"""
LATEST_QUOTES_TABLE: Final = """
create table if not exists latest_quotes (
    symbol    text             primary key,
    bid_price double precision not null,
    bid_size  double precision not null,
    ask_price double precision not null,
    ask_size  double precision not null,
    ts_event  timestamptz      not null,
    ts_recv   timestamptz      not null,
    source    text             not null,
    provider  text             not null
)
"""
# Gap detection and backfill (streams.backfill.queue). A gap is its instrument, interval and
# span: detected again, it is the same row. Status: open -> queued -> repaired | failed.
GAPS_TABLE: Final = """
create table if not exists gaps (
    id          bigserial   primary key,
    instrument  text        not null,
    interval    text        not null,
    start_ts    timestamptz not null,
    end_ts      timestamptz not null,
    cause       text        not null,
    tier        text,
    provider    text,
    detail      text        not null default '',
    detected_at timestamptz not null,
    status      text        not null default 'open'
                check (status in ('open', 'queued', 'repaired', 'failed')),
    updated_at  timestamptz not null default now(),
    check (end_ts > start_ts),
    unique (instrument, interval, start_ts, end_ts)
)
"""
# Jobs are claimed with `for update skip locked` in (priority, created_at) order, lower priority
# first (the tier: T0 = 0); `errors` holds every attempt's error, for the dead-letter row. A span
# has at most one open (queued or running) job: enqueueing it again returns that job.
BACKFILL_JOBS_TABLE: Final = """
create table if not exists backfill_jobs (
    id              bigserial   primary key,
    gap_id          bigint      references gaps on delete set null,
    instrument      text        not null,
    interval        text        not null,
    start_ts        timestamptz not null,
    end_ts          timestamptz not null,
    priority        smallint    not null,
    provider        text,
    status          text        not null default 'queued'
                    check (status in ('queued', 'running', 'done', 'failed')),
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_by      text,
    claimed_at      timestamptz,
    last_error      text,
    errors          jsonb       not null default '[]',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check (end_ts > start_ts)
);
create index if not exists backfill_jobs_claim on backfill_jobs (priority, created_at, id)
    where status = 'queued';
create unique index if not exists backfill_jobs_open_span
    on backfill_jobs (instrument, interval, start_ts, end_ts) where status in ('queued', 'running');
create index if not exists backfill_jobs_running on backfill_jobs (claimed_at)
    where status = 'running';
create index if not exists backfill_jobs_gap on backfill_jobs (gap_id)
"""
BACKFILL_DEAD_LETTERS_TABLE: Final = """
create table if not exists backfill_dead_letters (
    id              bigserial   primary key,
    job_id          bigint      references backfill_jobs on delete set null,
    gap_id          bigint      references gaps on delete set null,
    instrument      text        not null,
    interval        text        not null,
    start_ts        timestamptz not null,
    end_ts          timestamptz not null,
    priority        smallint    not null,
    provider        text,
    attempts        integer     not null,
    errors          jsonb       not null,
    failed_at       timestamptz not null default now(),
    requeued_at     timestamptz,
    requeued_job_id bigint      references backfill_jobs on delete set null
)
"""
# Every dead letter of md.dlq.v1 (store_dead_letters), for GET /ops/dlq and its replays. The
# digest of the Kafka message makes a redelivered dead letter the same row.
DEAD_LETTERS_TABLE: Final = """
create table if not exists dead_letters (
    id               bigserial   primary key,
    digest           bytea       not null unique,
    component        text        not null,
    reason           text        not null,
    detail           text        not null,
    source           text        not null,
    payload          bytea       not null,
    key              bytea,
    source_partition integer,
    source_offset    bigint,
    line_number      bigint,
    ts_event         timestamptz not null,
    ts_recv          timestamptz not null,
    replayed_at      timestamptz,
    replayed_to      text
);
create index if not exists dead_letters_by_reason on dead_letters (component, reason, id desc)
"""
# The operators' runbook name for bars: every column of `bars`, `instrument` as `symbol`. A
# view over one table with plain column references is auto-updatable in PostgreSQL (a hypertable
# is such a table too), so `delete from candles_intraday where ...` deletes from `bars`.
CANDLES_INTRADAY_VIEW: Final = (
    "create or replace view candles_intraday as select "
    + ", ".join("instrument as symbol" if f.name == "instrument" else f.name for f in BAR_FIELDS)
    + " from bars"
)
# When each instrument was halted (md.statuses.v1, track_halts): its silence then is no gap.
INSTRUMENT_HALTS_TABLE: Final = """
create table if not exists instrument_halts (
    instrument text        not null,
    since      timestamptz not null,
    until      timestamptz,
    status     text        not null,
    reason     text        not null,
    primary key (instrument, since)
)
"""
# Where each feed was blind (md.feed_events.v1, detect_gaps): a gap inside one is a disconnect,
# or a provider error where the feed went down for good (kind 'down'). Two statements: tables
# from before the kind gain the column.
FEED_OUTAGES_TABLE: Final = """
create table if not exists feed_outages (
    source      text        not null,
    blind_since timestamptz not null,
    until       timestamptz,
    detail      text        not null,
    kind        text        not null default 'disconnected',
    primary key (source, blind_since)
);
alter table feed_outages add column if not exists kind text not null default 'disconnected';
update feed_outages set kind = 'down' where kind <> 'down' and detail like 'down: %'
"""
# Prediction markets (streams.markets, streams.arbitrage). `pm_listings` is the matcher's
# durable copy of md.listings.v1: its indexes are rebuilt from it on start and by
# `python -m streams markets rebuild`; `body` is the framed Avro Listing, the other columns are
# for queries. A pair of `market_matches` is Kalshi's listing key then Polymarket's; a person's
# decision (decided_by = 'person') is never overwritten by the matcher, whose own verdict stays
# in auto_decision. `published` is false until the pair's Match is on md.matches.v1 (an outbox,
# so that the HTTP API's decisions are published by the agent).
PM_LISTINGS_TABLE: Final = """
create table if not exists pm_listings (
    key        text        primary key,
    venue      text        not null,
    market_id  text        not null,
    title      text        not null,
    outcomes   jsonb       not null,
    status     text        not null,
    body       bytea       not null,
    ts_event   timestamptz not null,
    updated_at timestamptz not null default now()
)
"""
MARKET_MATCHES_TABLE: Final = """
create table if not exists market_matches (
    id            bigserial        primary key,
    a_key         text             not null,
    b_key         text             not null,
    score         double precision not null,
    rank          integer          not null,
    decision      text             not null check (decision in ('match', 'review', 'no_match')),
    auto_decision text             not null check (auto_decision in ('match', 'review', 'no_match')),
    decided_by    text             not null default 'auto' check (decided_by in ('auto', 'person')),
    inverted      boolean          not null default false,
    evidence      jsonb            not null,
    warnings      jsonb            not null default '[]',
    published     boolean          not null default false,
    created_at    timestamptz      not null default now(),
    updated_at    timestamptz      not null default now(),
    unique (a_key, b_key)
);
create index if not exists market_matches_b on market_matches (b_key);
create index if not exists market_matches_decision on market_matches (decision);
create index if not exists market_matches_unpublished on market_matches (id) where not published
"""
# Arbitrage flagged on matched pairs: at most one open row per pair and direction.
ARBITRAGE_TABLE: Final = """
create table if not exists arbitrage (
    id          bigserial        primary key,
    pair        text             not null,
    direction   text             not null check (direction in ('yes_a_no_b', 'no_a_yes_b')),
    yes_venue   text             not null,
    yes_market  text             not null,
    yes_outcome text             not null,
    yes_price   double precision not null,
    yes_size    double precision,
    yes_fee     double precision not null,
    no_venue    text             not null,
    no_market   text             not null,
    no_outcome  text             not null,
    no_price    double precision not null,
    no_size     double precision,
    no_fee      double precision not null,
    contracts   double precision not null,
    cost        double precision not null,
    edge        double precision not null,
    opened_at   timestamptz      not null,
    observed_at timestamptz      not null,
    closed_at   timestamptz,
    lifetime_s  double precision
);
create unique index if not exists arbitrage_open on arbitrage (pair, direction)
    where closed_at is null
"""
RETENTION_SQL: Final = (
    "delete from bars where interval = %s and ts < now() - make_interval(days => %s)"
)
WEEKLY_COLUMNS: Final = """
    instrument,
    {bucket} as ts,
    {first_open} as open,
    max(high) as high,
    min(low) as low,
    {last_close} as close,
    sum(volume) as volume,
    sum(vwap * volume) / nullif(sum(volume), 0) as vwap,
    sum(trade_count) as trade_count
from bars where interval = '1d'
group by instrument, {bucket}
"""
PLAIN_WEEKLY: Final = "create or replace view bars_1w as select" + WEEKLY_COLUMNS.format(
    bucket="date_trunc('week', ts, 'UTC')",
    first_open="(array_agg(open order by ts))[1]",
    last_close="(array_agg(close order by ts desc))[1]",
)
TIMESCALE_WEEKLY: Final = (
    "create materialized view if not exists bars_1w with (timescaledb.continuous) as select"
    + WEEKLY_COLUMNS.format(
        bucket="time_bucket('1 week', ts)",
        first_open="first(open, ts)",
        last_close="last(close, ts)",
    )
    + " with no data"
)
TIMESCALE_RETENTION_PROC: Final = """
create or replace procedure marketstream_bars_retention(job_id integer, config jsonb)
language plpgsql as $$
declare
    policy record;
begin
    for policy in select key, value::integer as days from jsonb_each_text(config) loop
        delete from bars where interval = policy.key and ts < now() - make_interval(days => policy.days);
    end loop;
end
$$
"""


def parse_retention(text: str) -> dict[str, int]:
    """Parse `1m=365,1s=7` into {interval: days}; raise ConfigError naming MS_SINK_RETENTION."""
    policy: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        interval, _, days = item.partition("=")
        try:
            parse_interval(interval)
            policy[interval.strip()] = int(days)
        except ValueError:
            raise ConfigError(f"MS_SINK_RETENTION: {item!r} is not <interval>=<days>") from None
        if policy[interval.strip()] < 1:
            raise ConfigError(f"MS_SINK_RETENTION: {item!r} must keep at least one day")
    return policy


def timescale_available(conn: psycopg.Connection) -> bool:
    """Return True if the TimescaleDB extension can be used in this database."""
    row = conn.execute(
        "select 1 from pg_available_extensions where name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(url: str, *, compress_after_days: int = 14, retention: str = "1m=365") -> bool:
    """Create tables, views and policies (idempotent); return True on the TimescaleDB path."""
    policy = parse_retention(retention)
    with psycopg.connect(url, autocommit=True) as conn:
        timescale = timescale_available(conn)
        conn.execute(BARS_TABLE)
        for added in BARS_ADDED_COLUMNS:
            conn.execute(added)
        conn.execute(BARS_BY_TIME)
        conn.execute(CHECKPOINTS_TABLE)
        conn.execute(FUNDAMENTALS_TABLE)
        conn.execute(LATEST_TRADES_TABLE)
        conn.execute(LATEST_QUOTES_TABLE)
        conn.execute(FEED_OUTAGES_TABLE)
        conn.execute(INSTRUMENT_HALTS_TABLE)
        conn.execute(GAPS_TABLE)
        conn.execute(BACKFILL_JOBS_TABLE)
        conn.execute(BACKFILL_DEAD_LETTERS_TABLE)
        conn.execute(PM_LISTINGS_TABLE)
        conn.execute(MARKET_MATCHES_TABLE)
        conn.execute(ARBITRAGE_TABLE)
        conn.execute(DEAD_LETTERS_TABLE)
        if timescale:
            _timescale(conn, compress_after_days, policy)
        else:
            conn.execute(PLAIN_WEEKLY)
        conn.execute(CANDLES_INTRADAY_VIEW)  # after the hypertable, so as not to stand in its way
    log.info("tables ready (%s)", "TimescaleDB" if timescale else "plain PostgreSQL")
    return timescale


def _timescale(conn: psycopg.Connection, compress_after_days: int, policy: dict[str, int]) -> None:
    conn.execute("create extension if not exists timescaledb")
    conn.execute(
        "select create_hypertable('bars', 'ts', chunk_time_interval => interval '1 day',"
        " if_not_exists => true, migrate_data => true)"
    )
    conn.execute(
        "alter table bars set (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'instrument, interval', timescaledb.compress_orderby = 'ts desc')"
    )
    conn.execute("select remove_compression_policy('bars', if_exists => true)")
    conn.execute(
        "select add_compression_policy('bars', make_interval(days => %s))", (compress_after_days,)
    )
    conn.execute(TIMESCALE_RETENTION_PROC)
    conn.execute(
        "select delete_job(job_id) from timescaledb_information.jobs"
        " where proc_name = 'marketstream_bars_retention'"
    )
    conn.execute(
        "select add_job('marketstream_bars_retention', interval '1 day', config => %s::jsonb)",
        (orjson.dumps(policy).decode(),),
    )
    conn.execute(TIMESCALE_WEEKLY)
    conn.execute(
        "select add_continuous_aggregate_policy('bars_1w', start_offset => interval '8 weeks',"
        " end_offset => interval '1 day', schedule_interval => interval '1 hour', if_not_exists => true)"
    )


def apply_retention(url: str, retention: str) -> dict[str, int]:
    """Delete bars older than their interval's retention; return rows deleted per interval."""
    deleted = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for interval, days in parse_retention(retention).items():
            deleted[interval] = conn.execute(RETENTION_SQL, (interval, days)).rowcount
    return deleted
