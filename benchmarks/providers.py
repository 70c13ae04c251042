"""Scenario `providers`: Alpaca frames to trades (ours against alpaca-py), and failover time.

(a) Throughput over one seeded recording of Alpaca stream v2 trade frames (`--trades` trades in
frames of `--frame-trades`), served by connectors.fakes.alpaca's FakeAlpaca from a process of
its own, a fresh one per run, to one client process per run (benchmarks/providers_throughput.py):

- ours: AlpacaConnector through ConnectorRunner into Kafka as shipped (providers_ours.py):
  MessagePack frames, one TradeBatch per frame, batched per partition, Avro, acks=all.
  Clock: from the runner's start to the delivery report that makes every trade acknowledged.
- alpaca_py: alpaca-py's StockDataStream, default settings (a pydantic Trade per message), its
  handler only counting (benchmarks/providers_peer.py, run by `--alpaca-python`). Clock: from
  `run()` to the handler seeing the last trade. Nothing goes to Kafka.
- alpaca_py_raw: the same with `raw_data=True` (the raw dict per message, no model).

Both clients connect, authenticate and subscribe within the clock (a few milliseconds on
127.0.0.1). Every path gets the same bytes: the frames the fake sends for this recording are
captured once and replayed as they are (see benchmarks/providers_fake.py; `--fake-replay
as-shipped` makes the fake encode while it sends, which caps every client at its own rate).

(b) Failover: see benchmarks/providers_failover.py; p50/p99 over `--failover-trials` trials.

(c) The FMP refresh's use of its request budget: see benchmarks/providers_fmp.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import confluent_kafka

from benchmarks import common
from benchmarks.common import PathResult, Result
from benchmarks.providers_failover import DESCRIPTION as FAILOVER_DESCRIPTION
from benchmarks.providers_failover import NAME as FAILOVER
from benchmarks.providers_failover import failover_config, measure_failover
from benchmarks.providers_fmp import DESCRIPTION as FMP_DESCRIPTION
from benchmarks.providers_fmp import NAME as FMP
from benchmarks.providers_fmp import add_arguments as add_fmp_arguments
from benchmarks.providers_fmp import measure_fmp
from benchmarks.providers_fmp import parameters as fmp_parameters
from benchmarks.providers_throughput import (
    OURS,
    PEER,
    PEER_RAW,
    PEERS,
    THROUGHPUT,
    Recording,
    record,
    run_client,
    throughput_result,
)
from benchmarks.providers_throughput import PATHS as THROUGHPUT_PATHS
from shared.errors import ConfigError
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

PATHS: Final[dict[str, str]] = {
    **THROUGHPUT_PATHS,
    FAILOVER: FAILOVER_DESCRIPTION,
    FMP: FMP_DESCRIPTION,
}
DEFAULT_ORDER: Final = (OURS, PEER, PEER_RAW, FAILOVER, FMP)
TARGET_SPEEDUP: Final = 10.0  # ours over alpaca_py, trades/s
TARGET_FAILOVER_P99_S: Final = 2.0
TARGET_FMP_BUDGET_USED: Final = 0.95  # of the requests the budget allows in each window
DISTRIBUTIONS: Final = (
    "confluent-kafka", "websockets", "msgpack", "numpy", "fastavro", "orjson", "aiohttp", "psycopg",
)  # fmt: skip


class ProvidersResult(Result):
    """A Result whose speedups compare the throughput paths only, with the targets beside."""

    __slots__ = ()

    def speedups(self) -> dict[str, float]:
        names = [p.name for p in self.paths]
        if OURS not in names:
            return {}
        ours = self.path(OURS).items_per_s
        return {p.name: ours / p.items_per_s for p in self.paths if p.name in PEERS}

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["targets"] = targets(self)
        return data


def targets(result: Result) -> dict[str, Any]:
    """The scenario's targets, each with what this run measured and whether it met it."""
    found: dict[str, Any] = {}
    names = {p.name for p in result.paths}
    if {OURS, PEER} <= names:
        got = result.path(OURS).items_per_s / result.path(PEER).items_per_s
        found["ours_vs_alpaca_py_trades_per_s"] = {
            "at_least": TARGET_SPEEDUP,
            "measured": got,
            "met": got >= TARGET_SPEEDUP,
        }
    if FAILOVER in names:
        failover = result.path(FAILOVER)
        p99 = failover.latency_p99_ms
        met = p99 is not None and p99 < TARGET_FAILOVER_P99_S * 1000
        found["failover_p99_s"] = {
            "under": TARGET_FAILOVER_P99_S,
            "measured": None if p99 is None else p99 / 1000,
            "met": met and not failover.details.get("timed_out"),
        }
    if FMP in names:
        fmp = result.path(FMP).details
        used = fmp["budget_used"]
        found["fmp_budget_used"] = {
            "at_least": TARGET_FMP_BUDGET_USED,
            "measured": used,
            "met": used is not None and used >= TARGET_FMP_BUDGET_USED,
        }
        found["fmp_429s"] = {
            "equal": 0,
            "measured": fmp["rate_limited_by_fake"],
            "met": fmp["rate_limited_by_fake"] == 0,
        }
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--trades", type=int, default=200_000, help="trades in the Alpaca recording")
    add("--frame-trades", type=int, default=50, help="trades per Alpaca frame")
    add("--instruments", type=int, default=100, help="listings the recording trades (at most 100)")
    add("--market-rate", type=float, default=5000.0, help="recorded trades per second")
    add("--seed", type=int, default=42, help="seed of the recordings")
    add("--repeats", type=int, default=5, help="measured runs of each throughput path")
    add("--warmup-runs", type=int, default=1, help="runs of each throughput path not measured")
    add(
        "--fake-replay",
        choices=("captured", "as-shipped"),
        default="captured",
        help="captured: the fake sends the frames it encoded for this recording beforehand; "
        "as-shipped: it encodes each while it sends",
    )
    add(
        "--fake-compression",
        choices=("deflate", "none"),
        default="deflate",
        help="deflate: the fake offers permessage-deflate, as websockets does by default (and "
        "every client accepts it); none: frames go uncompressed (whether Alpaca's servers "
        "compress is not documented)",
    )
    add(
        "--partitions",
        type=int,
        default=KafkaSettings.model_fields["trades_partitions"].default,
        help="partitions of the benchmark topics",
    )
    add(
        "--alpaca-python",
        default=None,
        help="python of a virtualenv with alpaca-py (`make .venv-alpaca/.installed`); without "
        "it the alpaca-py paths are skipped",
    )
    add("--run-timeout-s", type=float, default=300.0, help="give up on a run after this")
    add("--failover-trials", type=int, default=30, help="failover trials")
    add("--failover-timeout-s", type=float, default=15.0, help="the longest one trial may take")
    add(
        "--failover-warmup-s",
        type=float,
        default=1.0,
        help="seconds both providers deliver before the primary's key is revoked",
    )
    add(
        "--failover-jitter-s",
        type=float,
        default=0.5,
        help="up to this much more warm-up, seeded uniform per trial",
    )
    add("--failover-instruments", type=int, default=10, help="instruments of the failover")
    add("--failover-rate", type=float, default=200.0, help="failover market, trades per second")
    add("--failover-recording-s", type=float, default=120.0, help="failover recording, seconds")
    add(
        "--failover-frame-interval-s",
        type=float,
        default=0.05,
        help="failover fakes: seconds between frames",
    )
    add(
        "--open-s",
        type=float,
        default=3600.0,
        help="FailoverConfig.open_s: long enough that the primary is not probed in a trial",
    )
    add_fmp_arguments(parser)
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add("--keep-temp", action="store_true", help="keep the recording and the processes' logs")
    add("--bootstrap", default=None, help="use this broker instead of starting an embedded Tansu")


