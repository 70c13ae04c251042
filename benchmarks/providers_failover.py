"""Part (b) of the providers scenario: how long a revoked primary key takes to fail over.

Each trial gets fresh fakes on 127.0.0.1, Finnhub as the primary and Alpaca as the backup, both
replaying the same seeded market at its recorded pace with live times (each pass moved to the
wall clock), and a fresh topic. FailoverConnector, with FailoverConfig's defaults but for an
`open_s` longer than a trial (the primary's probe never runs), goes through ConnectorRunner as
it ships into that topic, which a consumer thread reads from the start, noting when each batch
arrives and which provider served it. Once the primary's trades are on Kafka and the backup's
are arriving at the failover, and a warm-up has passed (`--failover-warmup-s` plus a seeded
uniform jitter of up to `--failover-jitter-s`, so that the revocation falls at any phase of the
failover's reselection tick and of the fakes' frames), the primary's key is revoked
(`FakeFinnhub.revoke_keys`: its sessions are dropped and every handshake after is refused with
HTTP 401). The trial ends at the first batch with provider "alpaca" consumed from the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from benchmarks import common
from benchmarks.common import PathResult
from benchmarks.providers_data import draw_trades, paced_alpaca_frames, paced_finnhub_frames
from connectors.alpaca import AlpacaConfig, AlpacaConnector
from connectors.failover import FailoverConfig, FailoverConnector
from connectors.fakes import alpaca as fake_alpaca
from connectors.fakes import finnhub as fake_finnhub
from connectors.finnhub import FinnhubConfig, FinnhubConnector
from connectors.health import BreakerState
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.publisher import Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import KafkaSettings
from shared.topics import TRADES, all_topics

log = logging.getLogger(__name__)

NAME: Final = "failover"
PRIMARY: Final = "finnhub"
BACKUP: Final = "alpaca"
DESCRIPTION: Final = (
    "FailoverConnector (finnhub, then alpaca) through ConnectorRunner as shipped, fake Finnhub "
    "and fake Alpaca at live pace with live times; key revoked to backup's first batch on Kafka"
)
LATENCY_OF: Final = "failover: key revoked to backup's first trade on Kafka"
WAIT_POLL_S: Final = 0.005
CONSUME_WAIT_S: Final = 0.05


class RefusalClock(fake_finnhub.FakeFinnhub):
    """FakeFinnhub that notes when it first refuses a key (time.monotonic())."""

    def __init__(self, frames: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(frames, **kwargs)
        self.first_refused_at: float | None = None

    def answer_http(self, connection: ServerConnection, request: Request) -> Response | None:
        refused = self.refused
        response = super().answer_http(connection, request)
        if self.refused > refused and self.first_refused_at is None:
            self.first_refused_at = time.monotonic()
        return response


@dataclass(slots=True)
class Arrival:
    at: float  # time.monotonic() when consumed
    provider: str | None
    trades: int
    value_bytes: int


@dataclass
class BatchWatch:
    """Read a topic from the start in a thread; note each trade batch's arrival and provider."""

    bootstrap: str
    topic: str
    codec: Codec
    arrivals: list[Arrival] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-providers-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        self._thread = threading.Thread(target=self._read, args=(consumer,), daemon=True)
        self._thread.start()

    def _read(self, consumer: Consumer) -> None:
        try:
            while not self._stopping.is_set():
                for message in consumer.consume(1000, CONSUME_WAIT_S):
                    at = time.monotonic()
                    value = message.value()
                    if message.error() is not None or value is None:
                        continue
                    batch = self.codec.decode_trade_batch(value)
                    if len(batch):
                        self.arrivals.append(Arrival(at, batch.provider, len(batch), len(value)))
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def first(self, provider: str, after: float = 0.0) -> Arrival | None:
        return next(
            (a for a in list(self.arrivals) if a.provider == provider and a.at > after), None
        )


def failover_config(args: argparse.Namespace, symbols: str) -> FailoverConfig:
    """FailoverConfig's defaults (and MS_FAILOVER_* as a process reads them) but the universe and
    `--open-s`."""
    return FailoverConfig.model_validate(
        {"symbols": symbols, "providers": f"{PRIMARY},{BACKUP}", "open_s": args.open_s}
    )


async def _until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(WAIT_POLL_S)


@dataclass(frozen=True, slots=True)
class Market:
    symbols: str
    alpaca_frames: list[list[dict[str, Any]]]
    finnhub_frames: list[dict[str, Any]]


def market(args: argparse.Namespace) -> Market:
    """The seeded market both fakes replay, one frame per `--failover-frame-interval-s`."""
    trades = draw_trades(
        max(1, round(args.failover_rate * args.failover_recording_s)),
        args.failover_instruments,
        args.seed + 1,
        rate=args.failover_rate,
    )
    interval_s = args.failover_frame_interval_s
    return Market(
        symbols=",".join(trades.symbols),
        alpaca_frames=paced_alpaca_frames(trades, interval_s),
        finnhub_frames=paced_finnhub_frames(trades, interval_s),
    )


