"""Keep Python's cyclic garbage collector from holding the gateway's loop.

A gateway with 10,000 subscribers holds millions of long-lived objects (connections, their
protocol state, the replay buffer), and a full collection walks all of them with the loop
held: measured in the ws benchmark, 0.71 s about once a minute at 50 bars/s (p99 595 ms over
90 s), young collections up to 136 ms. So once a second the objects younger than the last
tick are collected and what is still alive is frozen (`gc.freeze`: the collector no longer
walks it, reference counting still frees it); collections only ever walk a second's objects.

Freezing defers one kind of garbage: reference cycles that become unreachable once frozen,
chiefly what a client leaves behind when it goes (about 15 objects). One full collection over
everything takes them once SWEEP_AFTER_DEPARTURES clients have gone, or once the frozen heap
has doubled since the last sweep, so that no other source of such cycles grows the heap
without bound. Sweeps are logged with their pause.
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
SWEEP_AFTER_GROWTH: Final = 1.0  # of the objects frozen after the last sweep


class Collector:
    """Collects the young and freezes the heap every second; sweeps it whole after enough
    clients have gone or enough growth."""

    def __init__(self, departures: Callable[[], int]) -> None:
        """`departures`: how many clients have gone since start."""
        self.departures = departures
        self._swept_at = 0  # departures at the last sweep
        self._frozen_after_sweep = 0  # objects frozen right after it; 0: no sweep yet

    def tick(self) -> None:
        """Collect what is not frozen (the whole heap if a sweep is due), then freeze it."""
        gone = self.departures() - self._swept_at
        frozen = gc.get_freeze_count()
        if (
            not self._frozen_after_sweep
            or gone >= SWEEP_AFTER_DEPARTURES
            or frozen > self._frozen_after_sweep * (1 + SWEEP_AFTER_GROWTH)
        ):
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.info(
                "swept the whole heap (%d clients gone, %d objects frozen since the last"
                " sweep): %d unreachable in %.0f ms",
                gone,
                max(0, frozen - self._frozen_after_sweep),
                found,
                (time.perf_counter() - started) * 1000,
            )
            self._swept_at += gone
            gc.freeze()
            self._frozen_after_sweep = max(1, gc.get_freeze_count())
        else:
            gc.collect()  # a second's objects: what the last tick did not freeze
            gc.freeze()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_EVERY_S)
            self.tick()
