"""Scenario `read_api`: `GET /bars/{symbol}` on a year of 1m bars, against a hand-written
endpoint and OFFSET pages.

An embedded PostgreSQL holds `--days` of 1m bars (default a year, 525,600) of `--symbol`, a
random walk around 187 USD drawn in SQL, beside the same for `--noise` other symbols, the rows
interleaved by minute as the sink writes them (so the index, not the table's order, finds one
symbol); then VACUUM ANALYZE, as autovacuum would leave it. Both servers run as processes of
their own, and one aiohttp client asks them one request at a time:

- ours_*: `python -m gateways.http` as shipped (JSON from json_agg, CSV from COPY, Parquet by
  Arrow; keyset pages), with a read key and MS_API_RATE_LIMIT far above what the run asks.
  day: the newest day, one 1,440-bar page; page_mid: 1,000 bars from `start=` mid-year;
  cursor_deep: the 1,000 bars `--deep` of the way in, by the `Link` a page before gave;
  year_*: the whole year by `Link`/cursor, `--walk-limit` bars a page, in JSON, CSV, Parquet.
- naive_*: the same route semantics hand-written (`python -m benchmarks.read_api_peer`, aiohttp:
  psycopg rows into dicts by dict_row, times to micros in Python, orjson; keyset pages by
  fetching limit + 1), checked to give the same bars as ours.
- offset_page_deep: the deep page by `order by ts offset N limit 1000` (same json_agg as ours,
  so only the paging differs), in the peer server.

Page paths: a run is one request (p50/p99 of `--page-repeats`); year paths: a run is the whole
walk (p50/p99 of `--walk-repeats` walks; per-page latencies in details). Warm-up requests and
walks come first and are checked (row counts, times contiguous, close sums equal across formats,
the peers' bars equal to ours) but not timed. Wire bytes are the response's status line,
headers and body as received. RSS and CPU are the serving process's, and CPU also
PostgreSQL's (postmaster and children): json_agg moves the per-bar work from one to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
import orjson
import psycopg
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from benchmarks import common, processes
from benchmarks.common import PathResult, Result
from gateways.bars_api import MAX_LIMIT
from shared.errors import ConfigError
from shared.times import rfc3339
from streams.embedded.ports import free_port

log = logging.getLogger(__name__)

MINUTE_US: Final = 60_000_000
DAY_BARS: Final = 1_440
START_US: Final = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
PRICES: Final = {"AAPL": 187.0, "AAL": 12.0, "MSFT": 420.0, "NVDA": 135.0}
API_KEY: Final = "bench-read-key"
TARGET_S: Final = 1.0
PATHS: Final[dict[str, str]] = {
    "ours_json_day": "ours: the newest day, start= and limit=1440, one JSON page",
    "ours_json_page_mid": "ours: 1,000 bars from start= in the middle of the data, JSON",
    "ours_cursor_deep": "ours: the 1,000 bars --deep of the way in, by a page's Link (cursor=)",
    "ours_year_json": "ours: every bar by Link/cursor, --walk-limit a page, JSON (json_agg)",
    "ours_year_csv": "ours: every bar by Link/cursor, --walk-limit a page, CSV (COPY)",
    "ours_year_parquet": "ours: every bar by Link/cursor, --walk-limit a page, Parquet (Arrow)",
    "naive_json_day": "hand-written: the newest day; psycopg dict_row rows, Python times, orjson",
    "naive_year_json": "hand-written: every bar by cursor, --walk-limit a page, dicts + orjson",
    "offset_page_deep": "the deep page by order by ts offset N limit 1000 (json_agg as ours)",
}
WALKS: Final = {  # year path: who serves it, in what format
    "ours_year_json": ("ours", "json"),
    "ours_year_csv": ("ours", "csv"),
    "ours_year_parquet": ("ours", "parquet"),
    "naive_year_json": ("naive", "json"),
}
PAIRS: Final = {  # peer: the path of ours it is compared with
    "naive_json_day": "ours_json_day",
    "naive_year_json": "ours_year_json",
    "offset_page_deep": "ours_cursor_deep",
}
DISTRIBUTIONS: Final = ("aiohttp", "psycopg", "psycopg-pool", "orjson", "pyarrow")
LOAD_SQL: Final = """
insert into bars (instrument, interval, ts, revision, open, high, low, close, volume, vwap,
    trade_count, buy_volume, sell_volume, source, ts_event, ts_recv, seq)
