"""Part (c) of the providers scenario: how much of FMP's request budget the refresh uses.

`python -m connectors run fmp` as shipped (FmpConnector through ConnectorRunner into Kafka, its
progress in PostgreSQL's `fundamentals_refresh`) refreshes `--fmp-tickers` tickers, every
statement and both periods (11 requests a ticker), from connectors.fakes.fmp's FakeFmp. The fake
runs in a process of its own (`python -m benchmarks.providers_fmp`, below), allows
`--fmp-budget` requests in any `--fmp-window-s` seconds, answers 429 past that, and appends each
request it answers to a log; the connector's budget is set to the same limit. A full refresh of
500 tickers at 120 a minute takes some 46 minutes, so the run is bounded: the connector is
stopped `--fmp-windows` windows after the fake's first request. Measured from the fake's log:
requests in each of those windows, from the first request on; how long the budget takes to
allow `--fmp-budget` more (its cycle: the window plus its guard, so the share it can use in the
long run); 429s over the whole run. From the connector: its own progress (`/stats/providers`:
done, total, ETA) just before it is stopped; tickers done are those whose every request is
marked done in `fundamentals_refresh`.

Scaling the window down (the tests do) is not free: the budget keeps a fixed 0.25 s guard per
window (connectors.budget.GUARD_S), a larger share of a short window; quote 60 s windows.

    python -m benchmarks.providers_fmp --limit 120 --window-s 60 --url-file F --requests-log L
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import statistics
import string
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
import psycopg

from benchmarks import processes
from benchmarks.common import PathResult
from benchmarks.sink import database
from connectors.fakes import refuse_where_only_real_data_flows
from connectors.fakes.fmp import API_KEY, FakeFmp, Seen
from connectors.fmp import FmpConfig
from connectors.fmp_statements import PERIODS, STATEMENTS, Unit, units
from shared import kafka_admin
from shared.errors import DeliveryError
from shared.topics import all_topics
from streams.embedded.ports import free_port

log = logging.getLogger(__name__)

NAME: Final = "fmp"
DESCRIPTION: Final = (
    "`python -m connectors run fmp` as shipped (every statement, both periods; budget set to the "
    "fake's limit), fake FMP in its own process answering 429 past the limit; requests per "
    "window in the fake's log over a bounded run, 429s, and the refresh's own ETA"
)
START_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.05
LOG_FLUSH_S: Final = 0.1
SUMMARY_PREFIX: Final = '{"connector":'
RECORDED: Final = ("AAPL", "MSFT")  # the fake's recorded companies; the rest are generated


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare part (c)'s flags."""
    add = parser.add_argument
    add("--fmp-tickers", type=int, default=500, help="tickers the FMP refresh asks for")
    add(
        "--fmp-budget",
        type=int,
        default=FmpConfig.model_fields["rate_limit"].default,
        help="requests per window: the fake's limit and the connector's --rate-limit",
    )
    add(
        "--fmp-window-s",
        type=float,
        default=FmpConfig.model_fields["rate_window_s"].default,
        help="the limit's window, seconds (the fake's and the connector's --rate-window-s)",
    )
    add("--fmp-windows", type=int, default=3, help="windows measured before the refresh is stopped")


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Part (c)'s parameters, for the results file."""
    return {
        "tickers": args.fmp_tickers,
        "requests_per_ticker": len(_units(["AAPL"])),
        "budget": f"{args.fmp_budget} per {args.fmp_window_s:g} s",
        "windows": args.fmp_windows,
        "tickers_are": f"{', '.join(RECORDED)} (recorded bodies), then seeded made-up tickers",
        "definition": "windows of --fmp-window-s from the fake's first request, counted in the "
        "fake's own log (time.monotonic() on arrival); budget_used: requests in those windows "
        "over windows x budget; eta_s: the connector's /stats/providers just before SIGTERM",
    }


def tickers(count: int, seed: int) -> list[str]:
    """`count` distinct tickers: the fake's recorded companies, then seeded 3 and 4 letters."""
    rng = random.Random(seed)
    out = dict.fromkeys(RECORDED[:count])
    while len(out) < count:
        out["".join(rng.choices(string.ascii_uppercase, k=rng.choice((3, 4))))] = None
    return list(out)


def _units(symbols: list[str]) -> list[Unit]:
    return units(symbols, STATEMENTS, PERIODS, prices=False)


def windows(times: list[float], window_s: float, count: int) -> list[list[float]]:
    """The request times in each of `count` windows of `window_s` from the first of `times` on."""
    out: list[list[float]] = [[] for _ in range(count)]
    first = min(times, default=0.0)
    for at in sorted(times):
        k = math.floor((at - first) / window_s)
        if k < count:
            out[k].append(at)
    return out


