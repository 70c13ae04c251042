"""The fake Alpaca stream of the providers scenario, in a process of its own.

`python -m benchmarks.providers_fake --recording FRAMES.jsonl [--payloads FRAMES.msgpack]
--url-file PATH` serves connectors.fakes.alpaca's FakeAlpaca on 127.0.0.1 (any free port),
writes its URL to PATH once it listens, and runs until SIGTERM.

Replaying as shipped, the fake converts every message's time twice (RFC 3339 to nanoseconds
and back, then to a MessagePack timestamp) while it sends, a cost of its own per trade that
caps what any client can receive. With `--payloads`, the frames are the bytes that very fake
sent for this recording, captured beforehand (`capture_payloads`), and are sent as they are to
a MessagePack session subscribed to the trades of every symbol in the recording; any other
session is replayed as shipped. Connecting, auth and subscribing are the fake's own either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgpack
import websockets

from connectors.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca, _Session, load_recording
from shared.errors import DeliveryError

log = logging.getLogger(__name__)

CAPTURE_TIMEOUT_S: Final = 600.0


def symbols_of(frames: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The symbols the recording's trades name, in order of first appearance."""
    return list(dict.fromkeys(m["S"] for frame in frames for m in frame if m.get("T") == "t"))


async def capture_payloads(frames: list[list[dict[str, Any]]]) -> list[bytes]:
    """Return the MessagePack frames FakeAlpaca sends for `frames` to a client subscribed to the
    trades of every symbol in them, in order; raise DeliveryError if it sends fewer."""
    symbols = symbols_of(frames)
    expected = sum(1 for frame in frames if any(m.get("T") == "t" for m in frame))
    payloads: list[bytes] = []
    async with (
        FakeAlpaca(frames, frame_interval_s=0.0, live_times=False) as fake,
        websockets.connect(
            fake.url, additional_headers={"Content-Type": "application/msgpack"}, max_size=2**24
        ) as socket,
    ):
        await socket.recv()  # connected
        await socket.send(msgpack.packb({"action": "auth", "key": KEY_ID, "secret": SECRET_KEY}))
        await socket.recv()  # authenticated
        await socket.send(msgpack.packb({"action": "subscribe", "trades": symbols}))
        async with asyncio.timeout(CAPTURE_TIMEOUT_S):
            while len(payloads) < expected:
                payload = await socket.recv()
                assert isinstance(payload, bytes), "a MessagePack session gets binary frames"
                if any(m.get("T") == "t" for m in msgpack.unpackb(payload)):
                    payloads.append(payload)  # not the subscription's confirmation
    if len(payloads) != expected:
        raise DeliveryError(f"the fake sent {len(payloads)} frames of {expected}")
    return payloads


def write_payloads(payloads: list[bytes], path: Path) -> None:
    path.write_bytes(msgpack.packb(payloads))


def read_payloads(path: Path) -> list[bytes]:
    payloads: list[bytes] = msgpack.unpackb(path.read_bytes())
    return payloads


class CapturedFakeAlpaca(FakeAlpaca):
    """FakeAlpaca that sends captured frames, as they are, to a MessagePack session subscribed to
    the trades of every symbol of the recording; it replays any other session as shipped."""

    def __init__(self, frames: list[list[dict[str, Any]]], payloads: list[bytes]) -> None:
        super().__init__(frames, frame_interval_s=0.0, live_times=False)
        self.payloads = payloads
        self.symbols = frozenset(symbols_of(frames))

    async def _replay(self, session: _Session) -> None:
        while self.silent or not session.subscribed:
            await asyncio.sleep(0.01)
        trades = session.subscribed.get("trades", set())
        if not session.msgpack or not ("*" in trades or self.symbols <= trades):
            await super()._replay(session)
            return
        for payload in self.payloads:
            await session.socket.send(payload)
            await asyncio.sleep(0)
        await asyncio.Event().wait()  # the recording is over: a quiet market


async def serve(args: argparse.Namespace) -> None:
    frames = load_recording(args.recording)
    if args.payloads is not None:
        fake: FakeAlpaca = CapturedFakeAlpaca(frames, read_payloads(args.payloads))
    else:
        fake = FakeAlpaca(frames, frame_interval_s=0.0, live_times=False)
    fake.compression = None if args.compression == "none" else "deflate"
    await fake.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    args.url_file.write_text(fake.url)
    log.info("fake Alpaca on %s, %d frames", fake.url, len(frames))
    started = time.monotonic()
    await stopping.wait()
    elapsed_s = time.monotonic() - started
    log.info("fake Alpaca stopping after %.1f s, %d connections", elapsed_s, fake.connections)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await fake.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.providers_fake", description=__doc__
    )
    parser.add_argument("--recording", type=Path, required=True, help="frames, JSON Lines")
    parser.add_argument("--payloads", type=Path, default=None, help="captured frames, MessagePack")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write the URL")
    parser.add_argument(
        "--compression", choices=("deflate", "none"), default="deflate", help="permessage-deflate"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
