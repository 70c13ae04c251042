"""The status page of the HTTP API, for a newcomer watching `make up` work in a browser.

- `GET /` (no key: the page holds no data) and its script and style under `/static/`.
- `GET /status.json` (the read API key): every process's health and every connector's
  providers, asked here, server-side, of each process's `/health` and `/stats/providers`
  (MS_API_STATUS_TARGETS), so the browser needs no CORS; and `ws_url`, the WebSocket gateway
  the page draws live candles from (MS_API_STATUS_WS_URL).

All processes are asked at once, each within MS_API_STATUS_TIMEOUT_S, so one that hangs cannot
stall the page. A failure says only `unreachable`, `timeout` or `unavailable` (a non-200
answer); exception texts, addresses and providers' error messages stay out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateways.keyed import KeyGuard
from shared.status import Check, run_checks

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
# What `make up` runs with its default ports (streams/embedded/stack.py): its first connector
# (the simulator, unless MS_STACK_FEEDS says otherwise) is on 9101.
DEFAULT_TARGETS: Final = (
    "worker=http://127.0.0.1:6066,sink=http://127.0.0.1:6067,"
    "connector=http://127.0.0.1:9101,ws-gateway=http://127.0.0.1:8765"
)
MAX_BODY_BYTES: Final = 1 << 20  # a /health or /stats/providers answer is a few KB
# The page's own files: name -> content type. Served from memory, read once at start.
FILES: Final = {
    "status.html": "text/html",
    "status.js": "text/javascript",
    "status.css": "text/css",
}
# The page loads nothing from elsewhere; it connects to the API and to the WebSocket gateway.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Target:
    """A process the page reports on: its name and the base URL of its status endpoints."""

    name: str
    url: str


def parse_targets(value: str) -> tuple[Target, ...]:
    """Parse `name=http://host:port,...`; raise ValueError saying what is wrong."""
    targets: list[Target] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, url = (s.strip() for s in item.partition("="))
        parts = urlsplit(url)
        if not sep or not name or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{item!r} is not name=http://host:port")
        if name == "api" or name in (t.name for t in targets):
            raise ValueError(f"{name!r} named twice (the API itself is always `api`)")
        targets.append(Target(name, url.rstrip("/")))
    return tuple(targets)


class StatusPageSettings(BaseSettings):
    """What the status page reports on and where its candles come from."""

    model_config = SettingsConfigDict(env_prefix="MS_API_STATUS_", extra="forbid")

    targets: str = DEFAULT_TARGETS
    ws_url: str = Field(default="ws://127.0.0.1:8765", pattern=r"^wss?://\S+$")
    timeout_s: float = Field(default=1.5, gt=0, le=30)

    @field_validator("targets")
    @classmethod
    def _targets_parse(cls, value: str) -> str:
        parse_targets(value)
        return value

    @property
    def parsed_targets(self) -> tuple[Target, ...]:
        return parse_targets(self.targets)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one GET came to: `unreachable`/`timeout` (`http_status` None), or the HTTP status
    and the JSON body (None when it is not JSON)."""

    outcome: str
    http_status: int | None = None
    body: object = None


