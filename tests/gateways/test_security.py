"""What the HTTP API and the WebSocket gateway refuse, as an attacker would try it: hostile
symbols through every route that takes one (the OpenAPI document names them), oversized
bodies, frames and subscriptions; and the keys never appear in what the processes wrote."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest
from conftest import Started, http_request, wait_http
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streams.embedded.ports import free_port

READ_KEY = "read-key-sec-41d2"
OPS_KEY = "ops-key-sec-9be0"
WS_KEY = "ws-key-sec-77f1"
HOSTILE = ("';DROP/**/TABLE/**/bars;--", "AAPL'OR'1'='1", "x\\\\'", "$(id)", "%00AAPL", "A" * 64)
TABLES = ("bars", "gaps", "fundamentals", "latest_trades", "dead_letters", "market_matches")


def symbol_routes() -> list[tuple[str, str, str]]:
    """(method, path, where) of every operation that takes a symbol: in the path or the query."""
    document: dict[str, Any] = orjson.loads(
        resources.files("gateways").joinpath("static/openapi.json").read_bytes()
    )
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            names = {p.get("name") for p in op.get("parameters", []) if "name" in p}
            names |= {"symbol"} if "{symbol}" in path else set()
            if "{symbol}" in path or "symbol" in names:
                found.append((method, path, "path" if "{symbol}" in path else "query"))
    return found


@pytest.fixture
def api(database_url: str, start_api: Callable[..., str]) -> str:
    return start_api(database_url, MS_API_KEYS=READ_KEY, MS_API_OPS_KEYS=OPS_KEY)


def test_hostile_symbols_on_every_symbol_route_only_miss(api: str, database_url: str) -> None:
    routes = symbol_routes()
    assert {p for _, p, _ in routes} >= {"/bars/{symbol}", "/stocks/{symbol}/price", "/gaps"}

    for method, path, where in routes:
        for symbol in HOSTILE:
            encoded = quote(symbol, safe="")
            url = api + (
                path.replace("{symbol}", encoded) if where == "path" else f"{path}?symbol={encoded}"
            )
            answer = http_request(url, method.upper(), key=READ_KEY)
            assert answer.status in (200, 400, 404), (path, symbol, answer.body)
            assert set(answer.json()) >= ({"error"} if answer.status != 200 else set())

    with psycopg.connect(database_url) as conn:
        for table in TABLES:
            assert conn.execute(f"select to_regclass('{table}')").fetchone() == (table,)


def test_an_oversized_body_is_refused_with_413(api: str) -> None:
    body = orjson.dumps({"instrument": "AAPL", "detail": "x" * (2 * 1024 * 1024)})

    answer = http_request(f"{api}/ops/backfill", "POST", body, OPS_KEY)

    assert answer.status == 413


@pytest.fixture
def gateway(bootstrap: str, start_process: Callable[[list[str], dict[str, str]], Started]) -> str:
    port = free_port()
    start_process(
        ["gateways.ws"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_WS_PORT": str(port),
            "MS_WS_API_KEYS": WS_KEY,
            "MS_WS_MAX_SUBSCRIPTIONS": "1500",
        },
    )
    wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
    return f"ws://127.0.0.1:{port}/?api_key={WS_KEY}"


async def test_an_oversized_frame_closes_the_connection_with_1009(gateway: str) -> None:
    async with connect(gateway, max_size=None) as ws:
        await ws.send('{"op":"subscribe","channels":["' + "A" * 70_000 + '"]}')
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()

    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_subscriptions_past_the_cap_are_refused_and_the_connection_survives(
    gateway: str,
) -> None:
    async with connect(gateway) as ws:
        for batch in range(2):  # 2 x 1000 channels: the second passes the cap of 1500
            names = [f"bars.1m.S{batch}{k:04d}" for k in range(1000)]
            await ws.send(orjson.dumps({"op": "subscribe", "channels": names, "snapshot": 0}))
        answers: list[dict[str, Any]] = []
        while not any(a.get("type") == "error" for a in answers):
            answers += orjson.loads(await ws.recv())
        await ws.send('{"op":"ping"}')
        while answers[-1].get("type") != "pong":
            answers += orjson.loads(await ws.recv())

    (error,) = [a for a in answers if a["type"] == "error"]
    assert error["code"] == "too_many_subscriptions" and "1000" in error["message"]
    assert sum(a["type"] == "subscribed" for a in answers) == 1000


def test_no_key_is_written_to_a_log_a_dead_letter_or_an_answer(
    api: str, gateway: str, database_url: str, tmp_path: Path
) -> None:
    for key in (READ_KEY, OPS_KEY, "wrong-key-3a9c"):  # good and bad keys, in every place
        for url in (f"{api}/bars/AAPL?api_key={key}", f"{api}/ops/dlq?api_key={key}"):
            assert key.encode() not in http_request(url).body
        assert key.encode() not in http_request(f"{api}/health/detailed", key=key).body

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".log"]
    assert written, "the processes' logs are in the test's directory"
    for path in written:
        text = path.read_text(errors="replace")
        for key in (READ_KEY, OPS_KEY, WS_KEY, "wrong-key-3a9c"):
            assert key not in text, f"{key} in {path.name}"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select detail, payload from dead_letters").fetchall()
    assert not any(re.search(rb"key-sec|wrong-key", bytes(p)) for _, p in rows)
