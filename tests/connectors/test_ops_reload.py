"""The runbook's "set an invalid key, reload": a failover feed whose Finnhub key (a mounted file)
is wrong serves from Alpaca; the key file is fixed and POST /ops/reload brings Finnhub back,
without a restart."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from conftest import published_trades, read_topic, wait_http

from connectors.fakes import alpaca as fake_alpaca
from shared.codec import Codec
from shared.topics import FEED_EVENTS, TRADES
from streams.embedded.ports import free_port

FINNHUB_KEY = "finnhub-rotated-7f3a"
OPS_KEY = "ops-key-51c2"


def _stats(url: str) -> dict[str, dict[str, object]]:
    stats: dict[str, dict[str, object]] = orjson.loads(wait_http(f"{url}/stats/providers"))
    return stats


def _finnhub_batches_ok(url: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    wanted = 'provider_requests_total{outcome="ok",provider="finnhub"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


def _until(check, what: str, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _reload(url: str, key: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"{url}/ops/reload", method="POST", data=b"")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_ops_reload_fixed_key_file_brings_the_primary_back_without_a_restart(
    bootstrap: str,
    codec: Codec,
    tmp_path: Path,
    start_process,  # type: ignore[no-untyped-def]
) -> None:
    # Arrange: a wrong Finnhub key in the mounted secrets directory
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "FINNHUB_API_KEY").write_text("finnhub-revoked-0000")
    finnhub_port, alpaca_port, status_port = free_port(), free_port(), free_port()
    start_process(
        ["connectors.fakes.finnhub", "--port", str(finnhub_port), "--speed", "10"],
        {"FINNHUB_API_KEY": FINNHUB_KEY},
    )
    start_process(
        ["connectors.fakes.alpaca", "--port", str(alpaca_port), "--interval-s", "0.01"], {}
    )
    connector = start_process(
        ["connectors", "run", "failover"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(status_port),
            "MS_CONNECTOR_SECRETS_DIR": str(secrets),
            "MS_CONNECTOR_OPS_API_KEYS": OPS_KEY,
            "MS_FAILOVER_SYMBOLS": "AAPL,MSFT",
            "MS_FAILOVER_PROVIDERS": "finnhub,alpaca",
            "MS_FINNHUB_WS_URL": f"ws://127.0.0.1:{finnhub_port}",
            "MS_ALPACA_URL": f"ws://127.0.0.1:{alpaca_port}/v2/iex",
            "ALPACA_API_KEY": fake_alpaca.KEY_ID,
            "ALPACA_SECRET_KEY": fake_alpaca.SECRET_KEY,
        },
    )
    url = f"http://127.0.0.1:{status_port}"
    wait_http(f"{url}/health/live")
    _until(lambda: published_trades(url) > 20, "alpaca served nothing")
    _until(lambda: _stats(url)["finnhub"]["state"] == "open", "finnhub not marked down")
    assert _finnhub_batches_ok(url) == 0
    assert _stats(url)["alpaca"]["instruments_served"] == 2

    # Act: fix the file, then reload (a wrong ops key first)
    (secrets / "FINNHUB_API_KEY").write_text(FINNHUB_KEY)
    refused, _ = _reload(url, "not-the-ops-key")
    status, body = _reload(url, OPS_KEY)

    # Assert: Finnhub serves both instruments again, and the topic shows it
    assert (refused, status) == (401, 202) and body["providers"] == ["alpaca", "finnhub"]
    _until(
        lambda: (
            _stats(url)["finnhub"]["instruments_served"] == 2
            and _stats(url)["finnhub"]["state"] == "closed"
        ),
        "finnhub did not come back",
    )
    _until(lambda: _finnhub_batches_ok(url) > 0, "finnhub delivered nothing after the reload")
    connector.process.send_signal(signal.SIGTERM)
    assert connector.process.wait(30) == 0, connector.output()
    batches = [
        codec.decode_trade_batch(m.value())
        for m in read_topic(
            bootstrap,
            TRADES,
            lambda ms: len(ms) > 0,
            timeout_s=30,
        )
    ]
    providers = [b.provider for b in batches if len(b)]
    assert providers[0] == "alpaca" and "finnhub" in providers
    events = [
        codec.decode_feed_event(m.value())
        for m in read_topic(bootstrap, FEED_EVENTS, lambda ms: len(ms) >= 2)
    ]
    assert [e.kind for e in events][:2] == ["disconnected", "reconnected"]
    assert "reloaded" in events[0].detail


@pytest.mark.parametrize("key", [None, "guess"])
def test_ops_reload_without_the_key_is_refused(
    bootstrap: str,
    start_process,
    key: str | None,  # type: ignore[no-untyped-def]
) -> None:
    status_port = free_port()
    start_process(
        ["connectors", "run", "simulator"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(status_port),
            "MS_CONNECTOR_OPS_API_KEYS": OPS_KEY,
        },
    )
    url = f"http://127.0.0.1:{status_port}"
    wait_http(f"{url}/health/live")

    status, body = _reload(url, key)

    assert status == 401 and "API key" in str(body["error"])
