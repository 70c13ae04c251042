"""Scenario `gaps`: from the end of an outage to every bar repaired, ours against a daily re-fetch.

Each path gets a stack of its own (benchmarks/gaps_stack.py): an embedded Tansu broker and
PostgreSQL, the workers as shipped (`aggregate_bars`; `sink_bars,detect_gaps`), the fake Alpaca
REST history in a process of its own (benchmarks/gaps_fake.py) allowing `--budget` requests a
minute (Alpaca's free plan: 200), and a universe of `--instruments` T0 crypto pairs. The live feed publishes the fake's
trades as the source `alpaca` (as tests/connectors/test_gap_repair_loop.py does): the hours
before the outage, then nothing for the outage's 1, 10 or 60 minutes, every instrument at once,
then (the feed resumes) the rest up to now at once and from there on as the trades happen
(benchmarks/gaps_feed.py has the timeline). The clock starts when the feed resumes.

- ours_<n>m: `--backfill-workers` `python -m connectors backfill` processes (each with its share
  of the budget) drain the queue `detect_gaps` fills. Measured: (a) every instrument's gap
  recorded, (b) every job done, (c) every 1m, 5m and 1h bar of the span the jobs fetch equal to
  a fold of the fake's trades; requests, 429s and the most requests in any 60 s; jobs a minute;
  from the sink worker's /metrics, `backfill_oldest_age_seconds{tier="T0"}` (its highest) and
  `slo_gap_violation_rate{tier="T0",interval="1m"}` (its highest, and after the first sweep once
  the bars are repaired; the sweep runs every `--sweep-interval-s` over the feed's hours).
- naive_<n>m: no backfill worker; when the feed resumes, a cron-style job re-fetches the last
  24 hours of every instrument through the same fake and budget and republishes them
  (benchmarks/gaps_peer.py). Measured: (a) and (c) the same way, its requests.

MS_BARS_INTERVALS=1m,5m,1h: a backfill fetches whole windows of the longest interval, so a gap
costs the hour(s) around it; with the default (up to 1d) every gap would cost the whole UTC
day, about what the naive job fetches. What that would have cost in requests is computed from
the same trades (`requests_if_1d`). The fake prints some 6 trades a minute a pair, so a day is
one page; `--density` merges that many of its tapes per pair (3: a day is three or four
10,000-trade pages, an hour or two one) so that a day costs more than an hour, as it does for any traded name.
Event time is compressed: the rest of the data after the outage is published at once, so the
first bar after the outage closes at once; a live feed's closes up to one interval plus the
grace (62 s) after it resumes, which `detect_bound_s` adds for the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg

from benchmarks import common
from benchmarks.common import PathResult, Result
from benchmarks.gaps_fake import STATS_PATH, trades_between
from benchmarks.gaps_feed import (
    DAY_US,
    HOUR_US,
    Comparison,
    LiveFeed,
    Timeline,
    Trades,
    compare,
    instruments,
    reference,
)
from benchmarks.gaps_peer import refetch_day
from benchmarks.gaps_stack import (
    BARS_INTERVALS,
    Stack,
    get_json,
    last_sweep_at,
    scrape,
    stack,
    t0_sample,
)
from connectors.backfill_plan import fetch_span
from shared.codec import Codec
from shared.errors import DeliveryError
from shared.publisher import Publisher
from shared.schema_ids import CommittedSchemas
from shared.settings import KafkaSettings
from shared.times import micros_of

log = logging.getLogger(__name__)

OUTAGES_MINUTES: Final = (1, 10, 60)
PATHS: Final[dict[str, str]] = {
    **{
        f"ours_{m}m": f"{m}-minute outage: detect_gaps queues, connectors backfill drains"
        for m in OUTAGES_MINUTES
    },
    **{
        f"naive_{m}m": f"{m}-minute outage: a cron job re-fetches the last 24 hours of every pair"
        for m in OUTAGES_MINUTES
    },
}
DEFAULT_ORDER: Final = tuple(f"{kind}_{m}m" for m in OUTAGES_MINUTES for kind in ("ours", "naive"))
TARGET_DRAIN_X: Final = 10.0  # drained in under this many times the outage
TARGET_OLDEST_S: Final = 900.0  # the oldest T0 job under 15 minutes
TARGET_SLO: Final = 0.005  # slo_gap_violation_rate, T0
FIRST_BAR_WAIT_S: Final = 62.0  # a live 1m bar closes up to 60 s + MS_BARS_GRACE_S after
DISTRIBUTIONS: Final = ("confluent-kafka", "faust-streaming", "psycopg", "aiohttp", "numpy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--instruments", type=int, default=100, help="T0 crypto pairs, every one down at once")
    add("--budget", type=int, default=200, help="history requests a minute (fake and clients)")
    add("--backfill-workers", type=int, default=1, help="connectors backfill processes (ours)")
    add("--density", type=int, default=3, help="the fake's tapes merged per pair and day")
    add("--page-limit", type=int, default=10_000, help="trades per history request (both)")
    add(
        "--partitions",
        type=int,
        default=KafkaSettings.model_fields["trades_partitions"].default,
        help="partitions of every topic",
    )
    add("--sweep-interval-s", type=float, default=5.0, help="MS_GAPS_SWEEP_INTERVAL_S")
    add("--poll-s", type=float, default=0.25, help="how often the database is looked at")
    add("--timeout-s", type=float, default=300.0, help="give up on a path's repair after this")
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add("--keep-temp", action="store_true", help="keep the processes' logs")


class GapsResult(Result):
    """A Result comparing each outage's ours and naive times, with the targets beside."""

    __slots__ = ()

    def speedups(self) -> dict[str, float]:
        """Naive's time to every bar equal over ours, for each outage both ran."""
        found = {}
        names = {p.name for p in self.paths}
        for m in OUTAGES_MINUTES:
            ours, naive = f"ours_{m}m", f"naive_{m}m"
            if {ours, naive} <= names:
                found[naive] = self.path(naive).seconds / self.path(ours).seconds
        return found

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["speedup"] = {
            f"ours_{name.removeprefix('naive_')}_vs_{name}": x
            for name, x in self.speedups().items()
        }
        data["targets"] = targets(self)
        return data


