"""A fake Alpaca market-data stream on 127.0.0.1, speaking stream v2's documented protocol.

It greets with `connected`, wants `auth` within the deadline (else error 404), refuses a wrong
key (402) and a second connection of the same key (406), confirms `subscribe` with the
`subscription` message, then replays a recording of frames, only the trades of subscribed
symbols (and the quotes and statuses recorded with them), in JSON or, when the client sent
`Content-Type: application/msgpack`, in MessagePack with timestamp extensions. With
`live_times` each pass of the recording is moved to the wall clock, as a live feed's would be.

Tests and `make up` (without keys) use it; the switches (`revoke_keys`, `go_silent`,
`drop_connections`, `inject`) play the failures real feeds have.

    python -m connectors.fakes.alpaca --port 8770
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np
import orjson
import websockets
from websockets.asyncio.server import ServerConnection

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.serving import WebSocketFake

log = logging.getLogger(__name__)

RECORDING: Final = Path(__file__).parent / "data" / "alpaca_iex_trades.jsonl"
KEY_ID: Final = "fake-alpaca-key"
SECRET_KEY: Final = "fake-alpaca-secret"
SUBSCRIBABLE: Final = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses")
CHANNEL_OF: Final = {
    "t": "trades",
    "q": "quotes",
    "s": "statuses",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
}


def load_recording(path: Path = RECORDING) -> list[list[dict[str, Any]]]:
    """The recorded frames, each an array of messages with RFC 3339 times."""
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _request(payload: str | bytes) -> dict[str, Any]:
    """A client's request: JSON text, or MessagePack once it asked for that encoding; raise
    ValueError for anything else."""
    try:
        request = orjson.loads(payload) if isinstance(payload, str) else msgpack.unpackb(payload)
    except (orjson.JSONDecodeError, msgpack.UnpackException) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(request, dict):
        raise ValueError("a request is an object")
    return request


def _ns(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))


def _rfc3339(ns: int) -> str:
    return str(np.datetime64(ns, "ns")) + "Z"


@dataclass(eq=False)
class _Session:
    socket: ServerConnection
    msgpack: bool
    subscribed: dict[str, set[str]] = field(default_factory=dict)

    def wants(self, message: dict[str, Any]) -> bool:
        symbols = self.subscribed.get(CHANNEL_OF.get(message["T"], ""), set())
        return "*" in symbols or message.get("S") in symbols

    async def send(self, messages: list[dict[str, Any]]) -> None:
        if self.msgpack:
            packed = [
                m | {"t": msgpack.Timestamp.from_unix_nano(_ns(m["t"]))} if "t" in m else m
                for m in messages
            ]
            await self.socket.send(msgpack.packb(packed))
        else:
            await self.socket.send(orjson.dumps(messages).decode())


class FakeAlpaca(WebSocketFake):
    """The fake stream; `start` binds it and returns the port."""

    def __init__(
        self,
        frames: list[list[dict[str, Any]]] | None = None,
        *,
        frame_interval_s: float = 0.0,
        live_times: bool = True,
        loop: bool = False,
        auth_timeout_s: float = 10.0,
        key_id: str = KEY_ID,
        secret_key: str = SECRET_KEY,
    ) -> None:
        self.frames = load_recording() if frames is None else frames
        self.keys = (key_id, secret_key)
        self.frame_interval_s = frame_interval_s
        self.live_times = live_times
        self.loop = loop
        self.auth_timeout_s = auth_timeout_s
        self.keys_valid = True
        self.silent = False
        self.sessions: set[_Session] = set()
        self.connections = 0  # connections accepted so far
        self.auth_failures = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2/iex"

    # switches

    async def revoke_keys(self) -> None:
        """The key stops working: sessions are closed and every new auth gets 402."""
        self.keys_valid = False
        await self.drop_connections()

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) sending data while keeping every socket open."""
        self.silent = silent

    async def drop_connections(self) -> None:
        """Close every connection at once, as a network failure would."""
        for session in list(self.sessions):
            session.socket.transport.abort()

    async def inject(self, payload: bytes | str) -> None:
        """Send a raw frame, as is, to every subscribed session."""
        for session in list(self.sessions):
            await session.socket.send(payload)

    # protocol

    async def serve_connection(self, socket: ServerConnection) -> None:
        self.connections += 1
        content_type = socket.request.headers.get("Content-Type", "") if socket.request else ""
        session = _Session(socket, msgpack=content_type == "application/msgpack")
        with contextlib.suppress(websockets.ConnectionClosed):
            await session.send([{"T": "success", "msg": "connected"}])
            if not await self._authenticate(session):
                return
            self.sessions.add(session)
            try:
                replay = asyncio.create_task(self._replay(session))
                try:
                    async for text in socket:
                        await self._on_request(session, text)
                finally:
                    replay.cancel()
            finally:
                self.sessions.discard(session)

    async def _authenticate(self, session: _Session) -> bool:
        try:
            async with asyncio.timeout(self.auth_timeout_s):
                request = _request(await session.socket.recv())
        except TimeoutError:
            await session.send([{"T": "error", "code": 404, "msg": "auth timeout"}])
            return False
        except ValueError:
            await session.send([{"T": "error", "code": 400, "msg": "invalid syntax"}])
            return False
        if request.get("action") != "auth":
            await session.send([{"T": "error", "code": 401, "msg": "not authenticated"}])
            return False
        if not self.keys_valid or (request.get("key"), request.get("secret")) != self.keys:
            self.auth_failures += 1
            await session.send([{"T": "error", "code": 402, "msg": "auth failed"}])
            return False
        if self.sessions:
            await session.send([{"T": "error", "code": 406, "msg": "connection limit exceeded"}])
            return False
        await session.send([{"T": "success", "msg": "authenticated"}])
        return True

    async def _on_request(self, session: _Session, text: str | bytes) -> None:
        try:
            request = _request(text)
        except ValueError:
            await session.send([{"T": "error", "code": 400, "msg": "invalid syntax"}])
            return
        action = request.get("action")
        if action not in ("subscribe", "unsubscribe"):
            await session.send([{"T": "error", "code": 410, "msg": "invalid subscribe action"}])
            return
        for channel in SUBSCRIBABLE:
            symbols = session.subscribed.setdefault(channel, set())
            change = set(request.get(channel, []))
            session.subscribed[channel] = (
                symbols | change if action == "subscribe" else symbols - change
            )
        confirmation = {c: sorted(session.subscribed[c]) for c in SUBSCRIBABLE}
        await session.send([{"T": "subscription"} | confirmation])

    async def _replay(self, session: _Session) -> None:
        """Send the recording's frames, filtered to the subscription, pass after pass if looping."""
        while True:
            shift_ns = 0
            if self.live_times and self.frames and self.frames[0]:
                shift_ns = time.time_ns() - _ns(self.frames[0][0]["t"])
            for frame in self.frames:
                while self.silent or not session.subscribed:
                    await asyncio.sleep(0.01)
                wanted = [
                    m | {"t": _rfc3339(_ns(m["t"]) + shift_ns)} for m in frame if session.wants(m)
                ]
                if wanted:
                    await session.send(wanted)
                await asyncio.sleep(self.frame_interval_s)
            if not self.loop:
                await asyncio.Event().wait()  # the recording is over: a quiet market


async def _main(port: int, interval_s: float) -> None:
    # The keys it accepts: ALPACA_API_KEY / ALPACA_SECRET_KEY if set (as `make up` sets them
    # for both sides), else the fixed fake ones.
    fake = FakeAlpaca(
        frame_interval_s=interval_s,
        loop=True,
        key_id=os.environ.get("ALPACA_API_KEY", KEY_ID),
        secret_key=os.environ.get("ALPACA_SECRET_KEY", SECRET_KEY),
    )
    bound = await fake.start(port=port)
    log.info("fake Alpaca stream on ws://127.0.0.1:%d/v2/iex", bound)
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("Alpaca", "connectors.fakes.alpaca", 8770, __doc__)
    parser.add_argument("--interval-s", type=float, default=0.05, help="seconds between frames")
    args = parser.parse_args()
    serve_until_interrupted(_main(args.port, args.interval_s))


if __name__ == "__main__":
    main()
