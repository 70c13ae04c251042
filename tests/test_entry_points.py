"""Entry points fail at start with a message naming the bad setting, and list valid choices."""

from __future__ import annotations

from conftest import run_module


def test_connector_with_invalid_kafka_setting_exits_2_naming_the_variable() -> None:
    result = run_module(["connectors", "run", "simulator"], {"MS_KAFKA_LINGER_MS": "soon"})

    assert result.returncode == 2
    assert "MS_KAFKA_LINGER_MS" in result.stderr


def test_connector_with_invalid_simulator_setting_exits_2_naming_it() -> None:
    result = run_module(["connectors", "run", "simulator"], {"MS_SIMULATOR_RATE": "-5"})

    assert result.returncode == 2
    assert "rate" in result.stderr.lower()


def test_unknown_connector_lists_valid_names() -> None:
    result = run_module(["connectors", "run", "nasdaq-itch"], {})

    assert result.returncode == 2
    assert "replay" in result.stderr and "simulator" in result.stderr


def test_replay_without_file_argument_fails_with_usage() -> None:
    result = run_module(["connectors", "run", "replay"], {})

    assert result.returncode == 2
    assert "path" in result.stderr.lower()


def test_connector_with_unreachable_broker_exits_2_naming_bootstrap() -> None:
    result = run_module(
        ["connectors", "run", "simulator"], {"MS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, timeout_s=60
    )

    assert result.returncode == 2
    assert "MS_KAFKA_BOOTSTRAP" in result.stderr


def test_api_with_invalid_port_exits_2_naming_the_variable() -> None:
    result = run_module(["gateways.http"], {"MS_API_HTTP_PORT": "70000"})

    assert result.returncode == 2
    assert "MS_API_HTTP_PORT" in result.stderr


def test_worker_with_invalid_bar_interval_exits_2_naming_the_variable() -> None:
    result = run_module(["streams", "worker"], {"MS_BARS_INTERVALS": "1m,7s"})

    assert result.returncode == 2
    assert "MS_BARS_INTERVALS" in result.stderr and "7s" in result.stderr


def test_worker_with_unknown_agent_exits_2_listing_the_agents() -> None:
    result = run_module(["streams", "worker"], {"MS_WORKER_AGENTS": "aggregate_bars,sink"})

    assert result.returncode == 2
    assert "MS_WORKER_AGENTS" in result.stderr and "sink_bars" in result.stderr