with steps as materialized (
    select s.n, s.symbol, s.price, m.i, random_normal(0, %(sigma)s) as r, random() as u_high,
        random() as u_low, random() as u_volume, random() as u_split, random() as u_vwap
    from generate_series(0, %(minutes)s - 1) as m(i),
        unnest(%(symbols)s::text[], %(prices)s::float8[]) with ordinality as s(symbol, price, n)
), walk as (
    select *, price * exp(sum(r) over w - r) as open, price * exp(sum(r) over w) as close,
        to_timestamp(%(start_s)s) + i * interval '1 minute' as ts
    from steps window w as (partition by n order by i)
), shaped as (
    select *, greatest(open, close) * (1 - 0.0003 * ln(1 - u_high)) as high,
        least(open, close) * (1 + 0.0003 * ln(1 - u_low)) as low,
        round(20000 * (0.2 - ln(1 - u_volume))) as volume,
        round(20000 * (0.2 - ln(1 - u_volume)) * (0.3 + 0.4 * u_split)) as buy
    from walk
)
select symbol, '1m', ts, 0, open, high, low, close, volume, low + (high - low) * u_vwap,
    1 + floor(volume / 90)::bigint, buy, volume - buy, 'alpaca',
    ts + make_interval(secs => 59 - 20 * u_split),
    ts + make_interval(secs => 60.03 + 0.02 * u_vwap), i + 1
from shaped order by i, n
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the scenario's flags."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    add = parser.add_argument
    add("--symbol", default="AAPL", choices=sorted(PRICES), help="the symbol asked for")
    add("--days", type=int, default=365, help="days of 1m bars per symbol (at least 1)")
    add("--noise", type=int, default=3, choices=range(4), help="other symbols in the table")
    add("--sigma", type=float, default=0.00035, help="the walk's sd of 1m log returns")
    add("--seed", type=float, default=0.42, help="PostgreSQL setseed() before the draws")
    add("--page-bars", type=int, default=1_000, help="bars of the mid and deep pages")
    add("--deep", type=float, default=0.9, help="where the deep page starts, a share of the data")
    add("--walk-limit", type=int, default=MAX_LIMIT, help="bars a page of the year walks")
    add("--page-repeats", type=int, default=200, help="measured requests of each page path")
    add("--page-warmup", type=int, default=20, help="warm-up requests of each page path")
    add("--walk-repeats", type=int, default=5, help="measured walks of each year path")
    add("--walk-warmup", type=int, default=1, help="warm-up walks of each year path (checked)")
    common.add_paths_flag(parser, PATHS, tuple(PATHS))
    add("--keep-temp", action="store_true", help="keep the database and the servers' logs")


class ReadApiResult(Result):
    """A Result comparing each peer with the path of ours that asks the same, with targets."""

    __slots__ = ()

    def speedups(self) -> dict[str, float]:
        """The peer's median time over ours', for each pair both ran."""
        names = {p.name for p in self.paths}
        return {
            peer: self.path(peer).seconds / self.path(ours).seconds
            for peer, ours in PAIRS.items()
            if {peer, ours} <= names
        }

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["speedup"] = {f"{PAIRS[peer]}_vs_{peer}": x for peer, x in self.speedups().items()}
        data["targets"] = {p.name: _target(p) for p in self.paths if p.name.startswith("ours_")}
        return data