def targets(result: Result) -> dict[str, Any]:
    """Each ours path's targets: drained in under 10x the outage, oldest T0 job under 15 min,
    the continuity SLO once repaired; each with what was measured."""
    found: dict[str, Any] = {}
    for path in result.paths:
        if not path.name.startswith("ours_"):
            continue
        d = path.details
        outage_s = d["outage_minutes"] * 60
        equal_s = d["seconds"]["bars_equal"]
        bound = None if equal_s is None else equal_s + FIRST_BAR_WAIT_S
        oldest = d["jobs"]["oldest_age_s"]
        slo = d["metrics"]["slo_gap_violation_rate_after"]
        found[path.name] = {
            "drained_under_10x_outage": {
                "under_s": TARGET_DRAIN_X * outage_s,
                "measured_s": equal_s,
                "with_first_bar_wait_s": bound,
                "met": bound is not None and bound < TARGET_DRAIN_X * outage_s,
            },
            "t0_oldest_job_under_15_min": {
                "under_s": TARGET_OLDEST_S,
                "measured_s": oldest,
                "met": oldest is not None and oldest < TARGET_OLDEST_S,
            },
            "slo_gap_violation_rate_after_repair": {
                "under": TARGET_SLO,
                "measured": slo,
                "met": slo is not None and slo < TARGET_SLO,
            },
        }
    return found


def run(args: argparse.Namespace) -> Result:
    """Measure each selected path on a stack of its own, in order."""
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="marketstream-bench-gaps-"))
    results: list[PathResult] = []
    try:
        for name in args.paths:
            kind, minutes = name.split("_")
            path_root = root / name
            path_root.mkdir()
            results.append(measure(name, kind, int(minutes.rstrip("m")), args, path_root))
    finally:
        if not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)
    parameters = _parameters(args)
    parameters["load_average_1_5_15m"] = {"before": load_before, "after": os.getloadavg()}
    parameters["files"] = str(root) if args.keep_temp else None
    return GapsResult(
        scenario="gaps",
        unit="bars",
        baseline="ours",
        parameters=parameters,
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, {"tansu": common.tansu_version()}),
    )


@dataclass
class Watch:
    """What the measuring loop saw, seconds from the feed's resumption."""

    detected_s: float | None = None
    jobs_done_s: float | None = None
    bars_equal_s: float | None = None
    comparison: Comparison | None = None
    oldest_max_s: float | None = None
    depth_max: float | None = None
    slo_max: float | None = None
    slo_samples: list[tuple[float, float]] = field(default_factory=list)


