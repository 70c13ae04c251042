"""Client load of the `ws` scenario: many WebSocket subscribers in one process, counted cheaply.

`python -m benchmarks.ws_clients --url ws://127.0.0.1:PORT --connections N --out PATH [...]`

Each connection is a bare asyncio Protocol, on uvloop, that speaks just enough RFC 6455 for a
subscriber: the opening handshake (Sec-WebSocket-Accept checked), unmasked server frames
(fragments joined), pong for every ping, close. Per message it counts events with two substring
counts, in place and with no JSON parsing, unless the message holds something other than bench
bars of one phase (then it is parsed). Every `--sample-every`-th connection also reads the
`ts_recv_us` of every bar event of each such message, to record its latency. The clients share
the machine with the server under test, so what they cost per message is CPU the server does not
get: hence uvloop, whose reads cost a fraction of asyncio's, and no copy or parse per message.

Latency of an event: this process's wall clock when the message's bytes arrived (time.time_ns
at data_received) minus the bar's `ts_recv_us` (set by the publisher just before producing it).
The max is over every message of every connection, from the first bar event of the message (the
oldest queued).

Control, one line each way on stdin/stdout: this process prints `ready <subscribed> <failed>`
once every connection has its pong after subscribing; `count` answers
`count <warm> <measured> <last_measured_us> <closed>`; `stop` or end of input writes the
results (JSON at --out, latencies as int64 micros at --out + ".lat") and prints `done`.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import orjson
import uvloop

WARM: Final = "wsbench-w"
MEASURED: Final = "wsbench-m"
_WARM_MARK: Final = b'"source":"wsbench-w"'
_MEASURED_MARK: Final = b'"source":"wsbench-m"'
_EVENT: Final = b'{"type":"'
_TS_RECV: Final = re.compile(rb'"ts_recv_us":(\d+)')
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Stats:
    """What every connection of this process received, summed; latencies of sampled ones."""

    def __init__(self) -> None:
        self.warm = 0
        self.measured = 0
        self.frames = 0
        self.bytes = 0
        self.max_latency_us = 0
        self.first_us = 0
        self.last_us = 0
        self.resyncs = 0
        self.errors = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.latencies_us = array.array("q")


def _events(body: Any) -> list[Any]:
    return body if isinstance(body, list) else [body]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """Return a masked client frame (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65_536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + masked


class Subscriber(asyncio.Protocol):
    """One connection: handshake, subscribe, ping; then count what arrives."""

    def __init__(
        self, host: str, port: int, path: str, key: str, request: bytes, stats: Stats, sampled: bool
    ) -> None:
        self.stats = stats
        self.sampled = sampled
        self.request = request
        self.nonce = base64.b64encode(os.urandom(16))
        headers = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.nonce.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if key:
            headers.append(f"X-API-Key: {key}")
        self.handshake = ("\r\n".join(headers) + "\r\n\r\n").encode()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: list[bytes] = []
        self.have = 0
        self.need = 0
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.measured = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.stats.closed += 1
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"connection lost: {exc}"))

    def _upgrade(self, data: bytes) -> bytes | None:
        """Consume the handshake response; return the bytes after it, None while incomplete."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.chunks, self.have, self.need = [data], len(data), len(data) + 1
            return None
        head, rest = data[:end], data[end + 4 :]
        accept = base64.b64encode(hashlib.sha1(self.nonce + _GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            error = ConnectionError(f"handshake refused: {head[:200]!r}")
            if not self.subscribed.done():
                self.subscribed.set_exception(error)
            assert self.transport is not None
            self.transport.close()
            return None
        self.upgraded = True
        assert self.transport is not None
        self.transport.write(client_frame(0x1, self.request) + client_frame(0x1, b'{"op":"ping"}'))
        return rest

    def data_received(self, data: bytes) -> None:
        if self.chunks:
            self.chunks.append(data)
            self.have += len(data)
            if self.have < self.need:
                return
            data = b"".join(self.chunks)
            self.chunks, self.have, self.need = [], 0, 0
        if not self.upgraded:
            rest = self._upgrade(data)
            if not rest:
                return
            data = rest
        now_us = time.time_ns() // 1000
        pos, n = 0, len(data)
        while pos < n:
            need = head = 2  # bytes from pos needed to go on: header first, then the frame
            if n - pos >= 2:
                length = data[pos + 1] & 0x7F
                head = 2
                if length == 126:
                    head = need = 4
                    if n - pos >= 4:
                        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                elif length == 127:
                    head = need = 10
                    if n - pos >= 10:
                        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if n - pos >= head:
                    need = head + length
            if n - pos < need:
                self.chunks, self.have, self.need = [data[pos:]], n - pos, need
                return
            end = pos + need
            if data[pos] == 0x81:  # a whole text message, the usual case: read in place
                self._message(data, pos + head, end, now_us)
            else:
                self._frame(data[pos], data[pos + head : end], now_us)
            pos = end

    def _frame(self, first: int, payload: bytes, now_us: int) -> None:
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == 0x0:
            self.fragments.append(payload)
            if not fin:
                return
            payload, opcode, self.fragments = b"".join(self.fragments), self.fragment_opcode, []
        elif opcode in (0x1, 0x2) and not fin:
            self.fragments, self.fragment_opcode = [payload], opcode
            return
        if opcode in (0x1, 0x2):
            self._message(payload, 0, len(payload), now_us)
        elif opcode == 0x9:
            assert self.transport is not None
            self.transport.write(client_frame(0xA, payload))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.stats.close_codes[code] = self.stats.close_codes.get(code, 0) + 1
            assert self.transport is not None
            with contextlib.suppress(Exception):
                self.transport.write(client_frame(0x8, payload[:2]))
            self.transport.close()

    def _message(self, data: bytes, start: int, end: int, now_us: int) -> None:
        """Count the events of the message in data[start:end], without copying it: two
        substring counts when it holds bench bars only."""
        events = data.count(_EVENT, start, end)
        measured = data.count(_MEASURED_MARK, start, end)
        if measured and measured == events:
            stats = self.stats
            stats.measured += measured
            self.measured += measured
            stats.frames += 1
            stats.bytes += end - start
            match = _TS_RECV.search(data, start, end)
            if match is not None:
                latency = now_us - int(match.group(1))
                if latency > stats.max_latency_us:
                    stats.max_latency_us = latency
            if now_us > stats.last_us:
                stats.last_us = now_us
            if not stats.first_us:
                stats.first_us = now_us
            if self.sampled:  # every event is a bench bar, with one ts_recv_us each
                append = stats.latencies_us.append
                for ts in _TS_RECV.findall(data, start, end):
                    append(now_us - int(ts))
            return
        if not measured:
            warm = data.count(_WARM_MARK, start, end)
            if warm and warm == events:
                self.stats.warm += warm
                return
        self._parse(data[start:end], now_us)

    def _parse(self, payload: bytes, now_us: int) -> None:
        """The slow path: anything but bench bars of one phase (replies, resyncs, snapshots)."""
        stats = self.stats
        measured = 0
        for event in _events(orjson.loads(payload)):
            kind = event.get("type")
            if kind == "bar":
                bar = event["bar"]
                if bar.get("source") != MEASURED:
                    stats.warm += bar.get("source") == WARM
                    continue
                measured += 1
                latency = now_us - bar["ts_recv_us"]
                stats.max_latency_us = max(stats.max_latency_us, latency)
                if self.sampled:
                    stats.latencies_us.append(latency)
            elif kind == "pong":
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif kind == "lagging":
                stats.resyncs += 1
            elif kind == "error":
                stats.errors += 1
        if measured:
            stats.measured += measured
            self.measured += measured
            stats.frames += 1
            stats.bytes += len(payload)
            stats.last_us = max(stats.last_us, now_us)
            stats.first_us = stats.first_us or now_us


SubscriberT = TypeVar("SubscriberT", bound=Subscriber)


def raise_nofile_limit() -> None:
    """Raise this process's open-file soft limit to its hard limit (many sockets)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def connect(
    make: Callable[[], SubscriberT],
    host: str,
    port: int,
    gate: asyncio.Semaphore,
    subscribe_timeout: float,
) -> SubscriberT:
    """Connect a subscriber `make` builds and wait for the pong that follows its
    subscription; retry twice."""
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        async with gate:
            protocol: SubscriberT | None = None
            try:
                _, protocol = await loop.create_connection(make, host, port)
                await asyncio.wait_for(protocol.subscribed, subscribe_timeout)
                return protocol
            except (OSError, TimeoutError):
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.abort()
                    protocol.closed = True
                if attempt == 2:
                    raise
        await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


