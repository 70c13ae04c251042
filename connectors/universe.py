"""The symbol universe: which instruments we carry, their tier and their providers in order.

It is written as a CSV file (symbol, exchange, asset_type, tier, active, providers; providers
in order, separated by `|`) and loaded into PostgreSQL as a new version of `symbol_universe`
(`universe_versions` records each load, its file and checksum; loading the same content again
adds no version). The failover connector serves each active instrument from the first usable
provider of its list, from the file or from the latest version in the database.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from shared.errors import ConfigError, TransientError
from shared.symbols import symbol_problem

TIERS: Final = ("T0", "T1", "T2")  # T0 must print every minute in session; T2 may be thin
TABLES: Final = """
create table if not exists universe_versions (
    version     bigserial   primary key,
    loaded_at   timestamptz not null default now(),
    source      text        not null,
    checksum    text        not null,
    instruments integer     not null
);
create table if not exists symbol_universe (
    version    bigint  not null references universe_versions,
    symbol     text    not null,
    exchange   text    not null,
    asset_type text    not null,
    tier       text    not null check (tier in ('T0', 'T1', 'T2')),
    active     boolean not null,
    providers  text[]  not null,
    primary key (version, symbol)
)
"""


@dataclass(frozen=True, slots=True)
class UniverseRow:
    symbol: str
    exchange: str
    asset_type: str
    tier: str
    active: bool
    providers: tuple[str, ...]


Universe = dict[str, list[str]]  # active symbol -> its providers, in order


def parse_universe(text: str, where: str) -> list[UniverseRow]:
    """The rows of a universe CSV; raise ConfigError naming `where` and the line."""
    rows = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        symbol = (row.get("symbol") or "").strip()
        providers = tuple(p.strip() for p in (row.get("providers") or "").split("|") if p.strip())
        tier = (row.get("tier") or "T2").strip().upper()
        if not symbol or not providers:
            raise ConfigError(f"{where} line {number}: symbol and providers are required")
        if problem := symbol_problem(symbol):
            raise ConfigError(f"{where} line {number}: {problem}")
        if tier not in TIERS:
            raise ConfigError(f"{where} line {number}: tier {tier!r} is not one of T0, T1, T2")
        active = (row.get("active") or "true").strip().lower() not in ("false", "0", "no")
        exchange = (row.get("exchange") or "").strip()
        asset_type = (row.get("asset_type") or "").strip()
        rows.append(UniverseRow(symbol, exchange, asset_type, tier, active, providers))
    return rows


def read_universe_file(path: Path, where: str) -> list[UniverseRow]:
    try:
        return parse_universe(path.read_text(), where)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}") from exc


def active(rows: list[UniverseRow]) -> Universe:
    return {row.symbol: list(row.providers) for row in rows if row.active}


def store_universe(url: str, rows: list[UniverseRow], source: str) -> tuple[int, bool]:
    """Load `rows` as a new version unless the latest has the same content; return the
    version and whether it is new. Raise TransientError if the database is down."""
    checksum = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute(TABLES)
            latest = conn.execute(
                "select version, checksum from universe_versions order by version desc limit 1"
            ).fetchone()
            if latest is not None and latest[1] == checksum:
                return int(latest[0]), False
            (version,) = conn.execute(  # type: ignore[misc]
                "insert into universe_versions (source, checksum, instruments)"
                " values (%s, %s, %s) returning version",
                (source, checksum, len(rows)),
            ).fetchone()
            with conn.cursor() as cursor:
                cursor.executemany(
                    "insert into symbol_universe (version, symbol, exchange, asset_type, tier,"
                    " active, providers) values (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            version,
                            r.symbol,
                            r.exchange,
                            r.asset_type,
                            r.tier,
                            r.active,
                            list(r.providers),
                        )
                        for r in rows
                    ],
                )
        return int(version), True
    except psycopg.OperationalError as exc:
        raise TransientError(f"cannot store the universe: {exc}") from exc


def latest_universe(url: str) -> tuple[int, Universe]:
    """The latest version's active instruments; raise ConfigError if none was loaded."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute(TABLES)
            rows = conn.execute(
                "select version, symbol, providers from symbol_universe where active and version ="
                " (select max(version) from universe_versions) order by symbol"
            ).fetchall()
    except psycopg.OperationalError as exc:
        raise TransientError(f"cannot read the universe: {exc}") from exc
    if not rows:
        raise ConfigError(
            "no universe in the database: load one with `python -m connectors universe load FILE`"
        )
    return int(rows[0][0]), {symbol: list(providers) for _, symbol, providers in rows}
