"""`make up` in detached mode brings the whole pipeline up; a second `up` reuses it; `down` stops it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from conftest import published_trades, run_module, wait_http

from streams.embedded.ports import free_port, free_port_run, is_listening


def status_of(url: str) -> list[dict[str, object]]:
    processes: list[dict[str, object]] = orjson.loads(wait_http(url))["processes"]
    return processes


def test_stack_up_detached_shows_trades_flowing_and_down_stops_everything(tmp_path: Path) -> None:
    connector = free_port_run(2)  # the simulator's, and the next one alpaca's
    ports = {"CONNECTOR": connector}
    for name in ("KAFKA", "POSTGRES", "API", "WORKER", "SINK", "WS", "ALPACA_FAKE"):
        while (port := free_port()) in {*ports.values(), connector + 1}:
            pass
        ports[name] = port
    env = {f"MS_STACK_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {
        "MS_STACK_RUN_DIR": str(tmp_path / "run"),
        "MS_STACK_SIMULATOR_RATE": "5000",
        "MS_STACK_FEEDS": "simulator,alpaca",  # alpaca against its fake: no keys here
        "ALPACA_API_KEY": "",
        "ALPACA_SECRET_KEY": "",
    }

    up = run_module(["streams", "stack", "up", "--detach"], env, timeout_s=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{ports['WORKER']}/stats" in up.stdout
        worker = f"http://127.0.0.1:{ports['WORKER']}"
        deadline = time.monotonic() + 60
        while orjson.loads(wait_http(f"{worker}/stats"))["trades"] < 1000:
            assert time.monotonic() < deadline, "worker saw no trades within 60 s"
            time.sleep(0.2)
        alpaca = f"http://127.0.0.1:{ports['CONNECTOR'] + 1}"
        assert f"{alpaca}/metrics" in up.stdout
        while published_trades(alpaca) < 100:
            assert time.monotonic() < deadline, "the alpaca connector published nothing in 60 s"
            time.sleep(0.2)
        api_health = orjson.loads(wait_http(f"http://127.0.0.1:{ports['API']}/health"))
        assert api_health["status"] == "ok"
        first = up.stdout[up.stdout.index("marketstream is up:") :].splitlines()[1]
        assert f"status page       http://127.0.0.1:{ports['API']}/ " in first
        key = (tmp_path / "run/ws-api-key").read_text().strip()
        status_url = f"http://127.0.0.1:{ports['API']}/status.json?api_key={key}"
        while {p["name"]: p["status"] for p in status_of(status_url)} != dict.fromkeys(
            ("api", "worker", "sink", "ws-gateway", "simulator", "alpaca"), "ok"
        ):
            assert time.monotonic() < deadline + 30, status_of(status_url)
            time.sleep(0.5)
        tail = run_module(
            [
                "streams",
                "trades",
                "tail",
                "--count",
                "3",
                "--bootstrap",
                f"127.0.0.1:{ports['KAFKA']}",
            ],
            {},
            timeout_s=60,
        )
        assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 3

        watch = run_module(
            [
                "gateways.ws.watch",
                "--url",
                f"ws://127.0.0.1:{ports['WS']}",
                "--key-file",
                str(tmp_path / "run/ws-api-key"),
                "--count",
                "2",
                "bars.1s.*",
            ],
            {},
            timeout_s=60,
        )
        assert watch.returncode == 0, watch.stderr
        assert sum(" rev " in line for line in watch.stdout.splitlines()) >= 2, watch.stdout

        again = run_module(["streams", "stack", "up", "--detach"], env, timeout_s=60)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = run_module(["streams", "stack", "down"], env, timeout_s=120)

    assert down.returncode == 0 and "stopped" in down.stdout
    assert not any(is_listening(port) for port in ports.values())
    for feed in ("simulator", "alpaca"):
        log = (tmp_path / f"run/logs/{feed}.log").read_text()
        assert '"published":' in log, f"{feed} flushed and reported on shutdown"