async def _trial(
    args: argparse.Namespace,
    bootstrap: str,
    publisher: Publisher,
    codec: Codec,
    world: Market,
    warmup_s: float,
) -> dict[str, Any]:
    """Run one trial; return its timings (None where it did not get that far in time)."""
    kafka = KafkaSettings.model_validate({"bootstrap": bootstrap})
    spec = next(s for s in all_topics(args.partitions) if s.name == TRADES)
    topic = f"bench.providers.failover.{uuid.uuid4().hex[:8]}"
    common.create_topic(bootstrap, spec, topic, args.partitions)
    watch = BatchWatch(bootstrap, topic, codec)
    watch.start()
    finnhub = RefusalClock(world.finnhub_frames, speed=1.0, live_times=True, loop=True)
    alpaca = fake_alpaca.FakeAlpaca(
        world.alpaca_frames,
        frame_interval_s=args.failover_frame_interval_s,
        live_times=True,
        loop=True,
    )
    started = time.monotonic()
    revoked: float | None = None
    breaker_open: float | None = None
    moved: Arrival | None = None
    stats: dict[str, dict[str, Any]] = {}
    async with finnhub, alpaca:
        providers = {
            PRIMARY: FinnhubConnector(
                FinnhubConfig.model_validate(
                    {
                        "ws_url": finnhub.url,
                        "api_key": fake_finnhub.API_KEY,
                        "symbols": world.symbols,
                    }
                )
            ),
            BACKUP: AlpacaConnector(
                AlpacaConfig.model_validate(
                    {
                        "url": alpaca.url,
                        "symbols": world.symbols,
                        "key_id": fake_alpaca.KEY_ID,
                        "secret_key": fake_alpaca.SECRET_KEY,
                    }
                )
            ),
        }
        failover = FailoverConnector(failover_config(args, world.symbols), providers)
        runner = ConnectorRunner(
            failover,
            publisher,
            codec,
            partitions=args.partitions,
            batch_max_trades=kafka.batch_max_trades,
            linger_ms=kafka.linger_ms,
            topic=topic,
        )
        task = asyncio.create_task(runner.run())
        primary = failover.providers[PRIMARY]
        try:
            async with asyncio.timeout(args.failover_timeout_s):
                await _until(
                    lambda: watch.first(PRIMARY) and failover.providers[BACKUP].unserved
                )
                await asyncio.sleep(warmup_s)
                revoked = time.monotonic()
                await finnhub.revoke_keys()
                while (moved := watch.first(BACKUP, after=revoked)) is None:
                    if breaker_open is None and primary.breaker.state is not BreakerState.CLOSED:
                        breaker_open = time.monotonic()
                    await asyncio.sleep(WAIT_POLL_S)
                stats = failover.provider_stats()
        except TimeoutError:
            log.warning("failover trial timed out after %.1f s", args.failover_timeout_s)
        finally:
            runner.stop()
            await task
            watch.stop()

    def since(at: float | None, origin: float | None) -> float | None:
        return None if at is None or origin is None else at - origin

    before = [a for a in watch.arrivals if revoked is None or a.at <= revoked]
    return {
        "failover_s": since(moved.at if moved else None, revoked),
        "from_first_refusal_s": since(moved.at if moved else None, finnhub.first_refused_at),
        "revoked_to_first_refusal_s": since(finnhub.first_refused_at, revoked),
        "revoked_to_breaker_open_s": since(breaker_open, revoked),
        "warm_s_before_revoke": since(revoked, started),
        "backup_batches_before_revoke": sum(1 for a in before if a.provider == BACKUP),
        "trades": sum(a.trades for a in watch.arrivals),
        "batches": len(watch.arrivals),
        "value_bytes": sum(a.value_bytes for a in watch.arrivals),
        "seconds": time.monotonic() - started,
        "provider_stats_when_moved": stats,
    }


def measure_failover(args: argparse.Namespace, bootstrap: str) -> PathResult:
    """Run `--failover-trials` trials one after another; p50/p99 of the failover times."""
    codec = Codec(CommittedSchemas())
    kafka = KafkaSettings.model_validate({"bootstrap": bootstrap})
    publisher = Publisher(kafka.producer_config("marketstream-bench-providers-failover"))
    world = market(args)
    rng = random.Random(args.seed)
    trials = []
    for index in range(args.failover_trials):
        warmup_s = args.failover_warmup_s + rng.uniform(0.0, args.failover_jitter_s)
        trial = asyncio.run(_trial(args, bootstrap, publisher, codec, world, warmup_s))
        took = "timed out" if trial["failover_s"] is None else f"{trial['failover_s']:.3f} s"
        log.info("failover trial %d of %d: %s", index + 1, args.failover_trials, took)
        trials.append(trial)
    samples = [t["failover_s"] for t in trials if t["failover_s"] is not None]
    from_refusal = [t["from_first_refusal_s"] for t in trials if t["from_first_refusal_s"]]
    p50, p99 = common.percentiles_ms(samples)
    refusal_p50, refusal_p99 = common.percentiles_ms(from_refusal)
    return PathResult(
        name=NAME,
        description=DESCRIPTION,
        items=sum(t["trades"] for t in trials),
        messages=sum(t["batches"] for t in trials),
        wire_bytes=sum(t["value_bytes"] for t in trials),
        run_seconds=[sum(t["seconds"] for t in trials)],
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(samples),
        latency_of=LATENCY_OF,
        details={
            "trials": args.failover_trials,
            "timed_out": args.failover_trials - len(samples),
            "failover_max_ms": max(samples) * 1000 if samples else None,
            "from_first_refused_request_p50_ms": refusal_p50,
            "from_first_refused_request_p99_ms": refusal_p99,
            "throughput_note": "this path's trades/s, msgs/s and MB/s are the live feed's "
            "over the trials' wall time (warm-up included), not a capacity",
            "per_trial": trials,
        },
    )
