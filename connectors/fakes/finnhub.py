"""A fake Finnhub on 127.0.0.1: the trades WebSocket and the REST candles, on one port.

The WebSocket (`ws://127.0.0.1:PORT/?token=KEY`) refuses a wrong or revoked key with HTTP 401 on
the handshake, as Finnhub does, takes `{"type":"subscribe"|"unsubscribe","symbol":S}` and
replays a recording of trade frames to each session, every frame cut down to the symbols it
subscribed to, with `{"type":"ping"}` every `ping_interval_s`. `GET /api/v1/stock/candle` (the
key as `token=` or in `X-Finnhub-Token`) answers candles folded from the same recording, and
`{"s":"no_data"}` where it holds none. With `live_times` each pass of the recording is moved to
the wall clock, as a live feed's would be.

Tests and `make up` (without keys) use it; run as a module, it accepts the key in
MS_FINNHUB_API_KEY or FINNHUB_API_KEY, else `fake-finnhub-key`. The switches (`revoke_keys`,
`go_silent`, `drop_connections`, `inject`, `rate_limit`) play the failures real feeds have.

    python -m connectors.fakes.finnhub --port 8771
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connectors.fakes import fake_parser, serve_until_interrupted
from connectors.fakes.serving import WebSocketFake

log = logging.getLogger(__name__)

RECORDING: Final = Path(__file__).parent / "data" / "finnhub_trades.jsonl"
API_KEY: Final = "fake-finnhub-key"
CANDLE_SECONDS: Final = {"1": 60, "5": 300, "15": 900, "30": 1800, "60": 3600, "D": 86_400}
PING: Final = orjson.dumps({"type": "ping"}).decode()
INVALID_KEY: Final = {"error": "Invalid API key."}
RATE_LIMITED: Final = {"error": "API limit reached. Please try again later. Remaining Limit: 0"}


def load_recording(path: Path = RECORDING) -> list[dict[str, Any]]:
    """The recorded frames, each a `{"data":[trades],"type":"trade"}` message, in order."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def fold_candles(
    frames: Iterable[dict[str, Any]], symbol: str, resolution: str, start_s: int, end_s: int
) -> dict[str, Any]:
    """Finnhub's /stock/candle answer from recorded trades: the candles of `symbol` whose start
    (UNIX seconds, a multiple of the resolution; UTC days for D) lies in [start_s, end_s]."""
    width = CANDLE_SECONDS[resolution]
    trades = sorted(
        (t for frame in frames for t in frame["data"] if t["s"] == symbol), key=lambda t: t["t"]
    )
    candles: dict[int, list[float]] = {}  # start -> open, high, low, close, volume
    for trade in trades:
        start = trade["t"] // 1000 // width * width
        if not start_s <= start <= end_s:
            continue
        price, size = trade["p"], trade["v"]
        if (candle := candles.get(start)) is None:
            candles[start] = [price, price, price, price, size]
        else:
            candle[1] = max(candle[1], price)
            candle[2] = min(candle[2], price)
            candle[3] = price
            candle[4] += size
    if not candles:
        return {"s": "no_data"}
    rows = [candles[start] for start in sorted(candles)]
    return {
        "c": [r[3] for r in rows],
        "h": [r[1] for r in rows],
        "l": [r[2] for r in rows],
        "o": [r[0] for r in rows],
        "s": "ok",
        "t": sorted(candles),
        "v": [r[4] for r in rows],
    }


def _json(status: HTTPStatus, body: object, headers: Iterable[tuple[str, str]] = ()) -> Response:
    data = orjson.dumps(body)
    fields = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(data))),
        ("Connection", "close"),
        *headers,
    ]
    return Response(status.value, status.phrase, Headers(fields), data)