def _target(path: PathResult) -> dict[str, Any]:
    """Under a second: each request of a page path (p99); each page and the walk of a year."""
    p99_s = (path.latency_p99_ms or math.inf) / 1000
    found = {"under_s": TARGET_S, "request_p99_s": None, "walk_p99_s": None}
    if "pages" in path.details:
        page_p99_s = path.details["pages"]["latency_p99_ms"] / 1000
        found |= {"request_p99_s": page_p99_s, "walk_p99_s": p99_s}
        return found | {"request_met": page_p99_s < TARGET_S, "walk_met": p99_s < TARGET_S}
    return found | {"request_p99_s": p99_s, "request_met": p99_s < TARGET_S}


def run(args: argparse.Namespace) -> Result:
    """Load the bars, start both servers, then measure the selected paths in order."""
    if args.days < 1 or 2 * args.page_bars > args.days * DAY_BARS:
        raise ConfigError("--days must be at least 1 and hold twice --page-bars bars")
    if min(args.page_repeats, args.walk_repeats, args.walk_warmup) < 1:
        raise ConfigError("--page-repeats, --walk-repeats and --walk-warmup are at least 1")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="marketstream-bench-read-api-"))
    try:
        with common.postgres(root) as url:
            facts = load(url, args)
            with servers(root, url) as (ours, naive):
                paths = asyncio.run(measure_all(args, ours, naive))
    finally:
        if not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)
    parameters = {
        **{k: v for k, v in vars(args).items() if k not in ("paths", "out", "log_level")},
        "bars_of_symbol": args.days * DAY_BARS,
        "data": facts,
        "client": "one aiohttp ClientSession, one connection, requests one at a time",
        "wire_bytes": "the response's status line, headers and body as received",
        "rss_and_cpu": "RSS and cpu_s_per_run of the serving process (gateways.http, or the peer"
        " server); postgres_cpu_s_per_run of the PostgreSQL server's processes",
        "load_average_1_5_15m": {"before": load_before, "after": os.getloadavg()},
        "files": str(root) if args.keep_temp else None,
        "paths": {name: PATHS[name] for name in args.paths},
    }
    return ReadApiResult(
        scenario="read_api",
        unit="bars",
        baseline="ours",
        parameters=parameters,
        paths=paths,
        machine=common.machine_info(DISTRIBUTIONS, {"postgresql": facts["server_version"]}),
    )


# data and servers




