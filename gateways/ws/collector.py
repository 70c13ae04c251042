"""Keep Python's cyclic garbage collector from holding the gateway's loop.

A gateway with 10,000 subscribers holds millions of long-lived objects (connections, their
protocol state, the replay buffer), and a full collection walks all of them with the loop
held: measured in the ws benchmark, 0.71 s about once a minute at 50 bars/s (p99 595 ms over
90 s), young collections up to 136 ms. So once a second what is alive is frozen (`gc.freeze`:
the collector no longer walks it; reference counting still frees it), after a collection of
what is not frozen yet, and collections only ever walk the last second's objects.

Freezing defers one kind of garbage: reference cycles among frozen objects, chiefly what a
client leaves behind when it goes (about 15 objects). Once SWEEP_AFTER_DEPARTURES clients
have gone, one full collection over everything takes it; its pause is logged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

FREEZE_EVERY_S: Final = 1.0
SWEEP_AFTER_DEPARTURES: Final = 1000


class Collector:
    """Freezes the heap every second; sweeps it whole after enough clients have gone."""

    def __init__(self, departures: Callable[[], int]) -> None:
        """`departures`: how many clients have gone since start."""
        self.departures = departures
        self._swept_at = 0  # departures when the heap was last swept whole

    def tick(self) -> None:
        """Collect what is not frozen, sweep all if enough clients have gone, then freeze."""
        gone = self.departures()
        if gone - self._swept_at >= SWEEP_AFTER_DEPARTURES:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.info(
                "swept the whole heap after %d clients left: %d objects in %.0f ms",
                gone - self._swept_at,
                found,
                (time.perf_counter() - started) * 1000,
            )
            self._swept_at = gone
        else:
            gc.collect()  # over the last second's objects only
        gc.freeze()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_EVERY_S)
            self.tick()
