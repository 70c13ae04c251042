"""Entry points fail at start with one line naming the bad setting, and list valid choices."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import run_module


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Return the one line on stderr; fail on a traceback or on more lines."""
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_connector_with_invalid_kafka_setting_exits_2_naming_the_variable() -> None:
    result = run_module(["connectors", "run", "simulator"], {"MS_KAFKA_LINGER_MS": "soon"})

    assert result.returncode == 2
    assert "MS_KAFKA_LINGER_MS" in error_line(result)


def test_connector_with_invalid_simulator_setting_exits_2_naming_it() -> None:
    result = run_module(["connectors", "run", "simulator"], {"MS_SIMULATOR_RATE": "-5"})

    assert result.returncode == 2
    assert "MS_SIMULATOR_RATE" in error_line(result)


def test_unknown_connector_lists_valid_names() -> None:
    result = run_module(["connectors", "run", "nasdaq-itch"], {})

    assert result.returncode == 2
    line = error_line(result)
    assert "replay" in line and "simulator" in line


def test_replay_without_file_argument_fails_with_usage() -> None:
    result = run_module(["connectors", "run", "replay"], {})

    assert result.returncode == 2
    assert "path" in error_line(result).lower()


def test_connector_with_unreachable_broker_exits_2_naming_bootstrap() -> None:
    result = run_module(
        ["connectors", "run", "simulator"], {"MS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, timeout_s=60
    )

    assert result.returncode == 2
    assert "MS_KAFKA_BOOTSTRAP" in error_line(result)


def test_api_with_invalid_port_exits_2_naming_the_variable() -> None:
    result = run_module(["gateways.http"], {"MS_API_HTTP_PORT": "70000"})

    assert result.returncode == 2
    assert "MS_API_HTTP_PORT" in error_line(result)


def test_worker_with_invalid_bar_interval_exits_2_naming_the_variable(
    bootstrap: str, tmp_path: Path
) -> None:
    # The worker checks the broker before its agents read their settings, so give it one.
    result = run_module(
        ["streams", "worker"],
        {
            "MS_BARS_INTERVALS": "1m,7s",
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_WORKER_HTTP_PORT": "0",
            "MS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        },
    )

    assert result.returncode == 2
    line = error_line(result)
    assert "MS_BARS_INTERVALS" in line and "7s" in line


def test_worker_with_unknown_agent_exits_2_listing_the_agents() -> None:
    result = run_module(["streams", "worker"], {"MS_WORKER_AGENTS": "aggregate_bars,sink"})

    assert result.returncode == 2
    line = error_line(result)
    assert "MS_WORKER_AGENTS" in line and "sink_bars" in line
