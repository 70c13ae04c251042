"""The status page (`GET /`, `GET /status.json`): what it says of healthy, sick, hanging and
dead processes, and the page itself in headless Chromium against the API, the WebSocket gateway
and a connector, with bars on md.bars.v1.

The browser test keeps a screenshot, `status-page.png`, in MS_TEST_ARTIFACTS_DIR
(default `.run/test-artifacts/`), whether it passes or fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from conftest import ROOT, Started, eventually, published_trades, wait_http
from websockets.asyncio.client import ClientConnection, connect

from gateways.keyed import KeyGuard
from gateways.rate_limit import KeyRates
from gateways.status_page import StatusPageSettings, add_status_page_routes, parse_targets
from shared.api_keys import ApiKeys
from shared.codec import Codec
from shared.errors import ConfigError
from shared.models import Bar
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.settings import load_settings
from shared.status import serve
from shared.topics import BARS
from streams.embedded.ports import free_port

KEY = "status-page-key-1"
ARTIFACTS = Path(os.environ.get("MS_TEST_ARTIFACTS_DIR", ROOT / ".run" / "test-artifacts"))
PARTITIONS = 3  # the bootstrap fixture's


# ---- settings --------------------------------------------------------------------------------


def test_parse_targets_names_and_urls_are_parsed_in_order() -> None:
    targets = parse_targets(" worker=http://127.0.0.1:6066/ , ws-gateway=http://127.0.0.1:8765,")

    assert [(t.name, t.url) for t in targets] == [
        ("worker", "http://127.0.0.1:6066"),
        ("ws-gateway", "http://127.0.0.1:8765"),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "worker",
        "worker=127.0.0.1:6066",
        "=http://127.0.0.1:1",
        "a=http://h:1,a=http://h:2",
        "api=http://h:1",
    ],
)
def test_status_settings_bad_targets_are_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MS_API_STATUS_TARGETS", value)

    with pytest.raises(ConfigError, match="MS_API_STATUS_TARGETS"):
        load_settings(StatusPageSettings)


# ---- /status.json against fake processes ---------------------------------------------------


def fake_process(health_status: int, health: object, providers: object | None) -> web.Application:
    app = web.Application()

    async def answer_health(_: web.Request) -> web.Response:
        return web.json_response(health, status=health_status)

    async def answer_providers(_: web.Request) -> web.Response:
        return web.json_response(providers)

    app.router.add_get("/health", answer_health)
    if providers is not None:
        app.router.add_get("/stats/providers", answer_providers)
    return app


def hanging_process(release: asyncio.Event) -> web.Application:
    """A process that answers nothing until `release` is set (then 503)."""
    app = web.Application()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({}, status=503)

    app.router.add_get("/health", hang)
    app.router.add_get("/stats/providers", hang)
    return app


@contextlib.asynccontextmanager
async def served(apps: dict[str, web.Application]) -> AsyncIterator[dict[str, str]]:
    runners, urls = [], {}
    for name, app in apps.items():
        port = free_port()
        runners.append(await serve(app, "127.0.0.1", port, port_variable="TEST_PORT"))
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        yield urls
    finally:
        for runner in runners:
            await runner.cleanup()


def readers() -> KeyGuard:
    return KeyGuard(ApiKeys([KEY], False), "API key", KeyRates("50/second", "MS_API_RATE_LIMIT"))


async def get(url: str, key: str | None = None) -> tuple[int, str, bytes]:
    headers = {"X-API-Key": key} if key else {}

    def fetch() -> tuple[int, str, bytes]:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    return await asyncio.to_thread(fetch)


async def test_status_json_sick_hanging_and_dead_processes_say_so_without_their_errors() -> None:
    secret = "postgresql://reader:hunter2@10.1.2.3:5432/marketstream"
    dead = f"http://127.0.0.1:{free_port()}"
    release = asyncio.Event()
    apps = {
        "connector": fake_process(
            200,
            {"status": "ok", "checks": {"kafka": {"ok": True}}},
            {
                "finnhub": {
                    "state": "streaming",
                    "trades_published": 1200,
                    "last_data_age_s": 0.4,
                    "errors": {"transient:ConnectionResetError": 2},
                    "last_error": f"cannot reach {secret}",
                }
            },
        ),
        "sink": fake_process(
            503,
            {"status": "unavailable", "checks": {"database": {"ok": False, "error": secret}}},
            None,
        ),
        "hanging": hanging_process(release),
    }
    async with served(apps) as urls:
        targets = ",".join(f"{n}={u}" for n, u in urls.items()) + f",worker={dead}"
        settings = StatusPageSettings(targets=targets, timeout_s=0.5)

        async def own_check() -> None:
            raise OSError(f"cannot reach {secret}")

        app = web.Application()
        add_status_page_routes(app, readers(), settings, {"database": own_check})
        try:
            async with served({"api": app}) as api:
                status, content_type, body = await get(f"{api['api']}/status.json", KEY)
                without_key, _, _ = await get(f"{api['api']}/status.json")
        finally:
            release.set()  # so that the hanging process can stop

    assert (status, content_type, without_key) == (200, "application/json", 401)
    got = orjson.loads(body)
    assert [(p["name"], p["status"], p["http_status"], p["checks"]) for p in got["processes"]] == [
        ("api", "unavailable", 503, {"database": False}),
        ("connector", "ok", 200, {"kafka": True}),
        ("sink", "unavailable", 503, {"database": False}),
        ("hanging", "timeout", None, {}),
        ("worker", "unreachable", None, {}),
    ]
    assert got["providers"] == [
        {
            "process": "connector",
            "provider": "finnhub",
            "state": "streaming",
            "trades_published": 1200,
            "last_data_age_s": 0.4,
            "errors": {"transient:ConnectionResetError": 2},
        }
    ]
    assert got["ws_url"] == "ws://127.0.0.1:8765"
    for leaked in ("hunter2", "10.1.2.3", "postgresql", "127.0.0.1:", "OSError"):
        assert leaked.encode() not in body.replace(b"ws://127.0.0.1:8765", b""), leaked


async def test_status_page_files_need_no_key_and_unknown_files_are_404() -> None:
    app = web.Application()
    add_status_page_routes(app, readers(), StatusPageSettings(targets=""), {})
    async with served({"api": app}) as api:
        page = await get(f"{api['api']}/")
        script = await get(f"{api['api']}/static/status.js")
        missing = await get(f"{api['api']}/static/..%2Fstatus_page.py")

    assert page[:2] == (200, "text/html; charset=utf-8") and b'id="candle-count"' in page[2]
    assert script[:2] == (200, "text/javascript; charset=utf-8")
    assert missing[0] == 404


# ---- the page in Chromium ----------------------------------------------------------------------


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("the status page test needs Chromium: apt-get install chromium")
    return path


class DevTools:
    """A page driven over the Chrome DevTools Protocol; events seen on the way are kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: object) -> dict[str, Any]:
        self.last_id += 1
        request = {"id": self.last_id, "method": method, "params": params}
        await self.ws.send(orjson.dumps(request).decode())  # DevTools drops binary frames
        while True:
            message = orjson.loads(await self.ws.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def until(self, expression: str, timeout_s: float, what: str) -> Any:
        """Evaluate `expression` until it is truthy; return its value; fail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout_s} s")
            await asyncio.sleep(0.1)
        return value

    def exceptions(self) -> list[str]:
        return [
            str(e["params"]["exceptionDetails"])
            for e in self.events
            if e.get("method") == "Runtime.exceptionThrown"
        ]


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[DevTools]:
    """A headless Chromium with one blank page; traffic beyond loopback goes to a dead proxy."""
    profile = tmp_path / "chromium-profile"
    with (tmp_path / "chromium.log").open("w") as log:
        process = subprocess.Popen(
            [
                chromium_path(),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--proxy-server=http://127.0.0.1:9",  # loopback bypasses proxies; nothing else
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        await eventually(
            lambda: port_file.exists() and len(port_file.read_text().split()) >= 2,
            20,
            "Chromium's DevTools port",
        )
        port = int(port_file.read_text().split()[0])
        targets = orjson.loads(wait_http(f"http://127.0.0.1:{port}/json/list", 10))
        page = next(t for t in targets if t["type"] == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            devtools = DevTools(ws)
            await devtools.call("Runtime.enable")
            await devtools.call("Page.enable")
            yield devtools
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def minute_bars(instrument: str, first_ts_us: int, n: int, first_seq: int, seed: int) -> list[Bar]:
    """`n` consecutive 1m bars of a random walk near 187, as aggregate_bars emits them."""
    rng = np.random.default_rng(seed)
    bars, close = [], 187.31
    for i in range(n):
        ts_us = first_ts_us + i * 60_000_000
        prices = close * np.exp(np.cumsum(rng.normal(0, 4e-4, 40)))
        sizes = rng.lognormal(3.5, 1.0, 40).round()
        open_, close = close, float(prices[-1].round(2))
        volume = float(sizes.sum())
        bars.append(
            Bar(
                instrument,
                "1m",
                ts_us,
                0,
                open_,
                float(max(prices.max().round(2), open_, close)),
                float(min(prices.min().round(2), open_, close)),
                close,
                volume,
                float(round((prices * sizes).sum() / volume, 4)),
                40,
                float(sizes[::2].sum()),
                float(sizes[1::2].sum()),
                "simulator",
                ts_us + 59_870_000,  # its latest trade
                ts_us + 62_004_000,  # emitted after the 2 s grace
                first_seq + i,
            )
        )
    return bars


def publish(bootstrap: str, codec: Codec, bars: list[Bar]) -> None:
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    for b in bars:
        publisher.produce(
            BARS,
            codec.encode_bar(b),
            key=b.instrument.encode(),
            partition=partition_for(b.instrument, PARTITIONS),
        )
    publisher.flush()


TEXT = "document.getElementById('%s').textContent"
# A table's rows by data-testid, each with one of its data- attributes.
ROWS = (
    "Object.fromEntries([...document.querySelectorAll('#%s tbody tr[data-testid]')]"
    ".map(tr => [tr.dataset.testid, tr.dataset.%s]))"
)


async def test_status_page_in_chromium_shows_processes_providers_and_live_candles(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_process: Callable[[list[str], dict[str, str]], Started],
    start_api: Callable[..., str],
    tmp_path: Path,
) -> None:
    ws_port, connector_port, nothing_port = free_port(), free_port(), free_port()
    start_process(
        ["gateways.ws"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": str(ws_port), "MS_WS_API_KEYS": KEY},
    )
    start_process(
        ["connectors", "run", "simulator"],
        {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(connector_port),
            "MS_SIMULATOR_INSTRUMENTS": "3",
            "MS_SIMULATOR_RATE": "20",
        },
    )
    gateway, connector = f"http://127.0.0.1:{ws_port}", f"http://127.0.0.1:{connector_port}"
    api = start_api(
        database_url,
        MS_API_KEYS=KEY,
        MS_API_STATUS_TARGETS=(
            f"ws-gateway={gateway},connector={connector},worker=http://127.0.0.1:{nothing_port}"
        ),
        MS_API_STATUS_WS_URL=f"ws://127.0.0.1:{ws_port}",
    )
    wait_http(f"{gateway}/health")
    await eventually(lambda: published_trades(connector) > 0, 30, "the simulator's first trades")
    minute_us = time.time_ns() // 1000 // 60_000_000 * 60_000_000
    history = minute_bars("SIM0001", minute_us - 31 * 60_000_000, 31, 1, seed=7)
    other = minute_bars("AAPL", minute_us - 2 * 60_000_000, 1, 1, seed=8)  # first by name
    publish(bootstrap, codec, history[:30] + other)
    screenshot = ARTIFACTS / "status-page.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with chromium(tmp_path) as page:
        await page.call("Page.navigate", url=f"{api}/?api_key={KEY}&symbol=SIM0001")
        try:
            await page.until(f"{TEXT % 'candle-count'} === '30'", 20, "the snapshot's 30 candles")
            live = history[30]
            close = round(live.close + 0.05, 2)  # a late trade, after the bar was emitted
            revised = replace(
                live,
                revision=1,
                close=close,
                high=max(live.high, close),
                ts_recv_us=live.ts_recv_us + 1_200_000,
                seq=live.seq + 1,
            )
            publish(bootstrap, codec, [live, revised])
            await page.until(
                f"{TEXT % 'candle-count'} === '31' && {TEXT % 'last-seq'} === '32'",
                20,
                "the live bar and its revision",
            )
            await page.until(
                f"{ROWS % ('providers', 'state')}['provider-simulator'] === 'streaming'",
                15,
                "the simulator streaming",
            )
            processes = await page.evaluate(ROWS % ("processes", "status"))
            symbols = await page.evaluate(
                "[...document.querySelectorAll('#symbol option')].map(o => o.value)"
            )
            last_close = await page.evaluate(TEXT % "last-close")
            problem_hidden = await page.evaluate("document.getElementById('problem').hidden")
        finally:
            size = (await page.call("Page.getLayoutMetrics"))["cssContentSize"]
            shot = await page.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,  # the whole page, tables below the chart too
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            print(f"status page screenshot: {screenshot}")

        # Without ?symbol=, the first instrument with bars; without a key, a hint where it is.
        await page.call("Page.navigate", url=f"{api}/?api_key={KEY}")
        chosen = await page.until(
            f"{TEXT % 'candle-count'} === '1' && document.getElementById('symbol').value",
            20,
            "the first instrument's candles",
        )
        assert "api_key" not in await page.evaluate("location.href")  # out of the history
        await page.evaluate("sessionStorage.clear()")  # a tab that never had the key
        await page.call("Page.navigate", url=f"{api}/")
        refused = await page.until(
            "!document.getElementById('problem').hidden && "
            "document.getElementById('problem').textContent",
            10,
            "the missing key's hint",
        )
        form_shown = await page.evaluate("!document.getElementById('key-form').hidden")
        await page.evaluate(
            f"document.getElementById('key-input').value = '{KEY}';"
            " document.getElementById('key-form').requestSubmit()"
        )
        typed = await page.until(
            f"Number({TEXT % 'candle-count'}) > 0 && !location.search.includes('api_key')",
            20,
            "candles with the key typed into the form",
        )

    assert processes == {
        "process-api": "ok",
        "process-ws-gateway": "ok",
        "process-connector": "ok",
        "process-worker": "unreachable",
    }
    assert symbols == ["AAPL", "SIM0001"]
    assert last_close == f"{revised.close:.2f}"
    assert problem_hidden is True
    assert chosen == "AAPL"
    assert "type the read key" in refused and form_shown is True
    assert typed is True  # kept for the tab's session, not in the URL
    assert page.exceptions() == []
