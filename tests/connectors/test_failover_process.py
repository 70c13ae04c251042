"""The user's path: `python -m connectors run failover` over the fake Finnhub and the fake
Alpaca processes; /stats/providers and the provider metrics; trades on Kafka name their
provider under the failover's clock."""

from __future__ import annotations

import signal
import time
import urllib.request

import orjson
from conftest import published_trades, read_topic, wait_http

from connectors.fakes import alpaca as fake_alpaca
from connectors.fakes import finnhub as fake_finnhub
from shared.codec import Codec
from shared.topics import TRADES
from streams.embedded.ports import free_port


def test_failover_process_serves_from_the_primary_and_reports_both_providers(
    bootstrap: str,
    codec: Codec,
    start_process,  # type: ignore[no-untyped-def]
) -> None:
    # Arrange: both fakes at ten times the recorded pace, the connector with both keys
    finnhub_port, alpaca_port, status_port = free_port(), free_port(), free_port()
    start_process(["connectors.fakes.finnhub", "--port", str(finnhub_port), "--speed", "10"], {})
    start_process(
        ["connectors.fakes.alpaca", "--port", str(alpaca_port), "--interval-s", "0.01"], {}
    )
    connector = start_process(
        ["connectors", "run", "failover"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(status_port),
            "MS_FAILOVER_SYMBOLS": "AAPL,MSFT",
            "MS_FAILOVER_PROVIDERS": "finnhub,alpaca",
            "MS_FINNHUB_WS_URL": f"ws://127.0.0.1:{finnhub_port}",
            "FINNHUB_API_KEY": fake_finnhub.API_KEY,
            "MS_ALPACA_URL": f"ws://127.0.0.1:{alpaca_port}/v2/iex",
            "ALPACA_API_KEY": fake_alpaca.KEY_ID,
            "ALPACA_SECRET_KEY": fake_alpaca.SECRET_KEY,
        },
    )
    url = f"http://127.0.0.1:{status_port}"
    wait_http(f"{url}/health/live")

    # Act
    deadline = time.monotonic() + 30
    while published_trades(url) < 50:
        assert time.monotonic() < deadline, connector.output()
        time.sleep(0.1)
    stats = orjson.loads(wait_http(f"{url}/stats/providers"))
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    connector.process.send_signal(signal.SIGTERM)

    # Assert
    assert connector.process.wait(30) == 0, connector.output()
    assert stats["finnhub"]["state"] == "closed" and stats["finnhub"]["instruments_served"] == 2
    assert stats["alpaca"]["state"] == "closed" and stats["alpaca"]["instruments_served"] == 0
    assert 'provider_circuit_state{provider="finnhub"} 0.0' in metrics
    assert 'provider_health_score{provider="alpaca"}' in metrics
    messages = read_topic(bootstrap, TRADES, lambda m: len(m) > 0, timeout_s=30)
    batches = [codec.decode_trade_batch(m.value()) for m in messages]
    trades = [b for b in batches if len(b)]
    assert trades and {(b.source, b.provider) for b in trades} == {("failover", "finnhub")}
    assert {s for b in trades for s in b.instruments} <= {"AAPL", "MSFT"}
