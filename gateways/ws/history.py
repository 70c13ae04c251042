"""Bars older than the replay buffer holds, from the database, for deep snapshots.

The buffer is rebuilt from the last `MS_WS_REBUILD_LOOKBACK_S` of md.bars.v1 when the gateway
starts, which for 1h, 4h or 1d bars is a bar or two. The sink's `bars` table holds every bar
(the latest revision of each), so a snapshot that wants more than the buffer has reads the
older ones there. If the database cannot answer, the snapshot holds what the buffer has.
"""

from __future__ import annotations

import logging
from typing import Final

import psycopg

from gateways.ws import protocol
from shared.bar_fields import BAR_ATTRIBUTES, select_list
from shared.metrics import WS_HISTORY_FAILURES
from shared.models import Bar
from shared.postgres import ReusedConnection

log = logging.getLogger(__name__)

QUERY: Final = (
    f"select {select_list()} from bars where instrument = %s and interval = %s"
    " and ts < timestamptz 'epoch' + %s * interval '1 microsecond' order by ts desc limit %s"
)
LATEST: Final = 2**62  # microseconds: a bound past every bar


class BarHistory:
    def __init__(self, url: str) -> None:
        self._connection = ReusedConnection(url, autocommit=True, connect_timeout=3)

    async def before(
        self, channel: protocol.Channel, ts_us: int | None, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` bars of `channel` that start before `ts_us` (None: any), oldest first,
        as (window start, the JSON clients get); [] if the database cannot answer."""
        try:
            connection = await self._connection.get()
            cursor = await connection.execute(
                QUERY,
                (channel.instrument, channel.interval, LATEST if ts_us is None else ts_us, limit),
            )
            rows = await cursor.fetchall()
        except psycopg.Error as exc:
            WS_HISTORY_FAILURES.inc()
            log.warning("no older bars for %s from the database: %s", channel.name, exc)
            return []
        bars = [Bar(**dict(zip(BAR_ATTRIBUTES, row, strict=True))) for row in reversed(rows)]
        return [(bar.ts_us, protocol.bar_json(bar)) for bar in bars]

    async def close(self) -> None:
        await self._connection.close()