async def _open(
    args: argparse.Namespace, index: int, stats: Stats, gate: asyncio.Semaphore
) -> Subscriber:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = orjson.dumps(
        {"op": "subscribe", "channels": args.channels.split(","), "snapshot": args.snapshot}
    )
    sampled = index % args.sample_every == 0
    return await connect(
        lambda: Subscriber(host, port, url.path or "/", args.api_key, request, stats, sampled),
        host,
        port,
        gate,
        args.subscribe_timeout,
    )


def _connection_counts(subscribers: list[Subscriber]) -> dict[str, Any]:
    counts = sorted(s.measured for s in subscribers)
    if not counts:
        return {}
    return {
        "min": counts[0],
        "median": counts[len(counts) // 2],
        "max": counts[-1],
        "zero": sum(1 for c in counts if c == 0),
    }


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def answer_commands(
    answer: Callable[[str], str | None], max_seconds: float, subscribers: Sequence[Subscriber]
) -> None:
    """Print `answer(command)` (when not None) for each command line on stdin, until `stop`,
    the end of stdin or `max_seconds`; then drop every connection still open."""
    reader = await _stdin()
    deadline = time.monotonic() + max_seconds
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
        command = line.decode().strip()
        if command == "stop" or not line:
            break
        if (reply := answer(command)) is not None:
            print(reply, flush=True)
    for s in subscribers:
        if s.transport is not None and not s.closed:
            s.closed = True  # ours, not the server's
            s.transport.abort()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    gate = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(_open(args, i, stats, gate) for i in range(args.connections)), return_exceptions=True
    )
    subscribers = [s for s in opened if isinstance(s, Subscriber)]
    failures = [repr(e) for e in opened if isinstance(e, BaseException)]
    connect_s = time.perf_counter() - started
    print(f"ready {len(subscribers)} {len(failures)}", flush=True)

    def answer(command: str) -> str | None:
        if command == "count":
            return f"count {stats.warm} {stats.measured} {stats.last_us} {stats.closed}"
        return None

    await answer_commands(answer, args.max_seconds, subscribers)
    return {
        "connections": args.connections,
        "subscribed": len(subscribers),
        "failed": len(failures),
        "failures": failures[:5],
        "connect_seconds": connect_s,
        "sampled_connections": sum(1 for s in subscribers if s.sampled),
        "warm": stats.warm,
        "measured": stats.measured,
        "frames": stats.frames,
        "bytes": stats.bytes,
        "max_latency_us": stats.max_latency_us,
        "first_us": stats.first_us,
        "last_us": stats.last_us,
        "resyncs": stats.resyncs,
        "errors": stats.errors,
        "closed": stats.closed,
        "close_codes": stats.close_codes,
        "per_connection": _connection_counts(subscribers),
        "latencies": len(stats.latencies_us),
        "_latencies": stats.latencies_us,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_clients")
    parser.add_argument("--url", required=True, help="ws://host:port/")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--channels", default="bars.1s.*", help="comma-separated channels")
    parser.add_argument("--snapshot", type=int, default=0, help="bars of snapshot per channel")
    parser.add_argument("--api-key", default="", help="sent as X-API-Key")
    parser.add_argument("--sample-every", type=int, default=10, help="parse 1 connection in N")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--subscribe-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    result = uvloop.run(run(args))
    latencies = result.pop("_latencies")
    with open(f"{args.out}.lat", "wb") as out:
        latencies.tofile(out)
    args.out.write_text(json.dumps(result))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