def load(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill `bars` with the symbol and its noise, interleaved by minute; return what it holds."""
    symbols = [args.symbol, *[s for s in PRICES if s != args.symbol][: args.noise]]
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("set local work_mem = '256MB'")
            conn.execute("select setseed(%s)", (args.seed,))
            conn.execute(
                LOAD_SQL,
                {
                    "sigma": args.sigma,
                    "minutes": args.days * DAY_BARS,
                    "symbols": symbols,
                    "prices": [PRICES[s] for s in symbols],
                    "start_s": START_US // 1_000_000,
                },
            )
        loaded_s = time.perf_counter() - started
        conn.execute("vacuum (analyze) bars")
        conn.execute("checkpoint")
        row = conn.execute(
            "select count(*), min(close), max(close), sum(volume) from bars where instrument = %s",
            (args.symbol,),
        ).fetchone()
        assert row is not None
        sizes = conn.execute(
            "select count(*) from bars union all select pg_table_size('bars')"
            " union all select pg_indexes_size('bars')"
        ).fetchall()
        names = ("server_version", "shared_buffers", "work_mem", "random_page_cost")
        server = {n: conn.execute(f"show {n}").fetchone()[0] for n in names}  # type: ignore[index]
    log.info("loaded %d bars in %.1f s (then vacuum analyze)", sizes[0][0], loaded_s)
    return {
        "symbols": symbols,
        "rows_in_table": sizes[0][0],
        "table_mb": sizes[1][0] / common.MB,
        "indexes_mb": sizes[2][0] / common.MB,
        "load_s": loaded_s,
        "symbol_bars": row[0],
        "symbol_close_min_max": [row[1], row[2]],
        "symbol_volume_sum": row[3],
        "first_ts": rfc3339(START_US),
        **server,
    }


@dataclass(frozen=True, slots=True)
class Server:
    """A serving process and where to reach it."""

    url: str
    pid: int
    pg_dir: Path  # the database's data directory: its postmaster's processes are counted too


@contextlib.contextmanager
def servers(root: Path, url: str) -> Iterator[tuple[Server, Server]]:
    """Start ours (`python -m gateways.http`) and the peer server; stop both after."""
    ours_port, naive_port = free_port(), free_port()
    env = {
        "MS_API_HTTP_HOST": "127.0.0.1",
        "MS_API_HTTP_PORT": str(ours_port),
        "MS_DATABASE_URL": url,
        "MS_API_KEYS": API_KEY,
        "MS_API_RATE_LIMIT": "1000000/second",
        "MS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # no broker: the bars route needs none
    }
    naive = [sys.executable, "-m", "benchmarks.read_api_peer", "--port", str(naive_port), url]
    with (
        processes.running([sys.executable, "-m", "gateways.http"], env, root / "api.log") as api,
        processes.running(naive, {}, root / "naive.log") as peer,
    ):
        for process, port, log_path in ((api, ours_port, "api"), (peer, naive_port, "naive")):
            _wait_live(f"http://127.0.0.1:{port}/health/live", process, root / f"{log_path}.log")
        yield (
            Server(f"http://127.0.0.1:{ours_port}", api.pid, root / "pg"),
            Server(f"http://127.0.0.1:{naive_port}", peer.pid, root / "pg"),
        )


def _wait_live(url: str, process: Any, log_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=2):
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer:\n{processes.tail(log_path)}")
        time.sleep(0.1)


# the client


@dataclass(slots=True)
class Answer:
    """One response: its body, the bytes it took, its next page and how long it took."""

    body: bytes
    wire_bytes: int
    next_path: str | None
    seconds: float


async def get(client: aiohttp.ClientSession, url: str) -> Answer:
    """GET `url` with the read key; raise RuntimeError unless it answers 200."""
    started = time.perf_counter()
    async with client.get(url, headers={"X-API-Key": API_KEY}) as response:
        body = await response.read()
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {url}: {response.status} {body[:300]!r}")
    head = len(f"HTTP/1.1 {response.status} {response.reason}\r\n\r\n")
    head += sum(len(k) + len(v) + 4 for k, v in response.raw_headers)
    link = response.headers.get("Link")
    next_path = link[1 : link.index(">")] if link else None
    return Answer(body, head + len(body), next_path, seconds)


@dataclass(slots=True)
class Bars:
    """What a run's bars add up to, for checking one path against another."""

    rows: int = 0
    first_us: int | None = None
    last_us: int | None = None
    closes: list[float] = field(default_factory=list)

    def add(self, ts_us: list[int], closes: list[float]) -> None:
        if ts_us and self.last_us is not None and ts_us[0] <= self.last_us:
            raise RuntimeError(f"bars out of order at {ts_us[0]} after {self.last_us}")
        if any(b <= a for a, b in itertools.pairwise(ts_us)):
            raise RuntimeError("bars out of order within a page")
        self.rows += len(ts_us)
        self.first_us = ts_us[0] if self.first_us is None and ts_us else self.first_us
        self.last_us = ts_us[-1] if ts_us else self.last_us
        self.closes += closes

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "first": self.first_us,
            "last": self.last_us,
            "close_fsum": math.fsum(self.closes),
        }


def bars_of(kind: str, body: bytes) -> tuple[list[int], list[float]]:
    """The times (micros) and closes of one page in `kind` (json, csv or parquet)."""
    if kind == "json":
        bars = orjson.loads(body)["bars"]
        return [b["ts_us"] for b in bars], [float(b["close"]) for b in bars]
    table = (
        pq.read_table(io.BytesIO(body)) if kind == "parquet" else pa_csv.read_csv(io.BytesIO(body))
    )
    return table["ts_us"].to_pylist(), table["close"].to_pylist()