@dataclass(eq=False)
class _Session:
    socket: ServerConnection
    subscribed: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeFinnhub(WebSocketFake):
    """The fake Finnhub; `start` binds it (port 0: any free port) and returns the port.

    `speed` paces frames by their recorded times (2: twice as fast; None: no waiting). A session's
    replay starts once it has subscribed to every symbol of `replay_when_subscribed` (empty: at
    its first subscription), so that a test knows which frames it gets.
    """

    def __init__(
        self,
        frames: list[dict[str, Any]] | None = None,
        *,
        speed: float | None = None,
        live_times: bool = False,
        loop: bool = False,
        ping_interval_s: float = 30.0,
        replay_when_subscribed: Iterable[str] = (),
        api_key: str = API_KEY,
    ) -> None:
        self.frames = load_recording() if frames is None else frames
        self.speed = speed
        self.live_times = live_times
        self.loop = loop
        self.ping_interval_s = ping_interval_s
        self.replay_when_subscribed = frozenset(replay_when_subscribed)
        self.api_key = api_key
        self.keys_valid = True
        self.drop_after_frames: int | None = None
        self.retry_after_s: int | None = None
        self.rate_limited = False
        self.sessions: set[_Session] = set()
        self.connections = 0  # WebSocket sessions accepted so far
        self.refused = 0  # handshakes and requests refused for their key
        self._scheduled: dict[int, list[bytes | str]] = {}
        self._audible = asyncio.Event()
        self._audible.set()

    @property
    def url(self) -> str:
        """The WebSocket URL, without the token."""
        host, port = self.address
        return f"ws://{host}:{port}"

    @property
    def rest_url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/api/v1"

    # switches

    async def revoke_keys(self) -> None:
        """The key stops working: sessions are dropped, handshakes and requests get HTTP 401."""
        self.keys_valid = False
        await self.drop_connections()

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) sending anything, pings included, while every socket stays open."""
        if silent:
            self._audible.clear()
        else:
            self._audible.set()

    async def drop_connections(self, *, after_frames: int | None = None) -> None:
        """Close sockets without a close frame, as a network failure would: every session now,
        or, with `after_frames`, each session (later ones too) once it has replayed that many
        frames of the recording. What was sent before is delivered first."""
        if after_frames is not None:
            self.drop_after_frames = after_frames
            return
        for session in list(self.sessions):
            await self._abort(session)

    async def inject(self, payload: bytes | str, *, after_frames: int | None = None) -> None:
        """Send a raw frame as is (str: text, bytes: binary) to every session now, or, with
        `after_frames`, to each session (later ones too) after that many recorded frames."""
        if after_frames is not None:
            self._scheduled.setdefault(after_frames, []).append(payload)
            return
        for session in list(self.sessions):
            with contextlib.suppress(ConnectionClosed):
                await session.socket.send(payload)

    def rate_limit(self, limited: bool = True, *, retry_after_s: int | None = None) -> None:
        """Answer REST requests with HTTP 429 (and Retry-After, if given) until called with False."""
        self.rate_limited = limited
        self.retry_after_s = retry_after_s

    # HTTP: the handshake's key, and the REST API

    def _key_valid(self, token: str) -> bool:
        return self.keys_valid and token == self.api_key

    def answer_http(self, socket: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        if parts.path.startswith("/api/v1/"):
            return self._rest(parts.path, query, request.headers)
        if not self._key_valid(query.get("token", "")):
            self.refused += 1
            return _json(HTTPStatus.UNAUTHORIZED, INVALID_KEY)
        return None  # on to the WebSocket handshake

    def _rest(self, path: str, query: dict[str, str], headers: Headers) -> Response:
        if not self._key_valid(query.get("token") or headers.get("X-Finnhub-Token", "")):
            self.refused += 1
            return _json(HTTPStatus.UNAUTHORIZED, INVALID_KEY)
        if self.rate_limited:
            wait = [] if self.retry_after_s is None else [("Retry-After", str(self.retry_after_s))]
            return _json(HTTPStatus.TOO_MANY_REQUESTS, RATE_LIMITED, wait)
        if path != "/api/v1/stock/candle":
            return _json(
                HTTPStatus.NOT_FOUND, {"error": f"the fake serves /stock/candle, not {path}"}
            )
        try:
            symbol, resolution = query["symbol"], query["resolution"]
            start_s, end_s = int(query["from"]), int(query["to"])
        except (KeyError, ValueError) as exc:
            return _json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": f"bad parameters: {exc}"})
        if resolution not in CANDLE_SECONDS:
            known = ", ".join(CANDLE_SECONDS)
            return _json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": f"the fake folds {known}"})
        return _json(HTTPStatus.OK, fold_candles(self.frames, symbol, resolution, start_s, end_s))

    # WebSocket

    async def serve_connection(self, socket: ServerConnection) -> None:
        self.connections += 1
        session = _Session(socket)
        self.sessions.add(session)
        tasks = [
            asyncio.create_task(self._replay(session)),
            asyncio.create_task(self._ping(session)),
        ]
        try:
            async for message in socket:
                await self._on_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            self.sessions.discard(session)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def _on_message(self, session: _Session, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        kind = request.get("type") if isinstance(request, dict) else None
        symbol = request.get("symbol") if isinstance(request, dict) else None
        if kind not in ("subscribe", "unsubscribe") or not isinstance(symbol, str):
            error = {"msg": "Invalid message", "type": "error"}
            await session.socket.send(orjson.dumps(error).decode())
            return
        if kind == "subscribe":
            session.subscribed.add(symbol)
        else:
            session.subscribed.discard(symbol)
        session.changed.set()

    def _ready(self, session: _Session) -> bool:
        if self.replay_when_subscribed:
            return self.replay_when_subscribed <= session.subscribed
        return bool(session.subscribed)

    async def _replay(self, session: _Session) -> None:
        """Send the recording's frames, each cut down to the subscription, pass after pass if
        looping; injections and drops happen between frames, counted over every pass."""
        while not self._ready(session):
            await session.changed.wait()
            session.changed.clear()
        sent = 0
        clock = asyncio.get_running_loop()
        while True:
            first_ms = (
                min((t["t"] for t in self.frames[0]["data"]), default=0) if self.frames else 0
            )
            shift_ms = time.time_ns() // 1_000_000 - first_ms if self.live_times else 0
            started = clock.time()
            for frame in self.frames:
                if self.speed is None:
                    await asyncio.sleep(0)  # let the other sessions and the pings have a turn
                elif frame["data"]:  # sent once its last trade has happened
                    last_ms = max(t["t"] for t in frame["data"])
                    due = started + (last_ms - first_ms) / 1000 / self.speed
                    await asyncio.sleep(max(0.0, due - clock.time()))
                await self._audible.wait()
                for payload in self._scheduled.get(sent, []):
                    await session.socket.send(payload)
                trades = [
                    t | {"t": t["t"] + shift_ms}
                    for t in frame["data"]
                    if t["s"] in session.subscribed
                ]
                if trades:
                    await session.socket.send(
                        orjson.dumps({"data": trades, "type": "trade"}).decode()
                    )
                sent += 1
                if self.drop_after_frames is not None and sent >= self.drop_after_frames:
                    await self._abort(session)
                    return
            if not self.loop:
                for payload in self._scheduled.get(sent, []):
                    await session.socket.send(payload)
                return  # the recording is over: a quiet market, pings only

    async def _ping(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            await self._audible.wait()
            await session.socket.send(PING)

    @staticmethod
    async def _abort(session: _Session) -> None:
        """Close the TCP connection without a close frame, once what was sent has left."""
        transport = session.socket.transport
        while transport.get_write_buffer_size() and not transport.is_closing():
            await asyncio.sleep(0.001)
        transport.abort()


async def _main(args: argparse.Namespace) -> None:
    # The key it accepts: the connector's (MS_FINNHUB_API_KEY, else FINNHUB_API_KEY), as
    # `make up` sets it for both sides, else the fixed fake one, which alone is shown.
    key = os.environ.get("MS_FINNHUB_API_KEY") or os.environ.get("FINNHUB_API_KEY") or API_KEY
    fake = FakeFinnhub(
        load_recording(args.data),
        speed=args.speed or None,
        live_times=not args.recorded_times,
        loop=not args.once,
        ping_interval_s=args.ping_interval_s,
        api_key=key,
    )
    await fake.start(args.host, args.port)
    shown = key if key == API_KEY else "***"
    print(f"fake Finnhub: WebSocket {fake.url}/?token={shown}, REST {fake.rest_url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = fake_parser("Finnhub", "connectors.fakes.finnhub", 8771, __doc__)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="1: recorded pace, 10: ten times faster, 0: max"
    )
    parser.add_argument(
        "--once", action="store_true", help="replay the recording once, not in a loop"
    )
    parser.add_argument(
        "--recorded-times", action="store_true", help="keep the recorded trade times"
    )
    parser.add_argument("--ping-interval-s", type=float, default=30.0)
    parser.add_argument("--data", type=Path, default=RECORDING, help="recorded frames, JSON Lines")
    args = parser.parse_args()
    serve_until_interrupted(_main(args))


if __name__ == "__main__":
    main()
