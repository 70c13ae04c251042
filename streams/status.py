"""The HTTP status endpoints every process serves: `/health`, `/health/live`, `/metrics`.

`/health` answers 200 when the broker (and the database, where the process uses one) can be
reached and 503 otherwise, so it serves as a readiness probe; `/health/live` answers 200 while
the event loop runs, for liveness probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 3.0


def kafka_check(bootstrap: str) -> Check:
    """Return a check that fetches cluster metadata from the broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "marketstream-health"})

    async def check() -> None:
        await asyncio.to_thread(admin.list_topics, timeout=CHECK_TIMEOUT_S)

    return check


def database_check(url: str) -> Check:
    """Return a check that opens a connection and runs `select 1`."""
    import psycopg

    async def check() -> None:
        async with await psycopg.AsyncConnection.connect(
            url, connect_timeout=int(CHECK_TIMEOUT_S)
        ) as conn:
            await conn.execute("select 1")

    return check


async def run_checks(checks: Mapping[str, Check]) -> dict[str, dict[str, object]]:
    """Run every check concurrently, each bounded in time; report ok or the error."""

    async def one(check: Check) -> dict[str, object]:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S + 1)
            return {"ok": True}
        except Exception as exc:  # a failing dependency is the answer, not a crash
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def status_app(component: str, checks: Mapping[str, Check]) -> web.Application:
    """Build the aiohttp application with the status routes; callers may add their own."""

    async def health(_: web.Request) -> web.Response:
        results = await run_checks(checks)
        healthy = all(r["ok"] for r in results.values())
        body = {
            "status": "ok" if healthy else "unavailable",
            "component": component,
            "checks": results,
        }
        return json_response(body, 200 if healthy else 503)

    async def live(_: web.Request) -> web.Response:
        return json_response({"status": "ok", "component": component})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving `app`; the caller awaits `runner.cleanup()` on shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("status endpoints on http://%s:%d/health and /metrics", host, port)
    return runner
