"""Our commands answer an expected failure with one line on stderr and the exit status of the
table in streams/cli.py, and take port 0 as any free port, logging the port bound."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from conftest import PostgresServer, Started, run_module, wait_http

from shared.codec import Codec
from shared.models import Bar
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import BARS
from streams.embedded.ports import free_port, is_listening

KEY = "watch-test-key"
STATUS_LINE = re.compile(r"status endpoints on http://127\.0\.0\.1:(\d+)/health")
WS_LINE = re.compile(r"bars, trades, quotes, arb on ws://127\.0\.0\.1:(\d+)/")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port that a listening socket holds for the test, as `make up` holds 9101."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def only_line(stderr: str) -> str:
    """Return stderr's single line; fail if there is a traceback or more than one line."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def logged_port(started: Started, pattern: re.Pattern[str], timeout_s: float = 30) -> int:
    """Wait until the process logs the port it bound; fail if it exits first."""
    deadline = time.monotonic() + timeout_s
    while not (found := pattern.search(started.output())):
        assert started.process.poll() is None, started.output()
        assert time.monotonic() < deadline, f"no {pattern.pattern!r} within {timeout_s} s"
        time.sleep(0.05)
    return int(found.group(1))


def test_connector_http_port_taken_exits_2_naming_the_variable(
    bootstrap: str, taken_port: int
) -> None:
    result = run_module(
        ["connectors", "run", "simulator"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_CONNECTOR_HTTP_PORT": str(taken_port)},
        timeout_s=30,
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: ") and "MS_CONNECTOR_HTTP_PORT" in line
    assert f"port {taken_port}" in line


def test_connector_http_port_zero_serves_health_on_the_logged_port(
    bootstrap: str, start_process: Callable[[list[str], dict[str, str]], Started]
) -> None:
    started = start_process(
        ["connectors", "run", "simulator"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": "0",
            "MS_SIMULATOR_RATE": "10",
        },
    )

    port = logged_port(started, STATUS_LINE)
    body = orjson.loads(wait_http(f"http://127.0.0.1:{port}/health"))

    assert body["component"] == "connector.simulator" and body["status"] == "ok"


def test_worker_http_port_taken_exits_2_naming_the_variable(
    bootstrap: str, taken_port: int, tmp_path: Path
) -> None:
    result = run_module(
        ["streams", "worker"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_WORKER_HTTP_PORT": str(taken_port),
            "MS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        },
        timeout_s=30,
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: ") and "MS_WORKER_HTTP_PORT" in line


def test_worker_http_port_zero_serves_health_on_the_logged_port(
    bootstrap: str,
    database_url: str,
    start_process: Callable[[list[str], dict[str, str]], Started],
    tmp_path: Path,
) -> None:
    started = start_process(
        ["streams", "worker"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_DATABASE_URL": database_url,
            "MS_WORKER_HTTP_PORT": "0",
            "MS_WORKER_AGENTS": "tally_trades",
            "MS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        },
    )

    port = logged_port(started, STATUS_LINE, timeout_s=60)
    body = orjson.loads(wait_http(f"http://127.0.0.1:{port}/health/live"))

    assert body == {"status": "ok", "component": "worker"}


def test_ws_gateway_port_taken_exits_2_naming_the_variable(bootstrap: str, taken_port: int) -> None:
    result = run_module(
        ["gateways.ws"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": str(taken_port), "MS_WS_API_KEYS": KEY},
        timeout_s=30,
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: ") and "MS_WS_PORT" in line


@pytest.fixture
def gateway_url(
    bootstrap: str, start_process: Callable[[list[str], dict[str, str]], Started]
) -> str:
    """A gateway on port 0, found by the port it logs, answering /health."""
    started = start_process(
        ["gateways.ws"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": "0", "MS_WS_API_KEYS": KEY},
    )
    port = logged_port(started, WS_LINE)
    wait_http(f"http://127.0.0.1:{port}/health")
    return f"ws://127.0.0.1:{port}"


def test_ws_gateway_port_zero_serves_health_on_the_logged_port(gateway_url: str) -> None:
    body = orjson.loads(wait_http(f"{gateway_url.replace('ws://', 'http://')}/health"))

    assert body["component"] == "ws-gateway" and body["status"] == "ok"


def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "ws-api-key"
    path.write_text(f"{key}\n")
    return path


def test_watch_wrong_key_exits_2_saying_the_key_was_refused(
    gateway_url: str, tmp_path: Path
) -> None:
    result = run_module(
        [
            "gateways.ws.watch",
            "--url",
            gateway_url,
            "--key-file",
            str(key_file(tmp_path, "wrong-key")),
            "bars.1s.AAPL",
        ],
        {},
        timeout_s=30,
    )

    assert result.returncode == 2
    assert only_line(result.stderr) == "error: the gateway refused the API key (close code 4401)"


def test_watch_missing_key_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"

    result = run_module(
        ["gateways.ws.watch", "--key-file", str(missing), "bars.1s.AAPL"], {}, timeout_s=30
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert str(missing) in line and "No such file" in line


def test_watch_unreachable_gateway_exits_2_naming_the_url(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"

    result = run_module(
        [
            "gateways.ws.watch",
            "--url",
            url,
            "--key-file",
            str(key_file(tmp_path, KEY)),
            "bars.1s.AAPL",
        ],
        {},
        timeout_s=30,
    )

    assert result.returncode == 2
    assert url in only_line(result.stderr)


def live_bar(seq: int) -> Bar:
    ts_us = 1_767_623_400_000_000 + seq * 1_000_000
    return Bar(
        instrument="AAPL",
        interval="1s",
        ts_us=ts_us,
        revision=0,
        open=10.0,
        high=11.0,
        low=9.0,
        close=10.5,
        volume=100.0,
        vwap=10.2,
        trade_count=5,
        buy_volume=60.0,
        sell_volume=40.0,
        source="test",
        ts_event_us=ts_us + 999_000,
        ts_recv_us=time.time_ns() // 1000,
        seq=seq,
    )


def test_watch_good_key_prints_count_bars_and_exits_0(
    bootstrap: str, codec: Codec, gateway_url: str, tmp_path: Path
) -> None:
    stop = threading.Event()

    def publish_until_stopped() -> None:
        publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
        seq = 0
        while not stop.wait(0.05):
            seq += 1
            bar = live_bar(seq)
            publisher.produce(
                BARS, codec.encode_bar(bar), key=b"AAPL", partition=partition_for("AAPL", 3)
            )
            publisher.flush()

    publishing = threading.Thread(target=publish_until_stopped)
    publishing.start()
    try:
        result = run_module(
            [
                "gateways.ws.watch",
                "--url",
                gateway_url,
                "--key-file",
                str(key_file(tmp_path, KEY)),
                "--count",
                "2",
                "bars.1s.AAPL",
            ],
            {},
            timeout_s=30,
        )
    finally:
        stop.set()
        publishing.join()

    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if " rev " in line]) == 2
    assert result.stderr == ""


def test_bars_export_unreachable_database_exits_2_and_writes_no_file(tmp_path: Path) -> None:
    out = tmp_path / "bars.csv"

    result = run_module(
        ["streams", "bars", "export", "--interval", "1m", "--out", str(out)],
        {"MS_DATABASE_URL": f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x"},
        timeout_s=30,
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert "MS_DATABASE_URL" in line and "s3cret" not in line
    assert not out.exists()


def test_bars_export_unwritable_out_exits_2_naming_the_flag(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "no-such-dir" / "bars.csv"

    result = run_module(
        ["streams", "bars", "export", "--interval", "1m", "--out", str(out)],
        {"MS_DATABASE_URL": database_url},
        timeout_s=30,
    )

    assert result.returncode == 2
    assert "--out" in only_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["streams", "topics", "describe"], "MS_KAFKA_BOOTSTRAP"),
        (["streams", "topics", "create"], "MS_KAFKA_BOOTSTRAP"),
        (["streams", "worker"], "MS_KAFKA_BOOTSTRAP"),
        (["streams", "trades", "tail"], "MS_KAFKA_BOOTSTRAP"),
        (["streams", "trades", "tail", "--bootstrap", "BROKER"], "--bootstrap"),
        (["streams", "db", "migrate"], "MS_DATABASE_URL"),
        (["streams", "db", "retention"], "MS_DATABASE_URL"),
        (["connectors", "run", "simulator"], "MS_KAFKA_BOOTSTRAP"),
        (["gateways.ws"], "MS_KAFKA_BOOTSTRAP"),
        (["benchmarks", "produce", "--bootstrap", "BROKER"], "--bootstrap"),
        (["benchmarks", "sink", "--database-url", "DATABASE"], "--database-url"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else None,
)
def test_cli_unreachable_service_exits_2_with_one_line_naming_it(
    args: list[str], named: str, tmp_path: Path
) -> None:
    broker = f"127.0.0.1:{free_port()}"
    database = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    replace = {"BROKER": broker, "DATABASE": database}

    result = run_module(
        [replace.get(arg, arg) for arg in args],
        {
            "MS_KAFKA_BOOTSTRAP": broker,
            "MS_DATABASE_URL": database,
            "MS_WS_API_KEYS": KEY,
            "MS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        },
        timeout_s=30,
    )

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: cannot ") and named in line


def test_topics_describe_with_broker_up_exits_0(bootstrap: str) -> None:
    result = run_module(["streams", "topics", "describe"], {"MS_KAFKA_BOOTSTRAP": bootstrap})

    assert result.returncode == 0, result.stderr
    assert BARS in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["streams", "frobnicate"], "invalid choice"),
        (["streams", "topics", "describe", "--bogus"], "--bogus"),
        (["streams", "bars", "export"], "--interval"),
        (["connectors", "list", "extra"], "extra"),
        (["gateways.ws.watch"], "channels"),
        (["benchmarks", "nope"], "unknown scenario"),
        (["benchmarks", "produce", "--bogus"], "--bogus"),
        (["benchmarks"], "scenarios:"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else None,
)
def test_cli_bad_argument_exits_2_with_one_line(args: list[str], named: str) -> None:
    result = run_module(args, {}, timeout_s=30)

    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: ") and named in line


def test_replay_missing_file_exits_2_naming_the_file(bootstrap: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.csv"

    result = run_module(
        ["connectors", "run", "replay", str(missing)],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_CONNECTOR_HTTP_PORT": "0"},
        timeout_s=30,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert str(missing) in result.stderr


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_stack_up_child_port_taken_exits_2_naming_the_variable(
    taken_port: int, tmp_path: Path, detach: bool
) -> None:
    ports = {
        f"MS_STACK_{name}_PORT": str(free_port())
        for name in ("KAFKA", "POSTGRES", "WORKER", "SINK", "CONNECTOR", "WS")
    }

    result = run_module(
        ["streams", "stack", "up", *(["--detach"] if detach else [])],
        {**ports, "MS_STACK_API_PORT": str(taken_port), "MS_STACK_RUN_DIR": str(tmp_path)},
        timeout_s=30,
    )

    assert result.returncode == 2
    assert f"MS_STACK_API_PORT={taken_port}" in only_line(result.stderr)
    assert not (tmp_path / "logs").exists(), "nothing was started"


def test_stack_up_feed_port_taken_names_the_connector_port_and_offset(
    taken_port: int, tmp_path: Path
) -> None:
    ports = {
        f"MS_STACK_{name}_PORT": str(free_port())
        for name in ("KAFKA", "POSTGRES", "API", "WORKER", "SINK", "WS", "ALPACA_FAKE")
    }

    result = run_module(
        ["streams", "stack", "up"],
        {
            **ports,
            "MS_STACK_CONNECTOR_PORT": str(taken_port - 1),
            "MS_STACK_FEEDS": "simulator,alpaca",
            "MS_STACK_RUN_DIR": str(tmp_path),
        },
        timeout_s=30,
    )

    assert result.returncode == 2
    assert f"MS_STACK_CONNECTOR_PORT={taken_port - 1} + 1 (alpaca)" in only_line(result.stderr)


def test_stack_up_stops_as_soon_as_a_child_exits_while_starting(
    bootstrap: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    """A child that cannot start (here the gateway, given a bad setting) fails `stack up`
    at once, where the supervisor waited two minutes for its port."""
    ports = {
        f"MS_STACK_{name}_PORT": str(free_port())
        for name in ("API", "WORKER", "SINK", "CONNECTOR", "WS")
    }
    env = {
        **ports,
        "MS_STACK_KAFKA_PORT": bootstrap.rpartition(":")[2],  # reused, as a running broker is
        "MS_STACK_POSTGRES_PORT": str(postgres.port),
        "MS_STACK_RUN_DIR": str(tmp_path),
        "MS_WS_SLOW_CLIENT_POLICY": "wait-forever",
    }

    result = run_module(["streams", "stack", "up"], env, timeout_s=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ws-gateway exited while starting; see {tmp_path / 'logs'}/" in result.stdout
    assert "MS_WS_SLOW_CLIENT_POLICY" in (tmp_path / "logs/ws-gateway.log").read_text()
    assert not any(is_listening(int(port)) for port in ports.values()), "children stopped"
