"""Scenario `ws`: bars fanned out to many WebSocket subscribers on 127.0.0.1, ours against a peer.

Paths, each run at every `--clients` count on a fresh embedded broker with a fresh server:

- ours: the gateway as it ships, `python -m gateways.ws` (a shared log of pre-built frames, one
  writer visiting the clients in turn, many events per frame), API-key authentication on.
- naive: `python -m benchmarks.ws_peer`, a `websockets` server reading md.bars.v1 with aiokafka
  that, per bar, awaits one send of the bar's JSON to each client in turn.

A run: start the server and wait for /health; connect the clients (`--client-processes` processes
of benchmarks.ws_clients), each subscribing to `--channels` with no snapshot and confirming with a
ping, and measure the server's idle RSS; publish `--warmup-bars` warm-up bars and wait (bounded)
until they are delivered; then publish bars for `--instruments` instruments at the scale's rate
for `--seconds` (Avro, keyed and partitioned by instrument as the bars worker does) and wait up
to `--drain-s` for the clients to receive them. Warm-up and measured bars are told apart by their
`source`, so the warm-up is never counted.

Every process starts and stops here: broker, server, clients. The publisher runs in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import confluent_kafka
import numpy as np

from benchmarks import common, processes
from benchmarks.common import PathResult, Result
from benchmarks.ws_clients import MEASURED, WARM
from shared import kafka_admin
from shared.codec import Codec
from shared.models import Bar
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import KafkaSettings
from shared.topics import BARS, all_topics
from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import free_port

log = logging.getLogger(__name__)

OURS: Final = "ours"
NAIVE: Final = "naive"
PATHS: Final[dict[str, str]] = {
    OURS: "python -m gateways.ws as shipped (uvloop): bars framed once per subscriber set into a "
    "shared log; one writer visits the clients in turn and writes each, in one transport.write, "
    "pre-built WebSocket frames of everything it is to get (a JSON array per frame), at most "
    "MS_WS_WRITE_SHARE of the loop's time; API keys on",
    NAIVE: "benchmarks/ws_peer.py: websockets server, aiokafka consumer; per bar one JSON "
    "encode, then `await ws.send(json)` to each subscribed client in turn (one message per "
    "bar per client, no batching)",
}
DEFAULT_ORDER: Final = (OURS, NAIVE)
DISTRIBUTIONS: Final = ("websockets", "uvloop", "orjson", "aiokafka", "confluent-kafka", "fastavro")
API_KEY: Final = "bench-ws-key-0123456789"
T0_US: Final = 1_767_623_400_000_000
GIB: Final = 1024**3
TARGET_P99_MS: Final = 250.0
TARGET_RATE: Final = 500_000.0
TARGET_CLIENTS: Final = 1_000
TARGET_FANOUT_CLIENTS: Final = 10_000
TARGET_IDLE_CLIENTS: Final = 10_000
POLL_S: Final = 0.25
_PR_SET_PDEATHSIG: Final = 1


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive integers")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive numbers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--clients", type=_int_list, default="1000,10000", help="subscriber counts, one run each")
    add(
        "--rates",
        type=_float_list,
        default="525,50",
        help="bars/s published at each --clients count (one value: the same for all); 525 x "
        "1,000 offers 5%% above the 500k events/s target, whose window includes the tail",
    )
    add("--instruments", type=int, default=500, help="instruments the bars cycle through")
    add("--seconds", type=float, default=20.0, help="measured publishing time per run")
    add("--tick-ms", type=float, default=10.0, help="publish each tick's bars at its start")
    add("--warmup-bars", type=int, default=20, help="warm-up bars, not counted")
    add("--warmup-drain-s", type=float, default=20.0, help="longest wait for the warm-up")
    add("--drain-s", type=float, default=10.0, help="longest wait for delivery after publishing")
    add("--settle-s", type=float, default=2.0, help="pause before reading the idle RSS")
    add("--channels", default="bars.1s.*", help="every client subscribes to these")
    add("--partitions", type=int, default=6, help="partitions of md.bars.v1")
    add("--client-processes", type=int, default=2, help="processes the clients are spread over")
    add("--sample-every", type=int, default=10, help="latency of every event on 1 client in N")
    add("--connect-timeout-s", type=float, default=180.0, help="longest wait for all clients")
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add("--keep-logs", action="store_true", help="keep server and client logs (path in results)")


def _label(clients: int) -> str:
    return f"{clients // 1000}k" if clients % 1000 == 0 else str(clients)


def _rate_for(args: argparse.Namespace, index: int) -> float:
    rates: list[float] = args.rates
    return rates[index] if index < len(rates) else rates[-1]


def run(args: argparse.Namespace) -> Result:
    """Measure every path at every client count, each run on a fresh broker and server."""
    if len(args.rates) not in (1, len(args.clients)):
        raise SystemExit("--rates takes one value, or one per --clients value")
    results: list[PathResult] = []
    with tempfile.TemporaryDirectory(prefix="marketstream-bench-ws-") as tmp:
        root = (
            Path(tempfile.mkdtemp(prefix="marketstream-bench-ws-logs-"))
            if args.keep_logs
            else Path(tmp)
        )
        for index, clients in enumerate(args.clients):
            rate = _rate_for(args, index)
            for name in args.paths:
                log.info("measuring %s with %d clients at %.0f bars/s", name, clients, rate)
                work = root / f"{name}-{clients}"
                work.mkdir(parents=True)
                results.append(measure(name, clients, rate, args, work))
    extra: dict[str, Any] = {
        "librdkafka": confluent_kafka.libversion()[0],
        "tansu": common.tansu_version(),
    }
    baseline = f"{OURS}_{_label(args.clients[0])}"
    result = Result(
        scenario="ws",
        unit="events",
        baseline=baseline if OURS in args.paths else results[0].name,
        parameters=_parameters(args, results),
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )
    print(format_details(results))
    for key, value in result.parameters["targets"].items():
        print(f"target {key}: {value}")
    print()
    return result


def _parameters(args: argparse.Namespace, results: list[PathResult]) -> dict[str, Any]:
    return {
        "clients": args.clients,
        "bars_per_s": [_rate_for(args, i) for i in range(len(args.clients))],
        "instruments": args.instruments,
        "seconds": args.seconds,
        "tick_ms": args.tick_ms,
        "warmup_bars": args.warmup_bars,
        "warmup_drain_s": args.warmup_drain_s,
        "drain_s": args.drain_s,
        "channels": args.channels,
        "snapshot": 0,
        "partitions": args.partitions,
        "client_processes": args.client_processes,
        "latency_sample": f"every bar event on 1 client in {args.sample_every}",
        "latency_definition": "client receive wall time (time.time_ns when the frame's bytes "
        "reach the client's data_received) minus the bar's ts_recv_us, which the publisher sets "
        "just before producing the bar to md.bars.v1: produce, broker, server consume, fan-out, "
        "loopback TCP and client wake-up. p50/p99 over the sampled clients' events; max over "
        "every frame of every client (its first, oldest-queued, event) and every sampled event",
        "delivered_definition": "measured bar events received by all clients, over the time "
        "from the first measured bar's production to the last measured event's receipt (at "
        "most --seconds + --drain-s); events/s in the table is this rate",
        "fraction_definition": "events received / (measured bars published x clients "
        "subscribed), counted until every one arrived or --drain-s after publishing ended",
        "server_cpu_definition": "server process user+system CPU seconds (/proc/<pid>/stat) "
        "over wall seconds, from the first measured bar to the end of the drain wait",
        "memory_definition": "server VmRSS with every client connected and subscribed and no "
        "bars yet, minus VmRSS before the first client connected, over the clients subscribed",
        "publisher": "this process: shared.publisher.Publisher with KafkaSettings.producer_config "
        "(acks=all, idempotent), Codec.encode_bar, key=instrument, partition=partition_for",
        "client": "benchmarks/ws_clients.py: asyncio Protocol per connection on uvloop, minimal "
        "RFC 6455, events counted by substring in place, every bar's ts_recv_us read (regex) "
        "only on sampled clients",
        "broker": "embedded Tansu, memory storage, a fresh one per run",
        "isolation": "server under test, clients and broker each in their own processes; "
        "this process publishes",
        "targets": _targets(results),
        "paths": {name: PATHS[name] for name in args.paths},
    }


def _targets(results: list[PathResult]) -> dict[str, Any]:
    """Check ours against the issue's targets, where the run covered them."""
    out: dict[str, Any] = {
        "throughput": f"at {TARGET_CLIENTS} clients: p99 < {TARGET_P99_MS:.0f} ms while "
        f"delivering >= {TARGET_RATE:,.0f} events/s",
        "fanout": f"at {TARGET_FANOUT_CLIENTS} clients, {TARGET_RATE:,.0f} events/s offered: "
        f"p99 < {TARGET_P99_MS:.0f} ms with every event delivered",
        "idle_memory": f"{TARGET_IDLE_CLIENTS} idle subscribers in < 1 GiB server RSS",
    }
    for p in results:
        if p.details.get("path") != OURS:
            continue
        if p.details["clients"] == TARGET_CLIENTS and p.latency_p99_ms is not None:
            out["throughput_met"] = (
                p.latency_p99_ms < TARGET_P99_MS and p.items_per_s >= TARGET_RATE
            )
        if (
            p.details["clients"] == TARGET_FANOUT_CLIENTS
            and p.details["offered_events_per_s"] >= TARGET_RATE
            and p.latency_p99_ms is not None
        ):
            out["fanout_met"] = (
                p.latency_p99_ms < TARGET_P99_MS and p.details["delivered_fraction"] == 1.0
            )
        if p.details["clients"] >= TARGET_IDLE_CLIENTS and p.details.get("rss_idle_bytes"):
            out["idle_memory_met"] = p.details["rss_idle_bytes"] < GIB
    return out