def budget_cycle_s(times: list[float], budget: int) -> float | None:
    """Mean seconds from a request to the `budget`-th after it: how long the budget takes to
    allow `budget` requests again when every request is used (the window plus its guard)."""
    ordered = sorted(times)
    gaps = [b - a for a, b in zip(ordered, ordered[budget:], strict=False)]
    return statistics.fmean(gaps) if gaps else None


def busiest(times: list[float], window_s: float) -> int:
    """The most requests in any `window_s` seconds (what the fake's limit bounds)."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def read_requests(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@contextlib.contextmanager
def _fake(args: argparse.Namespace, root: Path) -> Iterator[tuple[str, Path]]:
    """Run the fake FMP process for the block; yield its base URL and its requests log."""
    url_file, requests_log = root / "fake-fmp.url", root / "fake-fmp-requests.jsonl"
    command = [sys.executable, "-m", "benchmarks.providers_fmp", "--url-file", str(url_file)]
    command += ["--requests-log", str(requests_log), "--limit", str(args.fmp_budget)]
    command += ["--window-s", str(args.fmp_window_s)]
    log_path = root / "fake-fmp.log"
    with processes.running(command, {}, log_path) as fake:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not url_file.exists() or not url_file.read_text():
            if fake.poll() is not None or time.monotonic() > deadline:
                raise DeliveryError(f"the fake FMP did not start:\n{processes.tail(log_path)}")
            time.sleep(POLL_S)
        yield url_file.read_text(), requests_log


def _provider_stats(port: int) -> dict[str, Any] | None:
    """The connector's own progress, from its /stats/providers; None if it does not answer."""
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/providers", timeout=5) as r:
            stats: dict[str, Any] = orjson.loads(r.read())["fmp"]
            return stats
    return None


def _summary(log_path: Path) -> dict[str, Any] | None:
    """The summary line `python -m connectors run` prints when it ends."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    found = [line for line in lines if line.startswith(SUMMARY_PREFIX)]
    return orjson.loads(found[-1]) if found else None


def _done(database_url: str, run_id: str, per_ticker: int) -> tuple[int, int]:
    """Units, and tickers with every unit, that `run_id` marked done in fundamentals_refresh."""
    sql = "select count(*) from fundamentals_refresh where run_id = %s group by symbol"
    with psycopg.connect(database_url) as connection:
        counts = [row[0] for row in connection.execute(sql, (run_id,)).fetchall()]
    return sum(counts), sum(n == per_ticker for n in counts)


def _refresh(
    args: argparse.Namespace, bootstrap: str, root: Path, database_url: str
) -> dict[str, Any]:
    """Run the fake and the connector until `--fmp-windows` windows have passed; return what
    each said."""
    symbols = tickers(args.fmp_tickers, args.seed)
    symbols_file = root / "fmp-tickers.txt"
    symbols_file.write_text("\n".join(symbols) + "\n")
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    log_path = root / "connector-fmp.log"
    with _fake(args, root) as (url, requests_log):
        env = {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_CONNECTOR_HTTP_PORT": str(port),
            "MS_FMP_BASE_URL": url,
            "MS_FMP_API_KEY": API_KEY,
            "MS_FMP_SYMBOLS_FILE": str(symbols_file),
            "MS_FMP_RATE_LIMIT": str(args.fmp_budget),
            "MS_FMP_RATE_WINDOW_S": str(args.fmp_window_s),
            "MS_FMP_RUN_ID": run_id,
            "MS_FMP_DATABASE_URL": database_url,
        }
        started = time.monotonic()
        command = [sys.executable, "-m", "connectors", "run", "fmp"]
        with processes.running(command, env, log_path) as connector:
            deadline = started + START_TIMEOUT_S
            while not (seen := read_requests(requests_log)):
                if connector.poll() is not None or time.monotonic() > deadline:
                    raise DeliveryError(
                        f"the fmp connector sent no request:\n{processes.tail(log_path)}"
                    )
                time.sleep(POLL_S)
            first_s = seen[0]["at_s"]
            end_s = first_s + args.fmp_windows * args.fmp_window_s
            while time.monotonic() < end_s and connector.poll() is None:
                time.sleep(min(1.0, max(POLL_S, end_s - time.monotonic())))
            finished_early = connector.poll() is not None
            ended_s = time.monotonic()
            stats = _provider_stats(port)
            processes.stop(connector)
        exit_status = connector.returncode
    requests = read_requests(requests_log)
    total = len(_units(symbols))
    units_done, tickers_done = _done(database_url, run_id, total // len(symbols))
    return {
        "requests": requests,
        "first_s": first_s,
        "ended_s": ended_s,
        "startup_s": first_s - started,
        "finished_early": finished_early,
        "stats": stats,
        "summary": _summary(log_path),
        "exit_status": exit_status,
        "units": total,
        "units_done": units_done,
        "tickers_done": tickers_done,
        "run_id": run_id,
    }


def measure_fmp(args: argparse.Namespace, bootstrap: str, root: Path) -> PathResult:
    """Run the bounded refresh once; the requests per window of the fake's log, 429s, the ETA."""
    kafka_admin.create_topics(bootstrap, all_topics(args.partitions))  # what the CLI expects
    with database(None) as database_url:
        run = _refresh(args, bootstrap, root, database_url)
    return _result(args, run)