def measure(name: str, kind: str, minutes: int, args: argparse.Namespace, root: Path) -> PathResult:
    """Run one path on a fresh stack; return its figures."""
    symbols = instruments(args.instruments)
    timeline = Timeline.plan(time.time_ns() // 1000, minutes)
    day = (timeline.span_end_us - DAY_US, timeline.span_end_us)
    feed_until = time.time_ns() // 1000 + round((args.timeout_s + 900) * 1e6)
    trades = {s: Trades.load(s, timeline.feed_start_us, feed_until, args.density) for s in symbols}
    expected = {
        s: reference(t, timeline.span_start_us, timeline.span_end_us) for s, t in trades.items()
    }
    backfill = args.backfill_workers if kind == "ours" else 0
    log.info("%s: %s", name, timeline.to_json())
    with stack(args, root, symbols, timeline, backfill) as running:
        watch, cron, feed, settle_s = asyncio.run(
            _measure(kind, args, running, timeline, symbols, trades, expected, day)
        )
        fake = get_json(f"{running.fake_url}{STATS_PATH}")
        with psycopg.connect(running.database_url, autocommit=True) as conn:
            jobs = conn.execute(
                "select count(*), count(*) filter (where status = 'done'), sum(attempts),"
                " min(created_at), max(updated_at) filter (where status = 'done'),"
                " extract(epoch from max(updated_at - created_at) filter (where status = 'done')),"
                " array_agg(distinct instrument || ' ' || start_ts::text || ' ' || end_ts::text)"
                " from backfill_jobs"
            ).fetchone()
            spans = conn.execute(
                "select instrument, min(start_ts), max(end_ts) from gaps group by instrument"
            ).fetchall()
            sweep_gaps = conn.execute("select count(*) from gaps where cause = 'sweep'").fetchone()
    requests = fake["requests"]
    times = sorted(at for at, _ in requests)
    most_in_60s = max(
        (sum(1 for t in times[i:] if t < start + 60) for i, start in enumerate(times)), default=0
    )
    n_jobs, done, attempts, first_created, last_done, oldest_s, _ = jobs or (0,) * 3 + (None,) * 4
    drain_min = (
        (last_done - first_created).total_seconds() / 60 if first_created and last_done else None
    )
    seconds = {
        "gaps_detected": watch.detected_s,
        "jobs_done": watch.jobs_done_s if kind == "ours" else None,
        "bars_equal": watch.bars_equal_s,
    }
    details: dict[str, Any] = {
        "outage_minutes": minutes,
        "timeline": timeline.to_json(),
        "seconds": seconds,
        "detect_bound_s": FIRST_BAR_WAIT_S,
        "pre_outage_settle_s": settle_s,
        "comparison": None if watch.comparison is None else vars_of(watch.comparison),
        "requests": {
            "total": len(requests),
            "status_429": sum(1 for _, status in requests if status == 429),
            "most_in_any_60_s": most_in_60s,
            "budget_per_minute": args.budget,
        },
        "live_trades_published": feed,
        "gaps": {
            "instruments_with_a_gap": len(spans),
            "sweep_gaps": sweep_gaps[0] if sweep_gaps else 0,
        },
        "metrics": {
            "backfill_oldest_age_seconds_max": watch.oldest_max_s,
            "backfill_oldest_age_seconds_max_note": "the gauge, refreshed every 5 s by the sink"
            " worker and read every second; jobs.oldest_age_s is exact",
            "backfill_queue_depth_max": watch.depth_max,
            "slo_gap_violation_rate_max": watch.slo_max,
            "slo_gap_violation_rate_after": watch.slo_samples[-1][1] if watch.slo_samples else None,
            "slo_gap_violation_rate_samples": watch.slo_samples,
        },
    }
    if kind == "ours":
        details["jobs"] = {
            "total": n_jobs,
            "done": done,
            "attempts": attempts,
            "oldest_age_s": None if oldest_s is None else float(oldest_s),
            "oldest_age_definition": "the longest a job waited from queued to done: the highest"
            " backfill_oldest_age_seconds{tier=T0} could have been",
            "drain_minutes_first_queued_to_last_done": drain_min,
            "jobs_per_minute": n_jobs / drain_min if drain_min else None,
            "requests_per_minute": len(requests) / drain_min if drain_min else None,
            "backfill_workers": args.backfill_workers,
        }
        details["requests_if_1d"] = requests_if_1d(spans, args)
    else:
        details["cron"] = vars_of(cron) if cron is not None else None
        details["cron_span"] = {"hours": (day[1] - day[0]) // HOUR_US}
    total_bars = sum(len(b) for b in expected.values())
    details["timed_out"] = watch.bars_equal_s is None
    elapsed = watch.bars_equal_s if watch.bars_equal_s is not None else args.timeout_s
    return PathResult(
        name=name,
        description=PATHS[name],
        items=total_bars,
        messages=len(requests),
        wire_bytes=0,
        run_seconds=[elapsed],
        details=details,
    )


def vars_of(value: Any) -> dict[str, Any]:
    return {k: getattr(value, k) for k in value.__dataclass_fields__}


def requests_if_1d(spans: list[tuple[str, Any, Any]], args: argparse.Namespace) -> dict[str, int]:
    """The requests the jobs would have sent with 1d the longest interval (whole UTC days) and
    with 1h (what they sent), from the trades the fake serves for those spans."""
    found = {"1d": 0, "1h": 0}
    for symbol, start, end in spans:
        for label, window in (("1d", DAY_US), ("1h", HOUR_US)):
            lo, hi = fetch_span(micros_of(start), micros_of(end), window)
            count = len(trades_between(symbol, lo, hi, density=args.density))
            found[label] += max(1, math.ceil(count / args.page_limit))
    return found


async def _measure(
    kind: str,
    args: argparse.Namespace,
    running: Stack,
    timeline: Timeline,
    symbols: list[str],
    trades: dict[str, Trades],
    expected: dict[str, Any],
    day: tuple[int, int],
) -> tuple[Watch, Any, int, float]:
    codec = Codec(CommittedSchemas())
    publisher = Publisher({"bootstrap.servers": running.bootstrap, "acks": "all"})
    feed = LiveFeed(publisher, codec, trades, args.partitions)
    conn = await psycopg.AsyncConnection.connect(running.database_url, autocommit=True)
    sync = psycopg.connect(running.database_url, autocommit=True)
    try:
        # before the outage: the feed's hours up to its start, stored
        feed.publish(timeline.feed_start_us, timeline.outage_start_us)
        await asyncio.to_thread(publisher.flush, 60.0)
        minutes_before = (timeline.outage_start_us - timeline.feed_start_us) // 60_000_000
        want = len(symbols) * (minutes_before - 1)  # the last minute's bar is still open
        started = time.monotonic()
        while True:
            row = await (
                await conn.execute("select count(*) from bars where interval = '1m'")
            ).fetchone()
            if row and row[0] >= want:
                break
            if time.monotonic() - started > args.timeout_s:
                raise DeliveryError(f"only {row} of {want} 1m bars stored before the outage")
            await asyncio.sleep(0.25)
        settle_s = time.monotonic() - started
        # the feed resumes: the clock starts
        resumed = time.monotonic()
        cut_us = time.time_ns() // 1000
        feed.publish(timeline.outage_end_us, cut_us)
        stopping = asyncio.Event()
        following = asyncio.create_task(feed.follow(cut_us, stopping))
        cron_task = None
        if kind == "naive":
            cron_task = asyncio.create_task(
                refetch_day(
                    running.fake_url,
                    symbols,
                    *day,
                    publisher=Publisher({"bootstrap.servers": running.bootstrap, "acks": "all"}),
                    codec=codec,
                    partitions=args.partitions,
                    requests_per_minute=args.budget,
                    page_limit=args.page_limit,
                )
            )
        watch = await _watch(kind, args, running, conn, sync, symbols, expected, timeline, resumed)
        cron = None
        if cron_task is not None:
            cron = await cron_task if cron_task.done() else None
            if cron is None:
                cron_task.cancel()
        stopping.set()
        await following
        await asyncio.to_thread(publisher.flush, 30.0)
        return watch, cron, feed.published, settle_s
    finally:
        await conn.close()
        sync.close()


async def _watch(
    kind: str,
    args: argparse.Namespace,
    running: Stack,
    conn: psycopg.AsyncConnection[Any],
    sync: psycopg.Connection[Any],
    symbols: list[str],
    expected: dict[str, Any],
    timeline: Timeline,
    resumed: float,
) -> Watch:
    """Poll the database and the metrics until every bar is equal (and, ours, every job done),
    then until a sweep after that; give up after --timeout-s."""
    watch = Watch()
    resumed_wall = time.time() - (time.monotonic() - resumed)
    next_slow = 0.0
    equal_wall = None
    while True:
        elapsed = time.monotonic() - resumed
        if watch.detected_s is None:
            row = await (
                await conn.execute("select count(distinct instrument) from gaps")
            ).fetchone()
            if row and row[0] >= len(symbols):
                watch.detected_s = elapsed
        if kind == "ours" and watch.jobs_done_s is None and watch.detected_s is not None:
            row = await (
                await conn.execute(
                    "select count(*) filter (where status <> 'done'),"
                    " (select count(*) from gaps where status <> 'repaired') from backfill_jobs"
                )
            ).fetchone()
            if row and row[0] == 0 and row[1] == 0:
                watch.jobs_done_s = elapsed
        if time.monotonic() >= next_slow:
            next_slow = time.monotonic() + 1.0
            samples = await asyncio.to_thread(scrape, running.sink_url)
            oldest = t0_sample(samples, "backfill_oldest_age_seconds")
            depth = t0_sample(samples, "backfill_queue_depth")
            watch.oldest_max_s = _max(watch.oldest_max_s, oldest)
            watch.depth_max = _max(watch.depth_max, depth)
            swept_at = await asyncio.to_thread(last_sweep_at, running.sink_url)
            slo = t0_sample(samples, "slo_gap_violation_rate")
            if slo is not None and swept_at is not None and swept_at > resumed_wall:
                watch.slo_max = _max(watch.slo_max, slo)  # a sweep since the feed resumed
                if not watch.slo_samples or watch.slo_samples[-1][1] != slo:
                    watch.slo_samples.append((round(elapsed, 2), slo))
            if watch.bars_equal_s is None:
                comparison = await asyncio.to_thread(
                    compare, sync, expected, timeline.span_start_us, timeline.span_end_us
                )
                watch.comparison = comparison
                if comparison.all_equal:
                    watch.bars_equal_s = time.monotonic() - resumed
                    equal_wall = time.time()
        done = watch.bars_equal_s is not None and (kind != "ours" or watch.jobs_done_s is not None)
        if done and equal_wall is not None:
            swept_at = await asyncio.to_thread(last_sweep_at, running.sink_url)
            if swept_at is not None and swept_at > equal_wall + 0.5:
                slo = t0_sample(
                    await asyncio.to_thread(scrape, running.sink_url), "slo_gap_violation_rate"
                )
                if slo is not None:
                    watch.slo_samples.append((round(time.monotonic() - resumed, 2), slo))
                return watch
        if elapsed > args.timeout_s:
            log.warning("gave up after %.0f s: %s", elapsed, watch.comparison)
            return watch
        await asyncio.sleep(args.poll_s)


def _max(current: float | None, value: float | None) -> float | None:
    if value is None:
        return current
    return value if current is None else max(current, value)


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "instruments": args.instruments,
        "tier": "T0",
        "asset": "crypto pairs of the fake (24/7: a T0 expectation at any hour of the run)",
        "outages_minutes": list(OUTAGES_MINUTES),
        "budget_requests_per_minute": args.budget,
        "backfill_workers": args.backfill_workers,
        "budget_per_backfill_worker": max(1, args.budget // max(1, args.backfill_workers)),
        "density_tapes_per_pair_day": args.density,
        "page_limit": args.page_limit,
        "bars_intervals": BARS_INTERVALS,
        "partitions": args.partitions,
        "sweep_interval_s": args.sweep_interval_s,
        "timeout_s": args.timeout_s,
        "clock": "time.monotonic() from just before the live feed publishes its first trade after"
        " the outage (the outage's end) to: every instrument having a row in gaps; every"
        " backfill job done and every gap repaired; every 1m, 5m and 1h bar of the span the"
        " jobs fetch (the outage widened to whole hours) in the database equal to the fold of"
        " the fake's trades (OHLC and trade count exactly, volume within 1e-9), polled each second",
        "scaling": "the outage's event time is compressed: the trades after it are published at"
        " once, then as they happen; every path a fresh broker, database and processes",
        "items": "bars of the compared span; messages: history requests",
        "targets": {
            "drained_under_x_outage": TARGET_DRAIN_X,
            "t0_oldest_job_under_s": TARGET_OLDEST_S,
            "slo_gap_violation_rate_under": TARGET_SLO,
        },
        "paths": {name: PATHS[name] for name in args.paths},
    }