def _alpaca_python(args: argparse.Namespace) -> str | None:
    if args.alpaca_python is None:
        return None
    if not Path(args.alpaca_python).exists():
        raise ConfigError(
            f"--alpaca-python {args.alpaca_python} not found: `make .venv-alpaca/.installed` "
            "installs alpaca-py in a virtualenv of its own"
        )
    return str(args.alpaca_python)


def run(args: argparse.Namespace) -> Result:
    """Measure the selected paths: every throughput run in processes of its own, then failover."""
    load_before = os.getloadavg()
    skipped: dict[str, str] = {}
    names = list(args.paths)
    if _alpaca_python(args) is None:
        for name in [n for n in names if n in PEERS]:
            names.remove(name)
            skipped[name] = "no --alpaca-python given (`make bench` passes .venv-alpaca's)"
            log.warning("skipping %s: %s", name, skipped[name])
    root = Path(tempfile.mkdtemp(prefix="marketstream-bench-providers-"))
    results: list[PathResult] = []
    recording: Recording | None = None
    try:
        with common.broker(args.bootstrap) as bootstrap:
            measured = [n for n in names if n in THROUGHPUT]
            if measured:
                recording = record(args, root)
                runs: dict[str, list[dict[str, Any]]] = {n: [] for n in measured}
                for index in range(args.warmup_runs + args.repeats):
                    warm = index < args.warmup_runs
                    for name in measured:  # interleaved: drift touches every path alike
                        tag = f"warmup{index}" if warm else str(index - args.warmup_runs)
                        result = run_client(name, args, recording, bootstrap, root, tag)
                        if not warm:
                            runs[name].append(result)
                results += [throughput_result(n, runs[n], recording) for n in measured]
            if FAILOVER in names:
                results.append(measure_failover(args, bootstrap))
            if FMP in names:
                results.append(measure_fmp(args, bootstrap, root))
    finally:
        if not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)
    extra: dict[str, Any] = {
        "librdkafka": confluent_kafka.libversion()[0],
        "alpaca-py": common.installed_version(_alpaca_python(args), "alpaca-py"),
    }
    if args.bootstrap is None:
        extra["tansu"] = common.tansu_version()
    parameters = _parameters(args, recording, skipped)
    parameters["load_average_1_5_15m"] = {"before": load_before, "after": os.getloadavg()}
    parameters["files"] = str(root) if args.keep_temp else None
    return ProvidersResult(
        scenario="providers",
        unit="trades",
        baseline=OURS,
        parameters=parameters,
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )


def _parameters(
    args: argparse.Namespace, recording: Recording | None, skipped: dict[str, str]
) -> dict[str, Any]:
    return {
        "recording": {
            "trades": args.trades,
            "frame_trades": args.frame_trades,
            "frames": recording.frame_count if recording else None,
            "frame_bytes": recording.frame_bytes if recording else None,
            "instruments": args.instruments,
            "market_rate_trades_per_s": args.market_rate,
            "seed": args.seed,
            "encoding": "MessagePack (both clients ask for it at connect)",
            "fake_replay": args.fake_replay,
            "fake_compression": args.fake_compression,
        },
        "repeats": args.repeats,
        "warmup_runs": args.warmup_runs,
        "rate_statistic": "median of the runs; each run a fresh fake process and a fresh client "
        "process, the paths interleaved run by run",
        "throughput_definition": "trades in the recording over the wall time from the client's "
        "start (before it connects) to, ours: the Kafka delivery report that makes every trade "
        "acknowledged (acks=all); alpaca-py: its handler seeing the last trade",
        "partitions": args.partitions,
        "kafka": {
            "linger_ms": KafkaSettings.model_fields["linger_ms"].default,
            "batch_max_trades": KafkaSettings.model_fields["batch_max_trades"].default,
        },
        "failover": {
            "trials": args.failover_trials,
            "trial_timeout_s": args.failover_timeout_s,
            "warmup_s": args.failover_warmup_s,
            "jitter_s": args.failover_jitter_s,
            "instruments": args.failover_instruments,
            "market_rate_trades_per_s": args.failover_rate,
            "recording_s": args.failover_recording_s,
            "frame_interval_s": args.failover_frame_interval_s,
            "config": failover_config(args, "the failover market's").model_dump(mode="json"),
            "definition": "time.monotonic() from just before FakeFinnhub.revoke_keys() to the "
            "consumer thread receiving the first batch with provider alpaca from the trial's "
            "topic (fetch.wait.max.ms=10); from_first_refused_request: from the fake's first "
            "401 instead",
        },
        "fmp": fmp_parameters(args),
        "targets": {
            "ours_vs_alpaca_py_trades_per_s_at_least": TARGET_SPEEDUP,
            "failover_p99_s_under": TARGET_FAILOVER_P99_S,
            "fmp_budget_used_at_least": TARGET_FMP_BUDGET_USED,
            "fmp_429s_equal": 0,
        },
        "skipped": skipped,
        "broker": args.bootstrap or "embedded Tansu, memory storage, one for the scenario",
        "paths": {name: PATHS[name] for name in args.paths},
    }