async def walk(
    client: aiohttp.ClientSession, server: Server, first: str, kind: str, check: Bars | None
) -> list[Answer]:
    """Follow `Link` from `first` to the last page; add each page's bars to `check` if given."""
    answers: list[Answer] = []
    path: str | None = first
    while path is not None:
        answer = await get(client, server.url + path)
        answers.append(answer)
        if check is not None:
            check.add(*bars_of(kind, answer.body))
        path = answer.next_path
    return answers


async def measure_all(args: argparse.Namespace, ours: Server, naive: Server) -> list[PathResult]:
    """Every selected path, in order, over one client session."""
    total = args.days * DAY_BARS
    deep = max(args.page_bars, min(round(total * args.deep), total - args.page_bars))
    sym = f"/bars/{args.symbol}"

    def page(start: int, limit: int, **more: object) -> str:  # start: a bar's index
        return f"{sym}?" + urlencode(
            {"interval": "1m", "start": rfc3339(START_US + start * MINUTE_US), "limit": limit}
            | more
        )

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:
        before = await get(client, ours.url + page(deep - args.page_bars, args.page_bars))
        assert before.next_path is not None, "the page before the deep one named no next"
        offset = urlencode({"interval": "1m", "offset": deep, "limit": args.page_bars})
        pages: dict[str, tuple[Server, str, int]] = {
            "ours_json_day": (ours, page(total - DAY_BARS, DAY_BARS), DAY_BARS),
            "ours_json_page_mid": (ours, page(total // 2, args.page_bars), args.page_bars),
            "ours_cursor_deep": (ours, before.next_path, args.page_bars),
            "naive_json_day": (naive, page(total - DAY_BARS, DAY_BARS), DAY_BARS),
            "offset_page_deep": (naive, f"{sym}?{offset}", args.page_bars),
        }
        end = rfc3339(START_US + total * MINUTE_US)
        results: list[PathResult] = []
        seen: dict[str, Any] = {}
        for name in args.paths:
            if name in pages:
                server, path, rows = pages[name]
                results.append(await measure_page(client, args, name, server, path, rows, seen))
            else:
                who, kind = WALKS[name]
                server = ours if who == "ours" else naive
                year = page(0, args.walk_limit, end=end, format=kind)
                results.append(await measure_walk(client, args, name, server, year, kind, seen))
        return results


def postgres_cpu_s(data_dir: Path) -> float | None:
    """CPU seconds the PostgreSQL server of `data_dir` (its postmaster and the processes it
    runs now: backends, checkpointer, autovacuum) has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        total = processes.cpu_s(postmaster) or 0.0
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if proc.name.isdigit() and _ppid(proc) == postmaster:
                    total += processes.cpu_s(int(proc.name)) or 0.0
        return total
    return None


def _ppid(proc: Path) -> int:
    return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _cpu(server: Server) -> tuple[float | None, float | None]:
    return processes.cpu_s(server.pid), postgres_cpu_s(server.pg_dir)


def _server_before(server: Server) -> tuple[float | None, tuple[float | None, float | None]]:
    processes.reset_peak(server.pid)
    rss = processes.status_bytes(server.pid, "VmRSS")
    return (None if rss is None else rss / common.MB), _cpu(server)


def _server_after(
    server: Server, cpu_before: tuple[float | None, float | None], runs: int
) -> dict[str, Any]:
    peak = processes.status_bytes(server.pid, "VmHWM")
    per_run = [
        None if after is None or before is None else (after - before) / runs
        for before, after in zip(cpu_before, _cpu(server), strict=True)
    ]
    return {
        "rss_peak_mb": None if peak is None else peak / common.MB,
        "cpu_s_per_run": per_run[0],
        "postgres_cpu_s_per_run": per_run[1],
    }


async def measure_page(
    client: aiohttp.ClientSession,
    args: argparse.Namespace,
    name: str,
    server: Server,
    path: str,
    rows: int,
    seen: dict[str, Any],
) -> PathResult:
    """Warm up (the first answer checked), then time `--page-repeats` requests of one page."""
    first = await get(client, server.url + path)
    bars = orjson.loads(first.body)["bars"]
    if len(bars) != rows or (first.next_path is not None and name.endswith("_day")):
        raise RuntimeError(f"{name}: {len(bars)} bars (next {first.next_path}), not {rows}")
    twin = PAIRS.get(name)
    if twin in seen and seen[twin] != bars:
        raise RuntimeError(f"{name}: its bars differ from {twin}'s")
    seen[name] = bars
    for _ in range(args.page_warmup):
        await get(client, server.url + path)
    rss_before, cpu_before = _server_before(server)
    answers = [await get(client, server.url + path) for _ in range(args.page_repeats)]
    after = _server_after(server, cpu_before, len(answers))
    seconds = [a.seconds for a in answers]
    p50, p99 = common.percentiles_ms(seconds)
    log.info("%s: p50 %.2f ms, p99 %.2f ms", name, p50, p99)
    return PathResult(
        name=name,
        description=PATHS[name],
        items=rows,
        messages=1,
        wire_bytes=answers[-1].wire_bytes,
        run_seconds=seconds,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(seconds),
        latency_of="one request",
        rss_before_mb=rss_before,
        rss_peak_mb=after.pop("rss_peak_mb"),
        details={"request": path, "first_ts": bars[0]["ts"], "server": after},
    )


async def measure_walk(
    client: aiohttp.ClientSession,
    args: argparse.Namespace,
    name: str,
    server: Server,
    first: str,
    kind: str,
    seen: dict[str, Any],
) -> PathResult:
    """Warm up (every bar of the first walk checked), then time `--walk-repeats` walks."""
    check = Bars()
    await walk(client, server, first, kind, check)
    total = args.days * DAY_BARS
    summary = check.summary()
    expected = (total, START_US, START_US + (total - 1) * MINUTE_US)
    if (summary["rows"], summary["first"], summary["last"]) != expected:
        raise RuntimeError(f"{name}: {summary} is not the {expected} expected")
    for other in (p for p in seen if p in WALKS):
        if seen[other] != summary:
            raise RuntimeError(f"{name}: {summary} differs from {other}'s {seen[other]}")
    seen[name] = summary
    for _ in range(args.walk_warmup - 1):
        await walk(client, server, first, kind, None)
    rss_before, cpu_before = _server_before(server)
    runs: list[list[Answer]] = []
    seconds: list[float] = []
    for _ in range(args.walk_repeats):
        started = time.perf_counter()
        runs.append(await walk(client, server, first, kind, None))
        seconds.append(time.perf_counter() - started)
    after = _server_after(server, cpu_before, len(runs))
    page_seconds = [a.seconds for run in runs for a in run]
    p50, p99 = common.percentiles_ms(seconds)
    page_p50, page_p99 = common.percentiles_ms(page_seconds)
    wire = sum(a.wire_bytes for a in runs[-1])
    log.info(
        "%s: %.2f s a walk (median), %.1f MB, %d pages",
        name,
        statistics.median(seconds),
        wire / common.MB,
        len(runs[-1]),
    )
    return PathResult(
        name=name,
        description=PATHS[name],
        items=total,
        messages=len(runs[-1]),
        wire_bytes=wire,
        run_seconds=seconds,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_samples=len(seconds),
        latency_of=f"whole walk, {len(runs[-1])} requests",
        rss_before_mb=rss_before,
        rss_peak_mb=after.pop("rss_peak_mb"),
        details={
            "first_request": first,
            "format": kind,
            "wire_mb": wire / common.MB,
            "pages": {
                "count": len(runs[-1]),
                "latency_p50_ms": page_p50,
                "latency_p99_ms": page_p99,
                "latency_of": "one page request",
            },
            "checked": summary,
            "server": after,
        },
    )
