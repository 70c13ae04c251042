"""The WebSocket server: authentication, requests, per-client writers, and its HTTP endpoints.

Each client has a bounded queue drained by its own writer task, which sends everything queued
as one frame; a client that falls `queue_max` events behind is resynced or disconnected (the
policy), so one slow client never slows the others. `/health` and `/metrics` are served on the
same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Literal

import orjson
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateways.ws import protocol
from gateways.ws.auth import CLOSE_UNAUTHORIZED, ApiKeys
from gateways.ws.buffer import ReplayBuffer
from gateways.ws.history import BarHistory
from gateways.ws.hub import CLOSE_TOO_SLOW, Hub, Session
from gateways.ws.source import BarSource
from shared.metrics import WS_AUTH_FAILURES, WS_BAD_REQUESTS, WS_CLIENTS, WS_PUBLISH_LATENCY
from shared.models import Bar
from shared.status import Check, run_checks

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
MAX_FRAME_EVENTS = 1000  # about 400 KB: stock clients accept messages up to 1 MiB
ABORT_AFTER_S = 30


class WsSettings(BaseSettings):
    """Settings of the WebSocket gateway process."""

    model_config = SettingsConfigDict(env_prefix="MS_WS_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    allow_anonymous: bool = False
    snapshot_default: int = Field(120, ge=0)
    snapshot_max: int = Field(1000, ge=0)
    wildcard_snapshot: int = Field(1, ge=0)
    buffer_per_channel: int = Field(1024, ge=1)
    # All channels' JSON together; with Python's own overhead about 1.3x this in memory.
    buffer_max_bytes: int = Field(256 * 1024**2, ge=1)
    queue_max: int = Field(100_000, ge=1)
    max_lag_s: float = Field(5.0, gt=0)
    slow_client_policy: Literal["resync", "disconnect"] = "resync"
    max_resyncs_per_minute: int = Field(3, ge=0)
    max_bad_requests: int = Field(20, ge=1)
    rebuild_lookback_s: float = Field(3600.0, ge=0)
    # Fill snapshots deeper than the buffer from the sink's table (at MS_DATABASE_URL).
    snapshot_from_database: bool = False
    log_level: str = "INFO"


class Gateway:
    def __init__(
        self,
        settings: WsSettings,
        keys: ApiKeys,
        source: BarSource,
        checks: dict[str, Check],
        history: BarHistory | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.source = source
        self.checks = checks
        self.history = history
        self.hub = Hub(
            ReplayBuffer(settings.buffer_per_channel, settings.buffer_max_bytes),
            settings.snapshot_default,
            settings.wildcard_snapshot,
            settings.slow_client_policy,
            settings.max_resyncs_per_minute,
            settings.queue_max,
            settings.max_lag_s,
        )
        self._wakers: dict[Session, asyncio.Event] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def deliver(self, bars: list[Bar]) -> None:
        """Called on the loop with each batch from Kafka."""
        for session in self.hub.publish(bars):
            self._wake(session)
        self._close_too_slow()

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.max_lag_s / 2))
            self.hub.check_lag()
            for session in self.hub.sessions:
                if session.queue:
                    self._wake(session)
            self._close_too_slow()

    def _close_too_slow(self) -> None:
        while self.hub.to_close:
            session = self.hub.to_close.pop()
            task = asyncio.create_task(
                self._close(session, CLOSE_TOO_SLOW, "too slow: could not keep up")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _wake(self, session: Session) -> None:
        if (event := self._wakers.get(session)) is not None:
            event.set()

    async def _close(self, session: Session, code: int, reason: str) -> None:
        connection = session.connection
        assert isinstance(connection, ServerConnection)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(code, reason), 2)
        connection.transport.close()  # flushes what is buffered, close frame included
        await asyncio.sleep(ABORT_AFTER_S)
        connection.transport.abort()  # a client that never reads again

    async def _write(
        self, session: Session, connection: ServerConnection, wake: asyncio.Event
    ) -> None:
        """Send everything queued, as one frame per turn, until the connection closes."""
        while True:
            await wake.wait()
            wake.clear()
            while session.queue and not session.closing:
                first = session.queue.popleft()
                if not session.queue or first[1] >= MAX_FRAME_EVENTS:
                    data, n, oldest = first[0], first[1], first[2]
                else:
                    taken = [first]
                    n = first[1]
                    while session.queue and n + session.queue[0][1] <= MAX_FRAME_EVENTS:
                        chunk = session.queue.popleft()
                        taken.append(chunk)
                        n += chunk[1]
                    data = b"[" + b",".join([memoryview(c[0])[1:-1] for c in taken]) + b"]"
                    oldest = min((c[2] for c in taken if c[2]), default=0)
                session.size -= n
                await connection.send(data, text=True)
                if oldest:
                    WS_PUBLISH_LATENCY.observe(max(0.0, time.time() * 1000 - oldest / 1000))

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        if not self.keys.allows(self.keys.presented(request.headers, request.path)):
            WS_AUTH_FAILURES.inc()
            await connection.close(CLOSE_UNAUTHORIZED, "invalid or missing API key")
            return
        session = Session(connection)
        wake = asyncio.Event()
        self._wakers[session] = wake
        self.hub.sessions.add(session)
        WS_CLIENTS.inc()
        writer = asyncio.create_task(self._write(session, connection, wake))
        bad = 0
        try:
            async for raw in connection:
                try:
                    req = protocol.parse_request(raw, self.settings.snapshot_max)
                except protocol.ProtocolError as exc:
                    WS_BAD_REQUESTS.inc()
                    bad += 1
                    if bad > self.settings.max_bad_requests:
                        await connection.close(CLOSE_POLICY, "too many malformed requests")
                        break
                    session.enqueue([protocol.event("error", code="bad_request", message=str(exc))])
                else:
                    session.enqueue(await self._answer(session, req))
                wake.set()
                if writer.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(session)
            self._wakers.pop(session, None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer
            WS_CLIENTS.dec()

    async def _answer(self, session: Session, req: protocol.Request) -> list[bytes]:
        if req.op == "ping":
            return [protocol.event("pong")]
        if req.op == "unsubscribe":
            self.hub.unsubscribe(session, req.channels)
            return [protocol.event("unsubscribed", channels=[c.name for c in req.channels])]
        older = {}
        if self.history is not None:  # read before subscribing: the hub's part stays atomic
            for channel, oldest, wanted in self.hub.short_of(req):
                older[channel.name] = await self.history.before(channel, oldest, wanted)
        return self.hub.subscribe(session, req, older)

    async def http(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP on the WebSocket port: /health, /health/live, /metrics."""
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if path == "/health/live":
            return _json(HTTPStatus.OK, {"status": "ok", "component": "ws-gateway"})
        if path == "/health":
            results = await run_checks(self.checks)
            results["replay_buffer"] = {"ok": self.source.ready.is_set()}
            healthy = all(r["ok"] for r in results.values())
            body = {
                "status": "ok" if healthy else "unavailable",
                "component": "ws-gateway",
                "checks": results,
            }
            return _json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body)
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return Response(
                200, "OK", Headers({"Content-Type": CONTENT_TYPE_LATEST}), generate_latest()
            )
        return _json(
            HTTPStatus.NOT_FOUND, {"error": "not found; connect with WebSocket, or GET /health"}
        )

    async def serve(self) -> Server:
        self.source.start(asyncio.get_running_loop(), self.deliver)
        self._lag_watch = asyncio.create_task(self._watch_lag())
        return await serve(
            self.handle,
            self.settings.host,
            self.settings.port,
            process_request=self.http,
            compression=None,
            max_size=65_536,
            close_timeout=2,
            ping_interval=20,
            ping_timeout=20,
        )


def _json(status: HTTPStatus, body: object) -> Response:
    return Response(
        status.value,
        status.phrase,
        Headers({"Content-Type": "application/json"}),
        orjson.dumps(body),
    )
