"""`python -m streams bars export`: bars from the database as CSV, the latest revision of each."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import psycopg

from shared.bar_fields import bar_field
from shared.errors import ConfigError

# The bar fields an export has, in order (bar_field refuses a name the schema lacks); the
# instrument's column is called `symbol`.
FIELDS: Final = (
    "instrument",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
)
HEADER: Final = tuple("symbol" if name == "instrument" else bar_field(name).name for name in FIELDS)


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_bars(
    url: str,
    interval: str,
    out: TextIO,
    symbols: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Write bars of `interval` in [start, end) as CSV ordered by symbol and time; return the row count."""
    conditions, params = ["interval = %s"], [interval]
    if symbols:
        conditions.append("instrument = any(%s)")
        params.append(symbols)  # type: ignore[arg-type]
    if start:
        conditions.append("ts >= %s")
        params.append(start)  # type: ignore[arg-type]
    if end:
        conditions.append("ts < %s")
        params.append(end)  # type: ignore[arg-type]
    query = (
        f"select {', '.join(FIELDS)} from bars where {' and '.join(conditions)} order by instrument, ts"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor(name="export") as cursor:
        cursor.execute(query, params)
        for symbol, name, ts, *values in cursor:
            writer.writerow(
                [
                    symbol,
                    name,
                    ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                    *(repr(v) for v in values),
                ]
            )
            rows += 1
    return rows


def export_to_file(url: str, interval: str, path: Path, **kwargs: object) -> int:
    """Export to `path`; raise ConfigError if it cannot be written, remove it if the export fails."""
    try:
        out = path.open("w", newline="")
    except OSError as exc:
        raise ConfigError(f"--out {path}: {exc.strerror or exc}") from exc
    with out:
        try:
            return export_bars(url, interval, out, **kwargs)  # type: ignore[arg-type]
        except BaseException:
            path.unlink(missing_ok=True)  # half a CSV would pass for all of it
            raise
