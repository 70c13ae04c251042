"""Checkpoints of bar books in PostgreSQL: the book as of an input offset, written atomically.

A checkpoint names the incarnation of the topic it was taken from (Kafka's topic id), so a
topic deleted and created again, or an embedded broker that restarted empty, is noticed: its
offsets start from 0 again and mean other messages. The table is created by `streams.migrations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import psycopg

from shared.errors import TransientError
from shared.postgres import ReusedConnection
from streams.bars.core import ChannelSeqs

STORED_SEQS_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int
    layout: str
    state: bytes
    topic_id: str | None = None  # None: taken before checkpoints named their topic's id


class CheckpointStore:
    """Load and save one checkpoint per (app, topic, partition)."""

    def __init__(self, url: str, app_id: str, topic: str) -> None:
        self.url = url
        self.app_id = app_id
        self.topic = topic
        self._saving = ReusedConnection(url, autocommit=True)  # saves reuse one connection

    async def load(self, partition: int) -> Checkpoint | None:
        """Return the partition's checkpoint, if any; raise TransientError if the database is down."""
        try:
            async with await psycopg.AsyncConnection.connect(self.url, connect_timeout=5) as conn:
                cur = await conn.execute(
                    'select "offset", layout, state, topic_id from bar_checkpoints'
                    " where app_id = %s and topic = %s and partition = %s",
                    (self.app_id, self.topic, partition),
                )
                row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            raise TransientError(f"cannot load checkpoint of partition {partition}: {exc}") from exc
        return None if row is None else Checkpoint(row[0], row[1], bytes(row[2]), row[3])

    async def save(self, partition: int, checkpoint: Checkpoint) -> None:
        """Replace the partition's checkpoint unless the one stored covers a later offset of the
        same topic; raise TransientError if the database is down."""
        try:
            connection = await self._saving.get()
            await connection.execute(
                "insert into bar_checkpoints"
                ' (app_id, topic, partition, "offset", layout, state, topic_id)'
                " values (%s, %s, %s, %s, %s, %s, %s)"
                ' on conflict (app_id, topic, partition) do update set "offset" = excluded."offset",'
                " layout = excluded.layout, state = excluded.state, topic_id = excluded.topic_id,"
                " updated_at = now()"
                # a late save from a previous owner never replaces a newer checkpoint
                ' where bar_checkpoints."offset" <= excluded."offset"'
                " or bar_checkpoints.topic_id is distinct from excluded.topic_id",
                (
                    self.app_id,
                    self.topic,
                    partition,
                    checkpoint.offset,
                    checkpoint.layout,
                    checkpoint.state,
                    checkpoint.topic_id,
                ),
            )
        except psycopg.OperationalError as exc:
            raise TransientError(f"cannot save checkpoint of partition {partition}: {exc}") from exc

    async def stored_seqs(self, timeout_s: float = STORED_SEQS_TIMEOUT_S) -> ChannelSeqs | None:
        """Return the highest seq the sink stored per channel (instrument, interval): bars
        emitted after the last checkpoint may be there, and their seqs are taken. None if the
        query took longer than `timeout_s` (a long history); raise TransientError if the
        database is down. It reads every bar, so it runs on a connection of its own."""
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url,
                connect_timeout=5,
                options=f"-c statement_timeout={round(timeout_s * 1000)}",
            ) as conn:
                cur = await conn.execute(
                    "select instrument, interval, max(seq) from bars group by instrument, interval"
                )
                rows = await cur.fetchall()
        except psycopg.errors.QueryCanceled:
            return None
        except psycopg.OperationalError as exc:
            raise TransientError(f"cannot read the stored bars' seqs: {exc}") from exc
        return {(instrument, interval): seq for instrument, interval, seq in rows}

    async def close(self) -> None:
        await self._saving.close()
