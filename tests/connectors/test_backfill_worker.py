"""`python -m connectors backfill` end to end: a queued job's span comes back from the fake
Alpaca REST history through the real bar worker, exactly; a history that keeps failing lands
the job in the dead-letter table and a requeue repairs it; a retry after a half-published
attempt is a source of its own; two workers on one queue publish each job once; a worker
stopped mid-job leaves it to be reclaimed. And the pure parts, and the start-up errors."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from aiohttp import web
from conftest import RunningWorker, Started, eventually, read_topic, run_module, wait_http
from psycopg.rows import dict_row

from connectors.backfill_plan import (
    backfill_source,
    fetch_span,
    history_provider,
    retry_backoff_s,
)
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from connectors.fakes.alpaca_rest import FakeAlpacaRest, trades_in
from connectors.universe import UniverseRow, store_universe
from shared.backfill import queue
from shared.backfill.jobs import job_from_row
from shared.codec import Codec
from shared.times import micros_of
from shared.topics import TRADES
from streams.embedded.ports import free_port

S = 1_000_000  # µs in a second
MINUTE_US = 60 * S
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
# 2024-03-12, a Tuesday: 14:05 UTC is 10:05 in New York (EDT), within the regular session,
# where the fake prints every minute, as a T0 stock must.
GAP_START_US = 1_710_252_300 * S
GAP_END_US = GAP_START_US + 10 * MINUTE_US
# The longest interval sets the span fetched. With 1h the 10-minute gap is fetched as the hour
# 14:00-15:00 (about 700 trades, one page); the default 1d would fetch the whole UTC day, and
# fold it, in every test, for nothing more to check.
INTERVALS = {"1m": MINUTE_US, "5m": 5 * MINUTE_US, "1h": HOUR_US}
SPAN = (GAP_START_US - 5 * MINUTE_US, GAP_START_US + 55 * MINUTE_US)
OUTAGE = {"code": 50010000, "message": "internal server error"}

Ohlcvn = tuple[float, float, float, float, float, int]  # open, high, low, close, volume, trades
Bars = dict[tuple[str, int], Ohlcvn]  # (interval, window start µs) -> its values


@dataclass(eq=False)
class FlakyAlpacaRest(FakeAlpacaRest):
    """The fake, with switches: `down` answers HTTP 500 to everything, `delay_s` delays every
    answer, and a `hold` event holds every request (counted in `held`) until it is set."""

    down: bool = False
    delay_s: float = 0.0
    hold: asyncio.Event | None = None
    held: int = 0
    outage_answers: int = 0

    def add_routes(self, app: web.Application) -> None:
        @web.middleware
        async def flaky(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if self.hold is not None:
                self.held += 1
                await self.hold.wait()
            await asyncio.sleep(self.delay_s)
            if self.down:
                self.outage_answers += 1
                return web.json_response(OUTAGE, status=500)
            return await handler(request)

        app.middlewares.append(flaky)
        super().add_routes(app)


@pytest.fixture
async def fake() -> AsyncIterator[FlakyAlpacaRest]:
    server = FlakyAlpacaRest()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def aconn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection for the predicates `eventually` polls (they are synchronous)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@dataclass(frozen=True)
class Backfill:
    url: str  # of its status endpoints
    started: Started


@pytest.fixture
def start_backfill(
    bootstrap: str,
    database_url: str,
    fake: FlakyAlpacaRest,
    start_process: Callable[[list[str], dict[str, str]], Started],
) -> Callable[..., Backfill]:
    """Start `python -m connectors backfill` against the fake; return it once it serves."""

    def start(worker_id: str = "backfill-a", **env: str) -> Backfill:
        port = free_port()
        started = start_process(
            ["connectors", "backfill"],
            {
                "MS_KAFKA_BOOTSTRAP": bootstrap,
                "MS_DATABASE_URL": database_url,
                "MS_BACKFILL_HTTP_PORT": str(port),
                "MS_BACKFILL_WORKER_ID": worker_id,
                "MS_BACKFILL_POLL_S": "0.1",
                "MS_BARS_INTERVALS": ",".join(INTERVALS),
                "MS_ALPACA_REST_URL": fake.url,
                "MS_ALPACA_FEED": "iex",
                "ALPACA_API_KEY": KEY_ID,
                "ALPACA_SECRET_KEY": SECRET_KEY,
                **env,
            },
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live", timeout_s=30)
        return Backfill(url, started)

    return start


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def bar_worker(start_worker: Callable[..., RunningWorker]) -> RunningWorker:
    return start_worker(
        MS_WORKER_AGENTS="aggregate_bars,sink_bars", MS_BARS_INTERVALS=",".join(INTERVALS)
    )


def reference(symbol: str, start_us: int, end_us: int) -> Bars:
    """Fold the fake's own trades of [start_us, end_us) into bars, one trade at a time."""
    tape = trades_in(symbol, start_us * 1000, (end_us - 1) * 1000, crypto=False)
    bars: dict[tuple[str, int], list[Any]] = {}
    for ts_ns, price, size in zip(
        tape.ts_ns.tolist(), tape.price.tolist(), tape.size.tolist(), strict=True
    ):
        ts_us = ts_ns // 1000
        for name, length in INTERVALS.items():
            bar = bars.setdefault((name, ts_us - ts_us % length), [price, price, price, 0, 0.0, 0])
            bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
            bar[4] += size
            bar[5] += 1
    return {key: (o, h, low, c, v, n) for key, (o, h, low, c, v, n) in bars.items()}


