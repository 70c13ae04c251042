"""The WebSocket server: authentication, requests, the writer, and its HTTP endpoints.

One writer visits the clients in turn and writes each, in one `transport.write`, pre-built
frames of everything it is to get; clients in the same state get the same bytes, built once
(see the hub). Bars arriving cost nothing per client (no task to wake, no queue to fill, no
frame to build): what a client costs is a write to its socket. A client whose socket does not
drain keeps its events in its own queue, and one that falls `max_lag_s` or `queue_max` events
behind is resynced or disconnected (the policy), so one slow client never slows the others.
`/health` and `/metrics` are served on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Final, Literal, cast

import orjson
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateways.ws import protocol
from gateways.ws.buffer import ReplayBuffer, Update
from gateways.ws.history import BarHistory
from gateways.ws.hub import CLOSE_TOO_SLOW, Hub, Outgoing, Session, Shared
from gateways.ws.source import TopicSource
from shared.api_keys import CLOSE_UNAUTHORIZED, ApiKeys
from shared.metrics import WS_AUTH_FAILURES, WS_BAD_REQUESTS, WS_CLIENTS, WS_PUBLISH_LATENCY
from shared.status import Check, run_checks

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
ABORT_AFTER_S = 30
WRITE_LIMIT: Final = 2**15  # bytes: websockets' write buffer high-water mark, set explicitly
SLICE_S: Final = 0.005  # the writer yields to the loop this often
# uvloop's timers count whole milliseconds (a 0.6 ms call_later fires after 1 ms, a 0.4 ms
# one at once), so the writer rests in whole milliseconds and carries the remainder over.
REST_STEP_S: Final = 0.001
# How far the writer may fall behind the source (frames some client has still to be written)
# before the source stops reading: about 0.3 s of the ws benchmark's 500k messages/s.
LOG_MAX_BYTES: Final = 64 * 2**20


def text_frame(message: bytes) -> bytes:
    """One unmasked, unfragmented text frame (server to client, RFC 6455): with compression
    off no extension applies, so these bytes are what `send` would have written."""
    return Frame(Opcode.TEXT, message).serialize(mask=False)


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
    # Channels one connection may hold (a wildcard counts one): each costs the hub a set entry.
    max_subscriptions: int = Field(10_000, ge=1)
    rebuild_lookback_s: float = Field(3600.0, ge=0)
    # Which channels to serve: bars, trades, quotes (comma-separated).
    streams: str = Field(
        "bars,trades,quotes,arb", pattern=r"^(bars|trades|quotes|arb)(,(bars|trades|quotes|arb))*$"
    )
    # Trades and quotes come by the thousand a second: a minute rebuilds every channel's
    # buffer (MS_WS_BUFFER_PER_CHANNEL) of an active name in moments.
    tick_lookback_s: float = Field(60.0, ge=0)
    # At most this share of the loop's time goes to writing frames while clients have events
    # waiting: lower means fewer, larger frames (less CPU per event), higher means lower latency
    # when the gateway is busy. The rest keeps the loop free for Kafka, handshakes and requests.
    write_share: float = Field(0.8, gt=0, le=1)
    # Fill snapshots deeper than the buffer from the sink's table (at MS_DATABASE_URL).
    snapshot_from_database: bool = False
    log_level: str = "INFO"


class Gateway:
    def __init__(
        self,
        settings: WsSettings,
        keys: ApiKeys,
        source: TopicSource,
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
            encode=text_frame,
        )
        # Clients in the order the writer visits them, and each one's place in that order.
        self._ring: list[Session] = []
        self._place: dict[Session, int] = {}
        self._next = 0
        self._quiet = 0  # visits in a row that had nothing to write
        self._writing: asyncio.Handle | None = None
        # The writer's rest still due to keep it within write_share, and since when it rests.
        self._rest_owed_s = 0.0
        self._rest_from: float | None = None
        self._observed: Outgoing | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._paused_sources: list[asyncio.Future[None]] = []  # deliveries awaiting the writer
        self.departures = 0  # connections ended since start

    def deliver(self, updates: list[Update]) -> asyncio.Future[None] | None:
        """Called on the loop with each batch from Kafka. While the writer is more than
        LOG_MAX_BYTES behind, return a future done once it has caught up: the source reads
        no further until then, so a gateway short of CPU holds its backlog on Kafka."""
        if self.hub.publish(updates):
            self._wake()
        if self.hub.log_bytes <= LOG_MAX_BYTES:
            return None
        caught_up = asyncio.get_running_loop().create_future()
        self._paused_sources.append(caught_up)
        return caught_up

    def _trim(self) -> None:
        """Drop what every client has taken; let a paused source read again once the writer
        is less than half of LOG_MAX_BYTES behind."""
        self.hub.trim()
        if self._paused_sources and self.hub.log_bytes <= LOG_MAX_BYTES // 2:
            for caught_up in self._paused_sources:
                if not caught_up.done():
                    caught_up.set_result(None)
            self._paused_sources.clear()

    def _wake(self) -> None:
        """Something is to be written: start the writer unless it runs or rests."""
        self._quiet = 0
        if self._writing is None:
            self._writing = asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        """Visit clients in turn for one slice, writing each what it is to get.

        A slice ends after SLICE_S, and the writer then rests so that writing takes at most
        `write_share` of the loop's time: the busier the gateway, the more events each frame
        carries. It stops once a whole round of clients had nothing to write.
        """
        self._writing = None
        ring = self._ring
        started = time.perf_counter()
        if self._rest_from is not None:  # whatever the loop did meanwhile was rest too
            self._rest_owed_s = max(0.0, self._rest_owed_s - (started - self._rest_from))
        deadline = started + SLICE_S
        shared: Shared = {}  # the log does not change within a slice
        while self._quiet < len(ring):
            if self._next >= len(ring):
                self._next = 0
                self._trim()
            session = ring[self._next]
            self._next += 1
            self._quiet = 0 if self._send(session, shared) else self._quiet + 1
            if time.perf_counter() >= deadline:
                break
        self._close_too_slow()
        if self._quiet < len(ring):
            self._rest_from = time.perf_counter()
            self._rest_owed_s += (self._rest_from - started) * (1 / self.settings.write_share - 1)
            rest = REST_STEP_S * (self._rest_owed_s // REST_STEP_S)
            self._writing = asyncio.get_running_loop().call_later(rest, self._write)
        else:  # every client has taken everything: the round need not come back to its start
            self._rest_from, self._rest_owed_s = None, 0.0
            self._trim()

    def _send(self, session: Session, shared: Shared) -> bool:
        """Write what the session is to get, as pre-built frames; return True if anything.

        A client whose write buffer is over WRITE_LIMIT gets nothing more on its socket: its
        events wait in its queue, where the slow-client policy applies.
        """
        connection = cast(ServerConnection, session.connection)
        transport = connection.transport
        if session.closing or connection.state is not State.OPEN or transport.is_closing():
            self.hub.skip(session)  # the close frame is sent or due: nothing may follow it
            return False
        if transport.get_write_buffer_size() >= WRITE_LIMIT:
            self.hub.hold(session)
            return False
        out = self.hub.outgoing(session, shared)
        if out is None:
            return False
        transport.write(out.data)
        if out.oldest_us and out is not self._observed:  # once per frame shared by many
            self._observed = out
            WS_PUBLISH_LATENCY.observe(max(0.0, time.time() * 1000 - out.oldest_us / 1000))
        return True

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.max_lag_s / 2))
            self._trim()  # in case the writer has not run since the log last changed
            if self.hub.check_lag():
                self._wake()  # clients whose write buffer has drained since
            self._close_too_slow()

    def _close_too_slow(self) -> None:
        while self.hub.to_close:
            session = self.hub.to_close.pop()
            task = asyncio.create_task(
                self._close(session, CLOSE_TOO_SLOW, "too slow: could not keep up")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, session: Session, code: int, reason: str) -> None:
        connection = session.connection
        assert isinstance(connection, ServerConnection)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(code, reason), 2)
        connection.transport.close()  # flushes what is buffered, close frame included
        await asyncio.sleep(ABORT_AFTER_S)
        connection.transport.abort()  # a client that never reads again

    def _join(self, session: Session) -> None:
        self.hub.add(session)
        self._place[session] = len(self._ring)
        self._ring.append(session)

    def _leave(self, session: Session) -> None:
        self.hub.remove(session)
        # What it still held goes now, even if the session ends up in a cycle the collector
        # reaches late (gateways.ws.collector).
        session.queue.clear()
        session.size = 0
        session.ahead.clear()
        place = self._place.pop(session)
        last = self._ring.pop()
        if last is not session:  # the last client takes its place in the round
            self._ring[place] = last
            self._place[last] = place
        if self._paused_sources:  # it may have been the one the log waited for
            self._trim()

    async def handle(self, connection: ServerConnection) -> None:
        try:
            await self._serve(connection)
        finally:
            self.departures += 1  # refused ones too: each leaves its connection's objects

    async def _serve(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        if not self.keys.allows(self.keys.presented(request.headers, request.path)):
            WS_AUTH_FAILURES.inc()
            await connection.close(CLOSE_UNAUTHORIZED, "invalid or missing API key")
            return
        try:
            by_path = protocol.path_request(request.path, self.settings.snapshot_max)
        except protocol.ProtocolError as exc:
            WS_BAD_REQUESTS.inc()
            reason = str(exc).encode()[:120].decode(errors="ignore")  # a close reason: 123 B
            await connection.close(CLOSE_POLICY, reason)
            return
        session = Session(connection)
        self._join(session)
        WS_CLIENTS.inc()
        bad = 0
        try:
            if by_path is not None:
                session.enqueue(await self._answer(session, by_path))
                self._send(session, {})
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
                self._send(session, {})  # the answer now, not at the client's turn
                self._close_too_slow()
        except ConnectionClosed:
            pass
        finally:
            self._leave(session)
            WS_CLIENTS.dec()

    async def _answer(self, session: Session, req: protocol.Request) -> list[bytes]:
        if req.op == "ping":
            return [protocol.event("pong")]
        if req.op == "unsubscribe":
            self.hub.unsubscribe(session, req.channels)
            return [protocol.event("unsubscribed", channels=[c.name for c in req.channels])]
        held = session.channels | session.streams
        adding = {c.stream if c.is_wildcard else c.name for c in req.channels} - held
        if len(held) + len(adding) > self.settings.max_subscriptions:
            WS_BAD_REQUESTS.inc()
            return [
                protocol.event(
                    "error",
                    code="too_many_subscriptions",
                    message=f"a connection holds at most {self.settings.max_subscriptions}"
                    f" channels (MS_WS_MAX_SUBSCRIPTIONS); it holds {len(held)}",
                )
            ]
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
            compression=None,  # text_frame writes frames without extensions
            write_limit=WRITE_LIMIT,
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
