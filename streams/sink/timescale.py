"""Write bars to PostgreSQL/TimescaleDB with binary COPY, idempotently: the channel's later
message wins (the highest seq, then the highest revision).

The COPY stream is built from the batches' numpy columns (streams/sink/copy.py) and holds one
row per key, already chosen as the highest (seq, revision) (the later on a tie). First
revisions are COPYed straight into `bars`, in a savepoint; the other rows, and first revisions
already there (a replay, a backfill), go into a staging table and one `insert ... on conflict
do update where (seq, revision) higher` merge. So replays and duplicates after a crash change
nothing. A connection failure raises TransientError for the caller to retry; rows the database
refuses for good are returned with the reason, after the rest of the batch has been written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import psycopg
from numpy.typing import NDArray

from shared.errors import TransientError
from shared.models import Bar, BarBatch
from shared.postgres import ReusedConnection
from streams.sink.copy import (
    ATTRIBUTE,
    BAR_COLUMNS,
    COLUMNS,
    COPY_COLUMNS,
    KEY,
    REVISION,
    SEQ,
    BarRows,
    EncodedNames,
    encode_copy,
    encode_names,
    refusals,
    winners,
)

log = logging.getLogger(__name__)

_COLUMN_LIST: Final = ", ".join(COLUMNS)
# Created once per connection (committed, so that a failed batch does not drop it); `like`
# copies no index, and a temp table writes no WAL.
STAGING_SQL: Final = (
    "create temp table if not exists bars_staging (like bars) on commit delete rows"
)
COPY_SQL: Final = f"copy bars_staging ({', '.join(COPY_COLUMNS)}) from stdin (format binary)"
INSERT_COPY_SQL: Final = f"copy bars ({', '.join(COPY_COLUMNS)}) from stdin (format binary)"
MERGE_SQL: Final = (
    f"insert into bars ({_COLUMN_LIST}) select {_COLUMN_LIST} from bars_staging"
    f" on conflict ({', '.join(KEY)}) do update set"
    f" {', '.join(f'{c} = excluded.{c}' for c in COLUMNS if c not in KEY)}"
    f" where (excluded.{SEQ}, excluded.{REVISION}) >= (bars.{SEQ}, bars.{REVISION})"
)
# Bar fields held as int64 in BarRows: a Python int beyond that cannot be written at all.
_INT_FIELDS: Final = tuple(ATTRIBUTE[c] for c, t in BAR_COLUMNS if t not in ("text", "float8"))


class BarWriter:
    """One connection, reopened after failures; `write_batches` merges bars in one transaction."""

    def __init__(self, url: str) -> None:
        self._connection = ReusedConnection(url)
        self._staged: psycopg.AsyncConnection[Any] | None = None  # has bars_staging

    async def close(self) -> None:
        await self._connection.close()
        self._staged = None

    async def write_batches(self, batches: Sequence[BarBatch]) -> list[tuple[Bar, str]]:
        """Merge the bars of `batches`; return those refused for good with the reason.

        Raise TransientError when the database cannot be reached.
        """
        rows = BarRows.from_batches(batches)
        return [(rows.bar(row), reason) for row, reason in await self._write(rows)]

    async def write(self, bars: Sequence[Bar]) -> list[tuple[Bar, str]]:
        """Merge Bar objects, as `write_batches` does, for callers that hold bars one by one."""
        refused: list[tuple[int, str]] = []
        fits: list[int] = []
        for i, bar in enumerate(bars):
            beyond = [f for f in _INT_FIELDS if not -(2**63) <= getattr(bar, f) < 2**63]
            if beyond:
                refused.append((i, f"{beyond[0]} is out of range for int8"))
            else:
                fits.append(i)
        rows = BarRows.from_bars([bars[i] for i in fits])
        refused += [(fits[row], reason) for row, reason in await self._write(rows)]
        return [(bars[i], reason) for i, reason in sorted(refused)]

    async def _write(self, rows: BarRows) -> list[tuple[int, str]]:
        """Merge `rows`; return (row, reason) for those refused, in row order."""
        if not len(rows):
            return []
        try:
            conn = await self._connection.get()
            names = encode_names(rows, conn.info.encoding)
            refused = refusals(rows, names)
            writable = np.ones(len(rows), np.bool_)
            writable[[row for row, _ in refused]] = False
            merged = winners(rows, np.flatnonzero(writable))
            if len(merged):
                await self._stage(conn)
                try:
                    async with conn.transaction():
                        await self._merge(conn, rows, merged, names)
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    log.warning("bars: the database refused %d rows at once: %s", len(merged), exc)
                    async with conn.transaction():
                        refused += await self._merge_apart(conn, rows, merged, names, exc)
        except psycopg.OperationalError as exc:
            await self.close()  # the next write opens a fresh connection
            raise TransientError(f"database unavailable: {exc}") from exc
        return sorted(refused)

    async def _stage(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn is not self._staged:
            await conn.execute(STAGING_SQL)
            await conn.commit()
            self._staged = conn

    @staticmethod
    async def _merge(
        conn: psycopg.AsyncConnection[Any],
        rows: BarRows,
        which: NDArray[np.intp],
        names: dict[str, EncodedNames],
    ) -> None:
        """Write rows `which` (one per key) as the upsert would, in the open transaction.

        A bar's first revision is almost always new, and a plain COPY into `bars` costs the
        server far less than staging and merging; so first revisions are tried that way, in a
        savepoint, and if any is refused (one is there already: a replay) they are merged too.
        """
        first = rows.columns[REVISION][which] == 0
        if first.any():
            try:
                async with conn.transaction():
                    await _copy(conn, INSERT_COPY_SQL, encode_copy(rows, which[first], names))
                which = which[~first]
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.NotSupportedError):
                pass  # merged below with the rest, as every row was before
        if len(which):
            await _copy(conn, COPY_SQL, encode_copy(rows, which, names))
            await conn.execute(MERGE_SQL)

    async def _merge_apart(
        self,
        conn: psycopg.AsyncConnection[Any],
        rows: BarRows,
        which: NDArray[np.intp],
        names: dict[str, EncodedNames],
        exc: psycopg.Error,
    ) -> list[tuple[int, str]]:
        """Merge each half of `which`, which the database refused for `exc`, in a savepoint;
        halve refused halves again until each refused row is alone. Return those rows."""
        if len(which) == 1:
            return [(int(which[0]), f"{type(exc).__name__}: {exc}".strip())]
        refused: list[tuple[int, str]] = []
        for half in np.array_split(which, 2):
            try:
                async with conn.transaction():
                    await self._merge(conn, rows, half, names)
                    await conn.execute("truncate bars_staging")  # for the next half
            except (psycopg.DataError, psycopg.IntegrityError) as half_exc:
                refused += await self._merge_apart(conn, rows, half, names, half_exc)
        return refused


async def _copy(conn: psycopg.AsyncConnection[Any], sql: str, data: bytes) -> None:
    async with conn.cursor().copy(sql) as copy:
        await copy.write(data)
