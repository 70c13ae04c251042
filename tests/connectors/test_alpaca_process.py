"""The user's path: `python -m connectors run alpaca` against the fake Alpaca process, as
documented in the README, onto the real broker; stopped, it flushes what it acknowledged."""

from __future__ import annotations

import signal
import time

import orjson
from conftest import decoded_trades, published_trades, read_topic, wait_http

from connectors.fakes.alpaca import KEY_ID, SECRET_KEY, load_recording
from shared.codec import Codec
from shared.topics import QUOTES, TRADES
from streams.embedded.ports import free_port

RECORDED_TRADES = sum(1 for frame in load_recording() for m in frame if m["T"] == "t")
RECORDED_QUOTES = sum(1 for frame in load_recording() for m in frame if m["T"] == "q")


def test_alpaca_process_against_the_fake_publishes_the_recording_with_operator_key_names(
    bootstrap: str,
    codec: Codec,
    start_process,  # type: ignore[no-untyped-def]
) -> None:
    # Arrange: the fake on a free port, keys under the names Alpaca's own tools use
    fake_port, status_port = free_port(), free_port()
    start_process(
        ["connectors.fakes.alpaca", "--port", str(fake_port), "--interval-s", "0.005"], {}
    )
    connector = start_process(
        ["connectors", "run", "alpaca"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(status_port),
            "MS_ALPACA_URL": f"ws://127.0.0.1:{fake_port}/v2/iex",
            "MS_ALPACA_SYMBOLS": "AAPL,MSFT,TSLA",
            "ALPACA_API_KEY": KEY_ID,
            "ALPACA_SECRET_KEY": SECRET_KEY,
        },
    )
    url = f"http://127.0.0.1:{status_port}"
    wait_http(f"{url}/health/live")

    # Act: one pass of the recording, then SIGTERM
    deadline = time.monotonic() + 30
    while published_trades(url) < RECORDED_TRADES:
        assert time.monotonic() < deadline, connector.output()
        time.sleep(0.1)
    connector.process.send_signal(signal.SIGTERM)

    # Assert: exit 0, every acknowledged trade on the topic once, stamped alpaca, key unlogged
    assert connector.process.wait(30) == 0, connector.output()
    lines = connector.output().splitlines()
    summary = orjson.loads([line for line in lines if line.startswith("{")][-1])
    assert summary["published"] >= RECORDED_TRADES and summary["rejected"] == 0
    trades = decoded_trades(
        codec,
        read_topic(
            bootstrap,
            TRADES,
            lambda m: len(decoded_trades(codec, m)) >= summary["published"],
            timeout_s=60,
        ),
    )
    assert len(trades) == summary["published"]
    assert {symbol for symbol, *_ in trades} == {"AAPL", "MSFT", "TSLA"}
    assert SECRET_KEY not in connector.output() and KEY_ID not in connector.output()
    # the recording's quotes too, on their own topic
    assert summary["quotes"] >= RECORDED_QUOTES
    quotes = [
        codec.decode_quote_batch(m.value())
        for m in read_topic(bootstrap, QUOTES, lambda m: len(m) > 0, timeout_s=30)
    ]
    assert quotes and all(q.source == "alpaca" and len(q) for q in quotes)
