"""Keep Python's cyclic garbage collector from holding the gateway's loop.

A gateway with 10,000 subscribers holds millions of long-lived objects (connections, their
protocol state, the replay buffer), and a full collection walks all of them with the loop
held: measured in the ws benchmark, 0.71 s about once a minute at 50 bars/s (p99 595 ms over
90 s), young collections up to 136 ms. So once a second what is alive is frozen (`gc.freeze`,
which costs nothing: the collector no longer walks those objects, reference counting still
frees them), and the collector's own collections only ever walk the last second's objects.

Freezing defers one kind of garbage: reference cycles that die once frozen, chiefly what a
connection leaves behind when it ends (the gateway drops what a departed session held first),
and any cycle that died since the collector's young collections last ran (`gc.freeze` takes
every object it tracks). One full collection over everything takes them once
SWEEP_AFTER_DEPARTURES connections have ended (at most once a minute), and at least every
SWEEP_EVERY_S, so they never pile up. Sweeps are logged with their pause. (Nothing here
counts the frozen objects: `gc.get_freeze_count` walks them all.)
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
SWEEP_EVERY_S: Final = 600.0
SWEEP_AT_MOST_EVERY_S: Final = 60.0  # however many connections end: each sweep holds the loop


class Collector:
    """Freezes the heap every second; sweeps it whole after enough connections have ended,
    or after SWEEP_EVERY_S."""

    def __init__(
        self, departures: Callable[[], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`departures`: how many connections have ended since start."""
        self.departures = departures
        self.clock = clock
        self._swept_at = 0  # departures at the last sweep
        self._swept_s: float | None = None  # monotonic time of the last sweep; None: none yet

    def tick(self) -> None:
        """Freeze what is alive; first sweep the whole heap if a sweep is due."""
        gone = self.departures() - self._swept_at
        now = self.clock()
        since = None if self._swept_s is None else now - self._swept_s
        if (
            since is None
            or since >= SWEEP_EVERY_S
            or (gone >= SWEEP_AFTER_DEPARTURES and since >= SWEEP_AT_MOST_EVERY_S)
        ):
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            self._swept_at += gone
            self._swept_s = now
            log.info(
                "swept the whole heap (%d connections ended since the last sweep): %d"
                " unreachable objects in %.0f ms",
                gone,
                found,
                (time.perf_counter() - started) * 1000,
            )
        gc.freeze()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_EVERY_S)
            try:
                self.tick()
            except Exception:  # the gateway goes on; only its pauses come back
                log.exception("pacing the garbage collector failed")
