"""WorkerSettings.fetch_wait_ms: the agents' fetch waits unless the variable sets one."""

from __future__ import annotations

from streams.app import AGENTS, WorkerSettings


def test_worker_settings_fetch_wait_unset_takes_shortest_of_its_agents() -> None:
    # Arrange
    settings = WorkerSettings(agents="tally_trades,aggregate_bars", fetch_max_wait_ms=None)

    # Act / Assert
    assert settings.fetch_wait_ms == AGENTS["aggregate_bars"].fetch_max_wait_ms
    assert AGENTS["aggregate_bars"].fetch_max_wait_ms < AGENTS["tally_trades"].fetch_max_wait_ms


def test_worker_settings_fetch_wait_sink_alone_waits_longer_than_bar_worker() -> None:
    # Arrange
    sink = WorkerSettings(agents="sink_bars", fetch_max_wait_ms=None)
    bars = WorkerSettings(agents="aggregate_bars", fetch_max_wait_ms=None)

    # Act / Assert
    assert sink.fetch_wait_ms == AGENTS["sink_bars"].fetch_max_wait_ms > bars.fetch_wait_ms


def test_worker_settings_fetch_wait_set_overrides_every_agent() -> None:
    # Arrange
    settings = WorkerSettings(agents="sink_bars", fetch_max_wait_ms=250)

    # Act / Assert
    assert settings.fetch_wait_ms == 250
