"""The stale-feed watchdog every connector's stream runs under (the runner's, a failover's).

A socket can stay open and send nothing (a provider's server hangs; tardis-machine #24). A
connector with a stale limit that has yielded nothing for that long while its market trades
is given up on with TransientError, so that it is reconnected; silence in a quiet market
only goes on waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from connectors.base import Connector, Record, Rejected
from shared.errors import TransientError
from shared.metrics import STALE_FEEDS


class StaleFeedError(TransientError):
    """The feed sent nothing for its stale limit while its market traded."""


async def watched(connector: Connector) -> AsyncIterator[Record | Rejected]:
    """Yield the items of a new `connector.stream()`; raise StaleFeedError once it is stale.

    Silence is counted from the later of its last item and the last frame the connector
    heard (`heard_at_s`: control messages and data it does not publish keep it alive too).
    The stream is closed however this ends (its sockets with it).
    """
    stream = connector.stream()
    stale_s = connector.stale_after_s
    if stale_s is None:  # nothing to watch: no task per item
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return
    last_s = time.monotonic()
    pending: asyncio.Future[Record | Rejected] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(stream))
            while True:
                wait_s = max(last_s, connector.heard_at_s) + stale_s - time.monotonic()
                if wait_s > 0:
                    if (await asyncio.wait({pending}, timeout=wait_s))[0]:
                        break
                elif connector.expects_data(datetime.now(UTC)):
                    STALE_FEEDS.labels(connector.name).inc()
                    raise StaleFeedError(
                        f"no data for {stale_s:g} s while its market trades: stale feed"
                    )
                else:
                    last_s = time.monotonic()  # a quiet market: wait another period
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            last_s = time.monotonic()  # a consumer that paused is not the feed's silence
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransientError):
                await pending
        await stream.aclose()  # type: ignore[attr-defined]