def _result(args: argparse.Namespace, run: dict[str, Any]) -> PathResult:
    requests, window_s, budget = run["requests"], args.fmp_window_s, args.fmp_budget
    times = [r["at_s"] for r in requests]
    # every window if it ran to the deadline; if the refresh finished first, those before
    full = min(args.fmp_windows, math.floor((run["ended_s"] - run["first_s"]) / window_s + 1e-6))
    spread = windows(times, window_s, full)
    counts = [len(w) for w in spread]
    cycle_s = budget_cycle_s(times, budget)
    rate_per_s = sum(counts) / (full * window_s) if full else None
    stats = run["stats"] or {}
    done, eta_s = stats.get("done"), stats.get("eta_s")
    rate_limited = sum(r["status"] == 429 for r in requests)
    log.info(
        "fmp: %d requests, per window %s (budget %d per %g s), %d 429s, ETA %s s",
        len(requests), counts, budget, window_s, rate_limited, eta_s,
    )  # fmt: skip
    statuses = sorted(Counter(r["status"] for r in requests).items())
    return PathResult(
        name=NAME,
        description=DESCRIPTION,
        items=sum(counts),
        messages=sum(counts),
        wire_bytes=0,
        run_seconds=[(full or 1) * window_s],
        details={
            "requests_sent": len(requests),
            "requests_in_windows": sum(counts),
            "requests_per_window": counts,
            "requests_per_min": None if rate_per_s is None else rate_per_s * 60,
            "requests_per_min_by_window": [n * 60 / window_s for n in counts],
            "budget_per_min": budget * 60 / window_s,
            "budget_used": sum(counts) / (full * budget) if full else None,
            "budget_used_lowest_window": min(counts) / budget if counts else None,
            "budget_cycle_s": cycle_s,
            "budget_used_long_run": window_s / cycle_s if cycle_s else None,
            "seconds_from_first_to_last_request_by_window": [
                w[-1] - w[0] if w else None for w in spread
            ],
            "busiest_window_requests": busiest(times, window_s),
            "rate_limited_by_fake": rate_limited,
            "rate_limited_by_connector": (
                stats["outcomes"].get("rate_limited", 0) if stats else None
            ),
            "statuses": {str(status): n for status, n in statuses},
            "full_windows": full,
            "finished_early": run["finished_early"],
            "startup_s": run["startup_s"],
            "units_done": done,
            "units_done_in_database": run["units_done"],
            "units_total": run["units"],
            "tickers_done": run["tickers_done"],
            "tickers_total": args.fmp_tickers,
            "eta_s": eta_s,
            "eta_s_at_measured_rate": (run["units"] - done) / rate_per_s
            if rate_per_s and done is not None
            else None,
            "full_refresh_s_at_measured_rate": run["units"] / rate_per_s if rate_per_s else None,
            "connector_stats": run["stats"],
            "connector_summary": run["summary"],
            "connector_exit_status": run["exit_status"],
            "run_id": run["run_id"],
            "throughput_note": "this path's trades/s and msgs/s are requests/s over its full "
            "windows, not trades; MB/s is not measured",
        },
    )


def _append(seen: list[Seen], written: int, out: TextIO) -> int:
    for request in seen[written:]:
        out.write(orjson.dumps(request).decode() + "\n")
    out.flush()
    return len(seen)


async def serve(args: argparse.Namespace) -> None:
    """Serve FakeFmp until SIGTERM, appending every request it answered to `--requests-log`."""
    fake = FakeFmp(limit=args.limit, window_s=args.window_s)
    await fake.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    with args.requests_log.open("w") as out:
        args.url_file.write_text(fake.base_url)
        log.info("fake FMP on %s, %d per %g s", fake.base_url, args.limit, args.window_s)
        written = 0
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), LOG_FLUSH_S)
            written = _append(fake.requests, written, out)
        await fake.stop()
        _append(fake.requests, written, out)
    log.info("fake FMP stopping: %d requests, %d 429s", len(fake.requests), fake.rate_limited)


def main(argv: list[str]) -> int:
    refuse_where_only_real_data_flows("FMP")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.providers_fmp", description=__doc__)
    parser.add_argument("--limit", type=int, required=True, help="requests per window and key")
    parser.add_argument("--window-s", type=float, required=True, help="the limit's window")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write the URL")
    parser.add_argument(
        "--requests-log", type=Path, required=True, help="JSON Lines, one a request"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
