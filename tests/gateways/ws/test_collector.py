"""The gateway's collector pacing: what is alive is frozen each tick, and the cycles of
frozen objects (what departed clients leave) are swept once enough clients have gone."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from gateways.ws.collector import SWEEP_AFTER_DEPARTURES, Collector


class _Node:
    """An object in a reference cycle, as a closed connection and its protocol are."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The permanent generation is the process's: give it back as it was."""
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    return weakref.ref(a)


def test_a_tick_collects_young_cycles_and_freezes_the_rest() -> None:
    gone = 0
    collector = Collector(lambda: gone)
    young = _cycle()  # unreachable already: the tick's collection takes it before freezing
    kept = _Node()

    collector.tick()

    assert young() is None
    assert not any(o is kept for o in gc.get_objects()), "out of the collector's walks"
    assert gc.get_freeze_count() > 1000


def test_cycles_frozen_while_alive_wait_for_the_sweep_after_enough_departures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = 0
    collector = Collector(lambda: gone)
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    collector.tick()  # frozen while alive, as a connected client's objects are
    cycle = weakref.ref(a)
    del a, b

    gone = SWEEP_AFTER_DEPARTURES - 1
    collector.tick()
    assert cycle() is not None, "frozen: no collection walks it until the sweep"

    gone = SWEEP_AFTER_DEPARTURES + 7
    with caplog.at_level(logging.INFO, "gateways.ws.collector"):
        collector.tick()
    assert cycle() is None
    assert f"after {SWEEP_AFTER_DEPARTURES + 7} clients left" in caplog.text

    gone += SWEEP_AFTER_DEPARTURES - 1  # counted from the last sweep: none yet
    caplog.clear()
    with caplog.at_level(logging.INFO, "gateways.ws.collector"):
        collector.tick()
    assert "swept" not in caplog.text
