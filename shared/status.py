"""The HTTP status endpoints every process serves: `/health`, `/health/live`, `/metrics`.

`/health` answers 200 when the broker (and the database, where the process uses one) can be
reached and 503 otherwise, so it serves as a readiness probe; `/health/live` answers 200 while
the event loop runs, for liveness probes. Port 0 means any free port; the port bound is logged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.errors import ConfigError

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 3.0


def kafka_check(bootstrap: str) -> Check:
    """Return a check that fetches cluster metadata from the broker.

    The client is made on the first check, so a process that fails at start never connects.
    """
    admin: AdminClient | None = None

    async def check() -> None:
        nonlocal admin
        if admin is None:
            admin = AdminClient(
                {"bootstrap.servers": bootstrap, "client.id": "marketstream-health"}
            )
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
    """Run every check concurrently, each bounded in time; report ok, or unreachable or no
    answer (the log says why)."""

    async def one(name: str, check: Check) -> dict[str, object]:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S + 1)
            return {"ok": True}
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S + 1:g} s"}
        except Exception as exc:  # a failing dependency is the answer, not a crash
            # Not in the body: /health takes no key, and the text names hosts, ports, users.
            log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            return {"ok": False, "error": "unreachable"}

    results = await asyncio.gather(*(one(name, c) for name, c in checks.items()))
    return dict(zip(checks, results, strict=True))


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def status_app(
    component: str, checks: Mapping[str, Check], middlewares: Sequence[Middleware] = ()
) -> web.Application:
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

    app = web.Application(middlewares=middlewares)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    return app


def listen_error(exc: OSError, host: str, port: int, port_variable: str) -> ConfigError:
    """Describe why listening on host:port failed, as one line naming the variable to change."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{port_variable}={port}: port {port} on {host} is taken; stop what listens there"
            f" or set {port_variable} to a free port (0: any free port)"
        )
    return ConfigError(
        f"{port_variable}={port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
    )


def listen(host: str, port: int, port_variable: str) -> socket.socket:
    """Bind and listen on host:port (0: any free port); raise ConfigError naming `port_variable`.

    Binding before anything else starts turns a taken port into a one-line error at start,
    not a traceback from inside a server or a Faust task.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address, family=family)
    except OSError as exc:
        raise listen_error(exc, host, port, port_variable) from exc


async def serve(app: web.Application, host: str, port: int, *, port_variable: str) -> web.AppRunner:
    """Serve `app` on host:port (0: any free port) and log the port bound; raise ConfigError
    naming `port_variable` if the port is taken. The caller awaits `runner.cleanup()`."""
    return await serve_socket(app, listen(host, port, port_variable))


async def serve_socket(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Serve `app` on a socket from `listen`; the caller awaits `runner.cleanup()` on shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("status endpoints on http://%s:%d/health and /metrics", shown, port)
    return runner