# processes


_LIBC: Final = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child must not dlopen
_NOFILE_HARD: Final = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _child_setup() -> None:
    """In a child before exec: raise the open-file limit, and die with this process."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (_NOFILE_HARD, _NOFILE_HARD))
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_health(
    url: str, process: subprocess.Popen[Any], log_path: Path, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{processes.tail(log_path)}"
            )
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout_s:.0f} s:\n{processes.tail(log_path)}")


@contextlib.contextmanager
def broker(work: Path) -> Iterator[tuple[str, int]]:
    """Start a fresh Tansu on a free port; yield (bootstrap, pid); stop it after."""
    port = free_port()
    process = start_broker(port, work / "tansu.log")
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        stop_broker(process)


@contextlib.contextmanager
def server(name: str, bootstrap: str, work: Path) -> Iterator[tuple[subprocess.Popen[Any], str]]:
    """Start the server of path `name`; yield it and its ws:// URL once /health answers 200."""
    port = free_port()
    log_path = work / f"{name}.log"
    if name == OURS:
        env = {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_WS_HOST": "127.0.0.1",
            "MS_WS_PORT": str(port),
            "MS_WS_API_KEYS": API_KEY,
            "MS_WS_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "gateways.ws"]
    else:
        env = {}
        command = [
            sys.executable, "-m", "benchmarks.ws_peer", "--bootstrap", bootstrap,
            "--port", str(port), "--log-level", "WARNING",
        ]  # fmt: skip
    process = processes.start(command, env, log_path, preexec_fn=_child_setup)
    try:
        _wait_health(f"http://127.0.0.1:{port}/health", process, log_path)
        yield process, f"ws://127.0.0.1:{port}/"
    finally:
        processes.stop(process)


class ClientProcess:
    """One benchmarks.ws_clients process, driven by lines on its stdin and stdout."""

    def __init__(
        self, url: str, connections: int, args: argparse.Namespace, work: Path, index: int
    ) -> None:
        self.out = work / f"clients-{index}.json"
        self.log_path = work / f"clients-{index}.log"
        command = [
            sys.executable, "-m", "benchmarks.ws_clients", "--url", url,
            "--connections", str(connections), "--channels", args.channels,
            "--api-key", API_KEY, "--sample-every", str(args.sample_every),
            "--subscribe-timeout", str(args.connect_timeout_s),
            "--max-seconds", str(args.connect_timeout_s + args.seconds + args.drain_s
                                 + args.warmup_drain_s + 120),
            "--out", str(self.out),
        ]  # fmt: skip
        self._spawn(command)

    def _spawn(self, command: list[str]) -> None:
        """Start `command`, its stdin and stdout piped, and a thread taking its lines."""
        self.process = processes.start(
            command,
            {},
            self.log_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_child_setup,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        for line in stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def send(self, command: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def expect(self, word: str, timeout_s: float) -> list[str]:
        """Return the fields of the next line starting with `word`; raise if none in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"clients sent no {word!r} in {timeout_s:.0f} s") from None
            if not line:
                raise RuntimeError(f"clients exited:\n{processes.tail(self.log_path)}")
            fields = line.split()
            if fields[0] == word:
                return fields[1:]

    def count(self) -> tuple[int, int, int, int]:
        """Return (warm, measured, last measured receipt in micros, connections closed)."""
        self.send("count")
        warm, measured, last_us, closed = (int(v) for v in self.expect("count", 30))
        return warm, measured, last_us, closed

    def finish(self) -> tuple[dict[str, Any], np.ndarray]:
        """Stop the clients; return their results and sampled latencies (micros)."""
        self.send("stop")
        self.expect("done", 60)
        self.process.wait(30)
        lat = np.fromfile(f"{self.out}.lat", dtype=np.int64)
        return json.loads(self.out.read_text()), lat

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def clients(
    url: str, n: int, args: argparse.Namespace, work: Path
) -> Iterator[list[ClientProcess]]:
    processes = max(1, min(args.client_processes, n))
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    started: list[ClientProcess] = []
    try:
        for i, share in enumerate(shares):
            started.append(ClientProcess(url, share, args, work, i))
        yield started
    finally:
        for c in started:
            c.kill()


# publishing


class Feed:
    """The bars published so far: per-instrument seq, so every bar is new to the gateway."""

    def __init__(self, instruments: list[str], partitions: int) -> None:
        self.instruments = instruments
        self.seq = [0] * len(instruments)
        self.next_index = 0
        self.keys = [s.encode() for s in instruments]
        self.parts = [partition_for(s, partitions) for s in instruments]

    def bar(self, source: str) -> tuple[int, Bar]:
        i = self.next_index
        self.next_index = (i + 1) % len(self.instruments)
        self.seq[i] += 1
        seq = self.seq[i]
        ts_us = T0_US + seq * 1_000_000
        price = 100.0 + (i % 97) + (seq % 13) * 0.01
        return i, Bar(
            self.instruments[i], "1s", ts_us, 0, price, price + 0.05, price - 0.05, price + 0.01,
            1000.0 + seq % 7, price, 25, 600.0, 400.0, source, ts_us + 999_000,
            time.time_ns() // 1000, seq,
        )  # fmt: skip


def publish(
    publisher: Publisher,
    codec: Codec,
    feed: Feed,
    count: int,
    rate: float,
    tick_s: float,
    source: str,
) -> tuple[int, float]:
    """Publish `count` bars at `rate` per second, each tick's share at the tick's start.

    Return the wall time of the first produce in micros and the seconds publishing took (all
    acknowledged).
    """
    per_tick = rate * tick_s
    started = time.perf_counter()
    first_us = time.time_ns() // 1000
    sent = 0
    while sent < count:
        tick = int((time.perf_counter() - started) / tick_s)
        due = min(count, math.ceil(per_tick * (tick + 1) - 1e-9))
        while sent < due:
            i, bar = feed.bar(source)
            publisher.produce(
                BARS, codec.encode_bar(bar), key=feed.keys[i], partition=feed.parts[i]
            )
            sent += 1
        pause = (tick + 1) * tick_s - (time.perf_counter() - started)
        if pause > 0 and sent < count:
            time.sleep(pause)
    publisher.flush(60)
    return first_us, time.perf_counter() - started


def _counts(procs: Sequence[ClientProcess]) -> tuple[int, int, int, int]:
    warm = measured = last = closed = 0
    for p in procs:
        w, m, lu, c = p.count()
        warm, measured, last, closed = warm + w, measured + m, max(last, lu), closed + c
    return warm, measured, last, closed


def _wait_delivered(
    procs: Sequence[ClientProcess], want: int, measured: bool, timeout_s: float
) -> tuple[int, int, int, float]:
    """Poll the clients until `want` events of a phase arrived or `timeout_s` passed."""
    started = time.monotonic()
    while True:
        warm, got, last_us, closed = _counts(procs)
        have = got if measured else warm
        waited = time.monotonic() - started
        if have >= want or waited >= timeout_s:
            return have, last_us, closed, waited
        time.sleep(POLL_S)


# one run


def measure(
    name: str, n_clients: int, rate: float, args: argparse.Namespace, work: Path
) -> PathResult:
    """Run path `name` with `n_clients` subscribers at `rate` bars/s; see the module docstring."""
    codec = Codec(CommittedSchemas())
    with broker(work) as (bootstrap, broker_pid):
        kafka_admin.create_topics(bootstrap, all_topics(args.partitions))
        with server(name, bootstrap, work) as (process, url):
            pid = process.pid
            time.sleep(1.0)
            rss_before = processes.status_bytes(pid, "VmRSS")
            processes.reset_peak(pid)
            connect_started = time.perf_counter()
            with clients(url, n_clients, args, work) as procs:
                ready = [p.expect("ready", args.connect_timeout_s + 30) for p in procs]
                connect_s = time.perf_counter() - connect_started
                subscribed = sum(int(r[0]) for r in ready)
                failed = sum(int(r[1]) for r in ready)
                log.info(
                    "%s: %d clients subscribed (%d failed) in %.1f s",
                    name,
                    subscribed,
                    failed,
                    connect_s,
                )
                time.sleep(args.settle_s)
                rss_idle = processes.status_bytes(pid, "VmRSS")
                rss_idle_peak = processes.status_bytes(pid, "VmHWM")

                publisher = Publisher(
                    KafkaSettings.model_validate({"bootstrap": bootstrap}).producer_config(
                        "marketstream-bench-ws"
                    )
                )
                feed = Feed([f"WSB{i:04d}" for i in range(args.instruments)], args.partitions)
                tick_s = args.tick_ms / 1000
                publish(
                    publisher,
                    codec,
                    feed,
                    args.warmup_bars,
                    max(rate, args.warmup_bars),
                    tick_s,
                    WARM,
                )
                warm_got, _, _, warm_wait = _wait_delivered(
                    procs, args.warmup_bars * subscribed, False, args.warmup_drain_s
                )
                log.info(
                    "%s: warm-up %d of %d events in %.1f s",
                    name,
                    warm_got,
                    args.warmup_bars * subscribed,
                    warm_wait,
                )

                bars = round(rate * args.seconds)
                expected = bars * subscribed
                cpu0, wall0 = processes.cpu_s(pid), time.perf_counter()
                others0 = {p.process.pid: processes.cpu_s(p.process.pid) for p in procs} | {
                    broker_pid: processes.cpu_s(broker_pid)
                }
                busy0 = processes.machine_busy()
                self0 = time.process_time()
                first_us, publish_s = publish(publisher, codec, feed, bars, rate, tick_s, MEASURED)
                got, last_us, closed, drain_waited = _wait_delivered(
                    procs, expected, True, args.drain_s
                )
                cpu1, wall1 = processes.cpu_s(pid), time.perf_counter()
                others1 = {k: processes.cpu_s(k) for k in others0}
                busy1 = processes.machine_busy()
                self1 = time.process_time()
                rss_after = processes.status_bytes(pid, "VmRSS")
                rss_peak = processes.status_bytes(pid, "VmHWM")
                log.info(
                    "%s: %d of %d events (%.1f%%), drain wait %.1f s",
                    name,
                    got,
                    expected,
                    100 * got / max(1, expected),
                    drain_waited,
                )

                finished = [p.finish() for p in procs]
                del publisher  # librdkafka's producer goes before the broker does
    client_results = [f[0] for f in finished]
    latencies_us = np.concatenate([f[1] for f in finished]) if finished else np.zeros(0, np.int64)
    last_us = max([last_us, *(c["last_us"] for c in client_results)])
    window_s = max(1e-9, (last_us - first_us) / 1e6) if last_us else float(wall1 - wall0)
    wall = wall1 - wall0
    delivered = sum(c["measured"] for c in client_results)
    p50, p99 = common.percentiles_ms((latencies_us / 1e6).tolist())
    max_ms = max((c["max_latency_us"] for c in client_results), default=0) / 1000
    client_cpu = sum((others1[k] or 0.0) - (others0[k] or 0.0) for k in others0 if k != broker_pid)
    broker_cpu = (others1[broker_pid] or 0.0) - (others0[broker_pid] or 0.0)
    server_cpu = (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None
    publisher_cpu = (self1 - self0) / wall
    machine = other_cpu = None
    if busy0 and busy1 and busy1[1] > busy0[1]:
        machine = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
        cpus = len(os.sched_getaffinity(0))
        ours = (server_cpu or 0.0) + (client_cpu + broker_cpu) / wall + publisher_cpu
        other_cpu = max(0.0, machine * cpus - ours)
    per_conn = [c["per_connection"] for c in client_results if c["per_connection"]]
    idle_growth = (rss_idle - rss_before) if rss_idle and rss_before else None
    details: dict[str, Any] = {
        "path": name,
        "clients": n_clients,
        "subscribed": subscribed,
        "connect_failed": failed,
        "connect_seconds": connect_s,
        "bars_per_s": rate,
        "instruments": args.instruments,
        "bars_published": bars,
        "publish_seconds": publish_s,
        "offered_events_per_s": rate * subscribed,
        "expected_events": expected,
        "delivered_events": delivered,
        "delivered_fraction": delivered / expected if expected else None,
        "delivery_window_s": window_s,
        "drain_waited_s": drain_waited,
        "latency_max_ms": max_ms,
        "latency_p50_p99_max_ms": [p50, p99, max_ms],
        "server_cpu_per_wall_s": server_cpu,
        "clients_cpu_per_wall_s": client_cpu / wall,
        "broker_cpu_per_wall_s": broker_cpu / wall,
        "publisher_cpu_per_wall_s": publisher_cpu,
        "machine_busy_fraction": machine,
        "other_processes_cpu_per_wall_s": other_cpu,
        "measure_wall_s": wall,
        "rss_before_clients_bytes": rss_before,
        "rss_idle_bytes": rss_idle,
        "rss_idle_peak_bytes": rss_idle_peak,
        "rss_after_load_bytes": rss_after,
        "idle_bytes_per_connection": idle_growth / subscribed
        if idle_growth and subscribed
        else None,
        "loaded_bytes_per_connection": (rss_after - rss_before) / subscribed
        if rss_after and rss_before and subscribed
        else None,
        "warmup_events": warm_got,
        "warmup_expected": args.warmup_bars * subscribed,
        "warmup_wait_s": warm_wait,
        "frames_with_measured_events": sum(c["frames"] for c in client_results),
        "events_per_frame": delivered / max(1, sum(c["frames"] for c in client_results)),
        "resyncs": sum(c["resyncs"] for c in client_results),
        "errors": sum(c["errors"] for c in client_results),
        "connections_closed_by_server": closed,
        "close_codes": _merge_codes(c["close_codes"] for c in client_results),
        "per_connection_events": {
            "min": min((c["min"] for c in per_conn), default=None),
            "max": max((c["max"] for c in per_conn), default=None),
            "zero": sum(c["zero"] for c in per_conn),
        },
        "sampled_connections": sum(c["sampled_connections"] for c in client_results),
        "client_connect_seconds": [c["connect_seconds"] for c in client_results],
    }
    if args.keep_logs:
        details["logs"] = str(work)
    return PathResult(
        name=f"{name}_{_label(n_clients)}",
        description=f"{PATHS[name]}; {n_clients} clients, {rate:g} bars/s",
        items=delivered,
        messages=details["frames_with_measured_events"],
        wire_bytes=sum(c["bytes"] for c in client_results),
        run_seconds=[window_s],
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(latencies_us),
        latency_of=f"event, 1 client in {args.sample_every}",
        rss_before_mb=rss_before / common.MB if rss_before else None,
        rss_peak_mb=rss_peak / common.MB if rss_peak else None,
        details=details,
    )


def _merge_codes(codes: Iterator[dict[str, int]] | Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for c in codes:
        for k, v in c.items():
            merged[str(k)] = merged.get(str(k), 0) + v
    return merged


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_details(results: Sequence[PathResult]) -> str:
    """Return the figures the issue asks for, one row per run, as a fixed-width table."""
    header = [
        "path", "clients", "bars/s", "offered ev/s", "delivered ev/s", "delivered %",
        "p50 ms", "p99 ms", "max ms", "server CPU", "idle RSS MB", "KB/conn idle",
        "peak RSS MB", "clients CPU", "others CPU",
    ]  # fmt: skip
    rows = [header]
    for p in results:
        d = p.details
        per_conn = d.get("idle_bytes_per_connection")
        rss_idle = d.get("rss_idle_bytes")
        fraction = d.get("delivered_fraction")
        others = d.get("other_processes_cpu_per_wall_s")
        rows.append(
            [
                p.name,
                f"{d['subscribed']:,}",
                _fmt(d["bars_per_s"], ",.0f"),
                _fmt(d["offered_events_per_s"], ",.0f"),
                _fmt(p.items_per_s, ",.0f"),
                _fmt(100 * fraction if fraction is not None else None, ".1f"),
                _fmt(p.latency_p50_ms, ".1f"),
                _fmt(p.latency_p99_ms, ".1f"),
                _fmt(d.get("latency_max_ms"), ".1f"),
                _fmt(d.get("server_cpu_per_wall_s"), ".2f"),
                _fmt(rss_idle / common.MB if rss_idle else None, ",.0f"),
                _fmt(per_conn / 1000 if per_conn else None, ",.1f"),
                _fmt(p.rss_peak_mb, ",.0f"),
                _fmt(d.get("clients_cpu_per_wall_s"), ".2f"),
                _fmt(others, ".2f"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
