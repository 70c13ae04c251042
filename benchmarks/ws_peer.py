"""The naive peer of the `ws` scenario: per bar, `await ws.send(json)` to each client in turn.

`python -m benchmarks.ws_peer --bootstrap HOST:PORT --port PORT`

A `websockets` server that reads md.bars.v1 with aiokafka (every partition, no group), decodes
each bar with our codec, encodes it once as JSON and awaits one send per subscribed client, in
turn: one WebSocket message per bar per client, no batching, no queues. A slow client therefore
holds up every other client and the consumer, and the backlog stays in Kafka. Clients speak the
gateway's protocol (subscribe to channels or `bars.<interval>.*`, ping); /health answers 200
once the consumer is assigned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import logging
import resource
import signal
import sys

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from shared.cli import configure_logging
from shared.codec import Codec
from shared.schema_ids import CommittedSchemas
from shared.topics import BARS

log = logging.getLogger("benchmarks.ws_peer")


def raise_nofile_limit() -> None:
    """Raise this process's open-file soft limit to its hard limit (many sockets)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class NaivePeer:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.codec = Codec(CommittedSchemas())
        self.clients: dict[ServerConnection, set[str]] = {}
        self.ready = asyncio.Event()

    async def handle(self, ws: ServerConnection) -> None:
        """Answer subscribe/unsubscribe/ping; the consumer loop does the sending."""
        channels: set[str] = set()
        try:
            async for raw in ws:
                try:
                    request = orjson.loads(raw)
                    op = request["op"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    await ws.send('[{"type":"error","code":"bad_request"}]')
                    continue
                if op == "subscribe":
                    channels.update(request["channels"])
                    self.clients[ws] = channels
                    reply = {"type": "subscribed", "channels": sorted(channels)}
                    await ws.send(orjson.dumps([reply]).decode())
                elif op == "unsubscribe":
                    channels.difference_update(request["channels"])
                elif op == "ping":
                    await ws.send('[{"type":"pong"}]')
        except ConnectionClosed:
            pass
        finally:
            self.clients.pop(ws, None)

    async def http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/health":
            return None
        if self.ready.is_set():
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "starting\n")

    async def fan_out(self) -> None:
        """Read every bar and send it to every subscriber, one awaited send at a time."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(BARS)
            while not partitions:
                await asyncio.sleep(0.1)
                await consumer.topics()
                partitions = consumer.partitions_for_topic(BARS)
            consumer.assign([TopicPartition(BARS, p) for p in sorted(partitions)])
            self.ready.set()
            async for msg in consumer:
                bar = self.codec.decode_bar(msg.value or b"")
                channel = f"bars.{bar.interval}.{bar.instrument}"
                wildcard = f"bars.{bar.interval}.*"
                data = orjson.dumps(
                    {
                        "type": "bar",
                        "channel": channel,
                        "seq": bar.seq,
                        "revision": bar.revision,
                        "bar": bar,
                    }
                ).decode()
                for ws, channels in list(self.clients.items()):
                    if channel in channels or wildcard in channels:
                        try:
                            await ws.send(data)
                        except ConnectionClosed:
                            self.clients.pop(ws, None)
        finally:
            await consumer.stop()


async def run(bootstrap: str, host: str, port: int) -> None:
    peer = NaivePeer(bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        peer.handle,
        host,
        port,
        process_request=peer.http,
        compression=None,
        max_size=65_536,
        close_timeout=2,
        ping_interval=20,
        ping_timeout=20,
        backlog=1024,
    ):
        fan_out = asyncio.create_task(peer.fan_out())
        done, _ = await asyncio.wait(
            [fan_out, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if fan_out in done:
            fan_out.result()  # raises what stopped the consumer
        fan_out.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fan_out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_peer")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    raise_nofile_limit()
    asyncio.run(run(args.bootstrap, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
