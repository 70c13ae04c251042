"""Our path of the providers scenario, in a process of its own: AlpacaConnector into Kafka.

`python -m benchmarks.providers_ours --url URL --bootstrap HOST:PORT --topic T --trades N
--symbols A,B,... --out PATH`, with the key in ALPACA_API_KEY and ALPACA_SECRET_KEY (the names
AlpacaConfig reads, as in production).

The connector runs as `python -m connectors run alpaca` runs it: MessagePack frames, its stale
watchdog, the ConnectorRunner with the default KafkaSettings (batching per partition, linger,
acks=all, idempotence), topic `T` instead of md.trades.v1. The clock starts as the runner
starts (before the connector connects) and stops at the delivery report that makes `--trades`
trades acknowledged by Kafka. The timings, RSS, CPU time and what went to Kafka go to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np
import orjson

from benchmarks.common import peak_rss_mb, reset_peak_rss, rss_mb
from connectors.alpaca import AlpacaConfig, AlpacaConnector
from connectors.alpaca_frames import decode_frame
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.models import TradeBatch
from shared.publisher import OnAck, Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

WAIT_POLL_S: Final = 0.002


class CountingPublisher(Publisher):
    """A Publisher that counts what it sends and calls `after_ack` after every acknowledgement."""

    def __init__(self, config: dict[str, object]) -> None:
        super().__init__(config)
        self.messages = 0
        self.value_bytes = 0
        self.after_ack: OnAck = lambda: None

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_ack: OnAck | None = None,
    ) -> None:
        def acked() -> None:
            if on_ack is not None:
                on_ack()
            self.after_ack()

        super().produce(topic, value, key=key, partition=partition, on_ack=acked)
        self.messages += 1
        self.value_bytes += len(value)


def _warm_up(codec: Codec) -> None:
    """Compile and load what the first frame would otherwise pay for (not timed)."""
    message = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 172.8, "s": 100, "c": ["@"]}
    payload = msgpack.packb([message | {"t": msgpack.Timestamp.from_unix_nano(10**18)}])
    frame = decode_frame(payload, "alpaca", time.time_ns() // 1000)
    assert isinstance(frame.trades, TradeBatch)
    codec.decode_trade_batch(codec.encode_trade_batch(frame.trades))
    codec.encode_trade_batch(TradeBatch.heartbeat("alpaca", time.time_ns() // 1000))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the connector until Kafka has acknowledged `--trades` trades (or the timeout)."""
    codec = Codec(CommittedSchemas())
    kafka = KafkaSettings.model_validate({"bootstrap": args.bootstrap})
    publisher = CountingPublisher(kafka.producer_config("marketstream-bench-providers"))
    partitions = publisher.partitions(args.topic)  # as the connector process does, before it runs
    # The key from ALPACA_API_KEY / ALPACA_SECRET_KEY, as the connector process reads it.
    config = AlpacaConfig.model_validate(
        {"url": args.url, "symbols": args.symbols, "feed": "iex", "encoding": "msgpack"}
    )
    runner = ConnectorRunner(
        AlpacaConnector(config),
        publisher,
        codec,
        partitions=partitions,
        batch_max_trades=kafka.batch_max_trades,
        linger_ms=kafka.linger_ms,
        topic=args.topic,
    )
    done_at: float | None = None

    def note_done() -> None:
        nonlocal done_at
        if done_at is None and runner.summary.published >= args.trades:
            done_at = time.perf_counter()

    publisher.after_ack = note_done
    _warm_up(codec)
    reset_peak_rss()
    rss_before = rss_mb()
    cpu_before = time.process_time()
    started = time.perf_counter()
    task = asyncio.create_task(runner.run())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.timeout_s):
            while done_at is None and not task.done():
                await asyncio.sleep(WAIT_POLL_S)
    ended = time.perf_counter()
    cpu_s = time.process_time() - cpu_before
    rss_peak = peak_rss_mb()
    runner.stop()
    summary = await task
    return {
        "trades": summary.published,
        "seconds": (done_at or ended) - started,
        "complete": done_at is not None and summary.published == args.trades,
        "cpu_s": cpu_s,
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
        "kafka": {
            "messages": publisher.messages,
            "trade_batches": summary.batches,
            "value_bytes": publisher.value_bytes,
            "partitions": partitions,
            "batch_max_trades": kafka.batch_max_trades,
            "linger_ms": kafka.linger_ms,
            "rejected": summary.rejected,
        },
        "versions": {"numpy": np.__version__, "msgpack": ".".join(map(str, msgpack.version))},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.providers_ours", description=__doc__)
    parser.add_argument("--url", required=True, help="the fake's stream URL")
    parser.add_argument("--bootstrap", required=True, help="the broker")
    parser.add_argument("--topic", required=True, help="the topic the trade batches go to")
    parser.add_argument("--trades", type=int, required=True, help="trades the recording holds")
    parser.add_argument("--symbols", required=True, help="comma-separated symbols to subscribe")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up after this")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = asyncio.run(measure(args))
    args.out.write_bytes(orjson.dumps(result))
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
