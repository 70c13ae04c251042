"""The gateway's collector pacing: what is alive is frozen each tick, and cycles among frozen
objects (what departed clients leave) are swept once enough clients have gone or the frozen
heap has grown enough."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from gateways.ws.collector import SWEEP_AFTER_DEPARTURES, SWEEP_AFTER_GROWTH, Collector


class _Node:
    """An object in a reference cycle, as a closed connection and its protocol are."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The permanent generation is the process's: give it back as it was."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _frozen_cycle(collector: Collector) -> weakref.ref[_Node]:
    """A cycle frozen while reachable (a connected client's objects), then dropped."""
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    collector.tick()
    cycle = weakref.ref(a)
    del a, b
    return cycle


def test_a_tick_collects_young_cycles_and_takes_the_rest_out_of_the_walks() -> None:
    collector = Collector(lambda: 0)
    collector.tick()
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    dropped = weakref.ref(a)
    del a, b  # unreachable before the tick, as most young cycles are
    kept = _Node()

    collector.tick()

    assert dropped() is None
    assert not any(o is kept for o in gc.get_objects())
    assert gc.get_freeze_count() > 1000


def test_cycles_frozen_while_alive_are_swept_after_enough_departures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = 0
    collector = Collector(lambda: gone)
    collector.tick()  # the first tick sweeps: nothing frozen yet
    cycle = _frozen_cycle(collector)

    gone = SWEEP_AFTER_DEPARTURES - 1
    collector.tick()
    assert cycle() is not None, "frozen: no collection walks it until the sweep"

    gone = SWEEP_AFTER_DEPARTURES + 7
    with caplog.at_level(logging.INFO, "gateways.ws.collector"):
        collector.tick()
    assert cycle() is None
    assert f"({SWEEP_AFTER_DEPARTURES + 7} clients gone" in caplog.text

    cycle = _frozen_cycle(collector)
    gone += SWEEP_AFTER_DEPARTURES - 1  # counted from the last sweep: not yet due
    collector.tick()
    assert cycle() is not None


def test_a_frozen_heap_that_doubled_is_swept_without_departures() -> None:
    collector = Collector(lambda: 0)
    collector.tick()
    cycle = _frozen_cycle(collector)
    baseline = gc.get_freeze_count()

    grown = [[] for _ in range(int(baseline * (SWEEP_AFTER_GROWTH + 0.05)))]
    collector.tick()  # the new lists are frozen: the heap has more than doubled
    assert cycle() is not None
    collector.tick()

    assert cycle() is None
    del grown