def span_trades(symbol: str) -> int:
    """How many trades the fake has of `symbol` in SPAN."""
    return len(trades_in(symbol, SPAN[0] * 1000, (SPAN[1] - 1) * 1000, crypto=False))


def stored(db: psycopg.Connection[Any], instrument: str) -> tuple[Bars, set[str]]:
    """The bars of `instrument` in the database, and the sources they came from."""
    rows = db.execute(
        "select interval, ts, open, high, low, close, volume, trade_count, source from bars"
        " where instrument = %s",
        (instrument,),
    ).fetchall()
    bars = {(r[0], micros_of(r[1])): (r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows}
    return bars, {r[8] for r in rows}


def jobs(db: psycopg.Connection[Any]) -> dict[int, tuple[str, int, str | None]]:
    """Every job: its status, attempts and the worker that claimed it last."""
    rows = db.execute("select id, status, attempts, claimed_by from backfill_jobs").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def metric(url: str, line_start: str) -> float:
    """The sum of the samples whose line starts with `line_start` on `url`/metrics; 0 if none."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


async def enqueue_gap(
    aconn: psycopg.AsyncConnection[Any], instrument: str, provider: str | None = "alpaca"
) -> int:
    return await queue.enqueue(
        aconn,
        instrument=instrument,
        interval="1m",
        start_us=GAP_START_US,
        end_us=GAP_END_US,
        priority=queue.priority_for_tier("T0"),
        provider=provider,
    )


async def queue_job(aconn: psycopg.AsyncConnection[Any], job_id: int) -> queue.Job:
    async with aconn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute("select * from backfill_jobs where id = %s", (job_id,))
        row = await cursor.fetchone()
    assert row is not None
    return job_from_row(row)


def trades_by_source(codec: Codec, messages: list[Any]) -> dict[str, list[int]]:
    """The trade count of every TradeBatch message on md.trades.v1, by source, in order."""
    counts: dict[str, list[int]] = {}
    for message in messages:
        batch = codec.decode_trade_batch(message.value())
        counts.setdefault(batch.source, []).append(len(batch))
    return counts


async def test_backfill_gap_in_session_stores_exactly_the_bars_of_the_whole_windows(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    fake: FlakyAlpacaRest,
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_worker: Callable[..., RunningWorker],
    start_backfill: Callable[..., Backfill],
) -> None:
    # the job names no provider: the universe's first with trade history is asked
    row = UniverseRow("AAPL", "NASDAQ", "stock", "T0", True, ("finnhub", "alpaca"))
    store_universe(database_url, [row], "test_backfill_worker")
    expected = reference("AAPL", *SPAN)
    worker = bar_worker(start_worker)
    url = start_backfill().url

    job_id = await enqueue_gap(aconn, "AAPL", provider=None)

    await eventually(
        lambda: jobs(db)[job_id][0] == "done" and len(stored(db, "AAPL")[0]) == len(expected),
        timeout_s=40,
        what="the job done and its bars stored",
    )
    bars, sources = stored(db, "AAPL")
    assert len(expected) == 60 + 12 + 1, "every minute of the hour printed"
    assert bars == expected
    assert sources == {f"backfill:{job_id}"}
    assert jobs(db)[job_id] == ("done", 1, "backfill-a")
    assert [r.path for r in fake.requests] == ["/v2/stocks/trades"]
    assert metric(url, 'backfill_jobs_total{outcome="done"}') == 1
    assert metric(worker.url, "dead_letters_total") == 0, "no trade was late"


async def test_backfill_history_failing_dead_letters_the_job_and_requeue_repairs_it(
    fake: FlakyAlpacaRest,
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_backfill: Callable[..., Backfill],
) -> None:
    fake.down = True
    url = start_backfill(
        MS_BACKFILL_MAX_ATTEMPTS="3",
        MS_BACKFILL_BACKOFF_BASE_S="0.05",
        MS_BACKFILL_BACKOFF_CAP_S="0.2",
    ).url

    job_id = await enqueue_gap(aconn, "AAPL")

    await eventually(lambda: jobs(db)[job_id][0] == "failed", what="the job failed for good")
    (letter,) = await queue.list_dead_letters(aconn)
    assert (letter.job_id, letter.instrument, letter.attempts) == (job_id, "AAPL", 3)
    assert [e.attempt for e in letter.errors] == [1, 2, 3]
    assert all("HTTP 500: internal server error" in e.error for e in letter.errors)
    assert "(attempt 3 of 3)" in letter.errors[-1].error
    assert {e.worker for e in letter.errors} == {"backfill-a"}
    assert fake.outage_answers == 3
    assert metric(url, 'backfill_jobs_total{outcome="retried"}') == 2
    assert metric(url, 'backfill_jobs_total{outcome="failed"}') == 1

    fake.down = False
    again = await queue.requeue_dead_letter(aconn, letter.id)

    await eventually(lambda: jobs(db)[again][0] == "done", what="the requeued job done")
    assert jobs(db)[again] == ("done", 1, "backfill-a")
    assert metric(url, 'backfill_jobs_total{outcome="done"}') == 1


async def test_backfill_retry_after_a_half_published_attempt_is_a_source_of_its_own(
    bootstrap: str,
    codec: Codec,
    fake: FlakyAlpacaRest,
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_worker: Callable[..., RunningWorker],
    start_backfill: Callable[..., Backfill],
) -> None:
    fake.answer_next(500, OUTAGE, after=1)  # the first attempt's second page
    expected = reference("MSFT", *SPAN)
    worker = bar_worker(start_worker)
    start_backfill(MS_BACKFILL_PAGE_LIMIT="200", MS_BACKFILL_BACKOFF_BASE_S="0.05")

    job_id = await enqueue_gap(aconn, "MSFT")

    retry = backfill_source(job_id, 2)
    await eventually(
        lambda: jobs(db)[job_id][0] == "done" and stored(db, "MSFT") == (expected, {retry}),
        timeout_s=40,
        what="the retry's bars, all of them, replacing the first attempt's",
    )
    assert jobs(db)[job_id] == ("done", 2, "backfill-a")
    pages = -(-span_trades("MSFT") // 200)
    messages = read_topic(bootstrap, TRADES, lambda m: len(m) >= 1 + pages + 1)
    assert trades_by_source(codec, messages) == {
        f"backfill:{job_id}": [200],  # one page, then the 500: its clock is left open
        retry: [200] * (pages - 1) + [span_trades("MSFT") - 200 * (pages - 1), 0],
    }
    assert metric(worker.url, "dead_letters_total") == 0, "no trade was late"


async def test_backfill_two_workers_on_one_queue_publish_each_job_once(
    bootstrap: str,
    codec: Codec,
    fake: FlakyAlpacaRest,
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_backfill: Callable[..., Backfill],
) -> None:
    fake.delay_s = 0.3  # a job outlasts a poll: the idle worker takes the next one
    workers = [start_backfill("backfill-a"), start_backfill("backfill-b")]
    symbols = ["AAPL", "MSFT", "TSLA", "NVDA", "SPY", "AMD", "INTC", "ORCL"]

    ids = {await enqueue_gap(aconn, symbol): symbol for symbol in symbols}

    await eventually(
        lambda: all(status == "done" for status, _, _ in jobs(db).values()),
        what="every job done",
    )
    assert set(jobs(db)) == set(ids)
    assert {attempts for _, attempts, _ in jobs(db).values()} == {1}
    assert {worker for _, _, worker in jobs(db).values()} == {"backfill-a", "backfill-b"}
    expected = {f"backfill:{job_id}": span_trades(s) for job_id, s in ids.items()}
    counts = trades_by_source(
        codec,
        read_topic(
            bootstrap,
            TRADES,
            lambda messages: len(messages) >= 2 * len(symbols),
        ),
    )
    assert counts == {source: [n, 0] for source, n in expected.items()}, (
        "each job's one page and its closing heartbeat, once"
    )
    for worker in workers:
        worker.started.process.terminate()
    assert [worker.started.process.wait(15) for worker in workers] == [0, 0]


async def test_backfill_stopped_mid_job_leaves_it_running_and_a_worker_reclaims_it(
    fake: FlakyAlpacaRest,
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_backfill: Callable[..., Backfill],
) -> None:
    fake.hold = hold = asyncio.Event()  # the first worker's request stays unanswered
    first = start_backfill("backfill-a")
    job_id = await enqueue_gap(aconn, "AAPL")
    await eventually(lambda: fake.held == 1, what="the history asked")

    first.started.process.terminate()

    await eventually(lambda: first.started.process.poll() is not None, what="stopped")
    assert first.started.process.returncode == 0
    assert "left running for reclaim_stale" in first.started.output()
    assert jobs(db)[job_id] == ("running", 1, "backfill-a")
    fake.hold = None
    hold.set()
    start_backfill("backfill-b", MS_BACKFILL_RECLAIM_AFTER_S="0.5")
    await eventually(lambda: jobs(db)[job_id][0] == "done", what="reclaimed and done")
    assert jobs(db)[job_id] == ("done", 2, "backfill-b")
    (reclaimed,) = (await queue_job(aconn, job_id)).errors
    assert reclaimed.error.startswith("reclaimed: backfill-a gave no answer")


# the pure parts


def test_fetch_span_widens_to_whole_windows_of_the_longest_interval() -> None:
    assert fetch_span(GAP_START_US, GAP_END_US, HOUR_US) == SPAN
    day = GAP_START_US - GAP_START_US % DAY_US
    assert fetch_span(GAP_START_US, GAP_END_US, DAY_US) == (day, day + DAY_US)
    assert fetch_span(day, day + DAY_US, DAY_US) == (day, day + DAY_US), "whole already"
    assert fetch_span(day + 1, day + DAY_US + 1, DAY_US) == (day, day + 2 * DAY_US)


def test_history_provider_takes_the_asked_one_else_the_universes_first_with_trades() -> None:
    assert history_provider("alpaca", ()) == "alpaca"
    assert history_provider(None, ("finnhub", "alpaca", "yahoo")) == "alpaca"
    assert history_provider("finnhub", ("finnhub", "alpaca")) == "alpaca"
    assert history_provider(None, ("finnhub", "yahoo")) is None
    assert history_provider(None, ()) is None


def test_retry_backoff_doubles_from_the_base_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_backoff_s(attempt, 1.0, 300.0, rng) for attempt in range(1, 12)]
    bounds = [min(300.0, 2.0 ** (attempt - 1)) for attempt in range(1, 12)]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bounds, strict=True))
    assert max(delays) <= 300.0 and delays[-1] >= 150.0


def test_backfill_source_is_the_jobs_then_one_per_retry() -> None:
    assert [backfill_source(42, a) for a in (1, 2, 3)] == [
        "backfill:42",
        "backfill:42:2",
        "backfill:42:3",
    ]


def test_backfill_process_without_alpaca_keys_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ALPACA_API_KEY", "MS_ALPACA_KEY_ID", "APCA_API_KEY_ID"):
        monkeypatch.delenv(name, raising=False)

    result = run_module(["connectors", "backfill"], {}, timeout_s=30)

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: alpaca history needs ALPACA_API_KEY")


def test_backfill_process_on_a_taken_port_exits_2_naming_the_variable(
    bootstrap: str, database_url: str
) -> None:
    with held_port() as port:
        result = run_module(
            ["connectors", "backfill"],
            {
                "MS_KAFKA_BOOTSTRAP": bootstrap,
                "MS_DATABASE_URL": database_url,
                "MS_BACKFILL_HTTP_PORT": str(port),
                "ALPACA_API_KEY": KEY_ID,
                "ALPACA_SECRET_KEY": SECRET_KEY,
            },
            timeout_s=30,
        )

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: MS_BACKFILL_HTTP_PORT={port}: port {port}")


async def test_backfill_of_a_span_still_open_is_fetched_again_once_it_has_closed(
    aconn: psycopg.AsyncConnection[Any],
    db: psycopg.Connection[Any],
    start_backfill: Callable[..., Backfill],
) -> None:
    # a gap that ended minutes ago: its hour is not over, so the live feed's 1h bar, which
    # lacks the gap's trades, would replace the backfill's when the hour closes
    now_us = time.time_ns() // 1000
    start_us = now_us - now_us % MINUTE_US - 3 * MINUTE_US
    start_backfill()
    job_id = await queue.enqueue(
        aconn, instrument="BTC/USD", interval="1m", start_us=start_us,
        end_us=start_us + 2 * MINUTE_US, priority=0, provider="alpaca",
    )  # fmt: skip

    await eventually(lambda: len(jobs(db)) == 2, timeout_s=40, what="a second fetch queued")

    again = db.execute(
        "select id, status, extract(epoch from next_attempt_at) * 1e6 from backfill_jobs"
        " where id <> %s",
        (job_id,),
    ).fetchone()
    hour_end_us = start_us - start_us % HOUR_US + HOUR_US
    assert again is not None and again[1] == "queued"
    assert abs(again[2] - (hour_end_us + 120 * S)) < S  # once the hour's bars have closed
    assert jobs(db)[job_id][0] == "done"
