"""The gateway's collector pacing: what is alive is frozen each tick, and cycles among frozen
objects (what ended connections leave) are swept once enough connections have ended (at most
once a minute), or after ten minutes."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from gateways.ws.collector import (
    SWEEP_AFTER_DEPARTURES,
    SWEEP_AT_MOST_EVERY_S,
    SWEEP_EVERY_S,
    Collector,
)


class _Node:
    """An object in a reference cycle, as a closed connection and its protocol are."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


class _Clock:
    def __init__(self) -> None:
        self.now = 5_000.0  # monotonic seconds

    def __call__(self) -> float:
        return self.now


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
    gc.collect()  # frozen: even a full collection passes it over
    assert cycle() is not None
    return cycle


def _swept_only_after(
    collector: Collector, clock: _Clock, cycle: weakref.ref[_Node], wait_s: float
) -> None:
    """Tick a second before `wait_s` have passed (the cycle stays), then at `wait_s` (swept)."""
    clock.now += wait_s - 1
    collector.tick()
    gc.collect()
    assert cycle() is not None
    clock.now += 1
    collector.tick()
    assert cycle() is None


def test_a_tick_takes_what_is_alive_out_of_the_collectors_walks() -> None:
    collector = Collector(lambda: 0)
    kept = _Node()

    collector.tick()

    assert not any(o is kept for o in gc.get_objects())
    assert gc.get_freeze_count() > 1000


def test_cycles_frozen_while_alive_are_swept_after_enough_departures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone, clock = 0, _Clock()
    collector = Collector(lambda: gone, clock)
    collector.tick()  # the first tick sweeps: nothing frozen yet
    cycle = _frozen_cycle(collector)
    clock.now += SWEEP_AT_MOST_EVERY_S

    gone = SWEEP_AFTER_DEPARTURES - 1
    collector.tick()
    gc.collect()
    assert cycle() is not None, "not yet due"

    gone = SWEEP_AFTER_DEPARTURES + 7
    with caplog.at_level(logging.INFO, "gateways.ws.collector"):
        collector.tick()
    assert cycle() is None
    assert f"({SWEEP_AFTER_DEPARTURES + 7} connections ended since the last sweep)" in caplog.text

    cycle = _frozen_cycle(collector)
    gone += SWEEP_AFTER_DEPARTURES  # enough ended, but the last sweep is under a minute ago
    _swept_only_after(collector, clock, cycle, SWEEP_AT_MOST_EVERY_S)


def test_frozen_cycles_are_swept_every_ten_minutes_without_departures() -> None:
    clock = _Clock()
    collector = Collector(lambda: 0, clock)
    collector.tick()
    cycle = _frozen_cycle(collector)

    _swept_only_after(collector, clock, cycle, SWEEP_EVERY_S)
