"""The stale-feed watchdog every connector's stream runs under (the runner's, a failover's).

A socket can stay open and send nothing (a provider's server hangs; tardis-machine #24). A
connector with a stale limit that has yielded nothing for that long while its market trades
is given up on with TransientError, so that it is reconnected; silence in a quiet market
only goes on waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from connectors.base import Connector, Record, Rejected
from shared.errors import TransientError
from shared.metrics import STALE_FEEDS


class StaleFeedError(TransientError):
    """The feed sent nothing for its stale limit while its market traded."""


async def watched(connector: Connector) -> AsyncIterator[Record | Rejected]:
    """Yield the items of a new `connector.stream()`; raise TransientError once it is stale.

    The stream is closed however this ends (its sockets with it).
    """
    stream = connector.stream()
    stale_s = connector.stale_after_s
    pending: asyncio.Future[Record | Rejected] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(stream))
            while not (await asyncio.wait({pending}, timeout=stale_s))[0]:
                if connector.expects_data(datetime.now(UTC)):
                    STALE_FEEDS.labels(connector.name).inc()
                    raise StaleFeedError(
                        f"no data for {stale_s:.0f} s while its market trades: stale feed"
                    )
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await stream.aclose()  # type: ignore[attr-defined]
