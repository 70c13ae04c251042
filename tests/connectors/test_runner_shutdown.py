"""Stopping a connector loses nothing Kafka acknowledged, and publishes nothing twice."""

from __future__ import annotations

import signal
import time

import orjson
from conftest import decoded_trades, published_trades, read_topic, wait_http

from shared.codec import Codec
from shared.topics import TRADES
from streams.embedded.ports import free_port


def test_simulator_sigterm_flushes_and_topic_holds_exactly_the_acknowledged_trades(
    bootstrap: str,
    codec: Codec,
    start_process,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    started = start_process(
        ["connectors", "run", "simulator"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(port),
            "MS_SIMULATOR_RATE": "50000",
            "MS_SIMULATOR_INSTRUMENTS": "200",
            "MS_KAFKA_LINGER_MS": "50",
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/live")
    deadline = time.monotonic() + 30
    while published_trades(url) < 20_000:
        assert time.monotonic() < deadline, "simulator did not publish 20k trades in 30 s"
        time.sleep(0.1)

    started.process.send_signal(signal.SIGTERM)

    assert started.process.wait(30) == 0, started.output()
    summary = orjson.loads([ln for ln in started.output().splitlines() if ln.startswith("{")][-1])
    assert summary["published"] >= 20_000
    trades = decoded_trades(
        codec,
        read_topic(
            bootstrap,
            TRADES,
            lambda m: len(decoded_trades(codec, m)) >= summary["published"],
            timeout_s=60,
        ),
    )
    assert len(trades) == summary["published"], "every acknowledged trade once, nothing more"