async def fetch(session: aiohttp.ClientSession, url: str, timeout_s: float) -> Answer:
    """GET `url` within `timeout_s`; every failure is an outcome, never an exception."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, allow_redirects=False) as response:
                status, raw = response.status, bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        return Answer("unavailable", status)  # not one of our answers
    except TimeoutError:
        return Answer("timeout")
    except (aiohttp.ClientError, OSError):
        return Answer("unreachable")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    return Answer("ok" if status == 200 else "unavailable", status, body)


def health_of(name: str, answer: Answer, response_ms: float) -> dict[str, object]:
    """A process's row: `status` (ok, unavailable, unreachable, timeout), its checks as
    booleans (their error texts left out), the HTTP status and the response time."""
    checks = answer.body.get("checks") if isinstance(answer.body, dict) else None
    return {
        "name": name,
        "status": answer.outcome,
        "http_status": answer.http_status,
        "checks": {
            str(k): bool(v.get("ok")) for k, v in (checks or {}).items() if isinstance(v, dict)
        },
        "response_ms": response_ms,
    }


def providers_of(process: str, body: object) -> list[dict[str, object]]:
    """A connector's `/stats/providers` as rows: its state, and its numbers and counts by kind
    (connectors report different ones); free text such as `last_error` is left out."""
    if not isinstance(body, dict):
        return []
    rows: list[dict[str, object]] = []
    for provider, stats in sorted(body.items()):
        if not isinstance(stats, dict):
            continue
        row: dict[str, object] = {"process": process, "provider": str(provider)}
        for key, value in stats.items():
            if key == "state" and isinstance(value, str):
                row[key] = value[:40]
            elif isinstance(value, bool | int | float) or value is None:
                row[key] = value
            elif isinstance(value, dict) and all(
                isinstance(v, int | float) for v in value.values()
            ):
                row[key] = {str(k)[:80]: v for k, v in value.items()}
        rows.append(row)
    return rows


async def collect(
    session: aiohttp.ClientSession,
    targets: tuple[Target, ...],
    own_checks: Mapping[str, Check],
    timeout_s: float,
) -> dict[str, object]:
    """The body of `/status.json`, every process asked at once, the API itself in-process."""

    async def timed(url: str) -> tuple[Answer, float]:
        start = time.perf_counter()
        answer = await fetch(session, url, timeout_s)
        return answer, round((time.perf_counter() - start) * 1000, 1)

    async def own() -> dict[str, object]:
        start = time.perf_counter()
        try:
            results = await asyncio.wait_for(run_checks(own_checks), timeout_s)
        except TimeoutError:
            return health_of("api", Answer("timeout"), round(timeout_s * 1000, 1))
        ok = all(r["ok"] for r in results.values())
        answer = Answer("ok" if ok else "unavailable", 200 if ok else 503, {"checks": results})
        return health_of("api", answer, round((time.perf_counter() - start) * 1000, 1))

    api, healths, providers = await asyncio.gather(
        own(),
        asyncio.gather(*(timed(f"{t.url}/health") for t in targets)),
        provider_rows(session, targets, timeout_s),
    )
    processes = [api] + [health_of(t.name, *h) for t, h in zip(targets, healths, strict=True)]
    return {"processes": processes, "providers": providers}


async def provider_rows(
    session: aiohttp.ClientSession, targets: tuple[Target, ...], timeout_s: float
) -> list[dict[str, object]]:
    """Every provider of the connectors among `targets`, asked at once."""
    provided = await asyncio.gather(
        *(fetch(session, f"{t.url}/stats/providers", timeout_s) for t in targets)
    )
    return [
        row
        for t, answer in zip(targets, provided, strict=True)
        if answer.outcome == "ok"  # only connectors serve /stats/providers
        for row in providers_of(t.name, answer.body)
    ]


def add_status_page_routes(
    app: web.Application,
    readers: KeyGuard,
    settings: StatusPageSettings,
    own_checks: Mapping[str, Check],
) -> Callable[[], Awaitable[list[dict[str, object]]]]:
    """Serve `/`, the page's files under `/static/` and `/status.json` (with what `readers`
    takes: the read API's key, at its rate); return what asks the providers' states, for
    `/health/detailed`."""
    files = {name: (STATIC_DIR / name).read_bytes() for name in FILES}
    targets = settings.parsed_targets
    session: list[aiohttp.ClientSession] = []  # made on the server's event loop, at startup

    def served(name: str) -> web.Response:
        return web.Response(
            body=files[name],
            content_type=FILES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP},
        )

    async def page(_: web.Request) -> web.Response:
        return served("status.html")

    async def static(request: web.Request) -> web.Response:
        return served(request.path.removeprefix("/static/"))

    async def status(_: web.Request) -> web.Response:
        body = await collect(session[0], targets, own_checks, settings.timeout_s)
        body["ws_url"] = settings.ws_url
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def open_session(_: web.Application) -> None:
        # Status ports are on loopback or the cluster's network: no proxy from the environment.
        session.append(aiohttp.ClientSession(trust_env=False))

    async def close_session(_: web.Application) -> None:
        if session:
            await session.pop().close()

    app.router.add_get("/", page)
    for name in sorted(FILES.keys() - {"status.html"}):  # one route each: static/ is shared
        app.router.add_get(f"/static/{name}", static)
    app.router.add_get("/status.json", readers(status))
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)

    async def providers() -> list[dict[str, object]]:
        return await provider_rows(session[0], targets, settings.timeout_s)

    return providers
