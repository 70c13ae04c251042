"""Session fixtures: a real Tansu broker and a real PostgreSQL, started on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from connectors.base import Connector, Record, Rejected
from shared import kafka_admin
from shared.codec import Codec
from shared.models import ProviderBarBatch
from shared.schema_ids import CommittedSchemas
from shared.topics import all_topics
from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import free_port
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres
from streams.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Broker:
    address: str
    process: subprocess.Popen[bytes]

    def stall(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers; the
        embedded broker keeps its memory."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker for each test, with our topics created (3 trade partitions).

    Tansu with memory storage starts in milliseconds, so isolation costs nothing, and each test
    can read its topics from the beginning: Tansu under-reports high watermarks, so offsets
    taken before an action are not a reliable starting point.
    """
    port = free_port()
    process = start_broker(port, tmp_path / "tansu.log")
    address = f"127.0.0.1:{port}"
    kafka_admin.create_topics(address, all_topics(3))
    running = Broker(address, process)
    yield running
    running.resume()  # a stalled broker cannot stop
    stop_broker(process)


@pytest.fixture
def bootstrap(broker: Broker) -> str:
    return broker.address


@dataclass(frozen=True)
class PostgresServer:
    data_dir: Path
    port: int
    url: str

    def stop(self) -> None:
        stop_postgres(self.data_dir)

    def start(self) -> None:
        start_postgres(self.data_dir, self.port)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, with our tables."""
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    port = free_port()
    start_postgres(data_dir, port)
    url = ensure_database(port, "marketstream_test")
    migrate(url)
    yield PostgresServer(data_dir, port, url)
    stop_postgres(data_dir)


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    """The session database, emptied of bars and checkpoints for this test."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(
            "truncate bars, bar_checkpoints, latest_trades, latest_quotes, gaps, backfill_jobs,"
            " backfill_dead_letters, feed_outages, instrument_halts, pm_listings, market_matches,"
            " arbitrage, fundamentals, dead_letters"
        )
        # the universe's tables exist once a test loaded one (connectors.universe makes them)
        if conn.execute("select to_regclass('universe_versions')").fetchone() != (None,):
            conn.execute("truncate symbol_universe, universe_versions restart identity")
    return postgres.url


@pytest.fixture
def unique_topic(bootstrap: str) -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec(CommittedSchemas())


def read_topic(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Message]], bool],
    timeout_s: float = 20,
    quiet_s: float = 0.5,
) -> list[Message]:
    """Read `topic` from the beginning until `done(messages)`, then until `quiet_s` pass with no
    further message (so that extra, duplicate messages are seen too); fail after `timeout_s`."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(messages):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(messages)} messages on {topic} after {timeout_s} s"
                )
            for msg in consumer.consume(1000, 0.2):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        while batch := consumer.consume(1000, quiet_s):
            messages.extend(batch)
    finally:
        consumer.close()
    return messages


def at_least(count: int) -> Callable[[list[Message]], bool]:
    return lambda messages: len(messages) >= count


def decoded_trades(
    codec: Codec, messages: list[Message]
) -> list[tuple[str, int, float, float, int]]:
    """Flatten TradeBatch messages into (symbol, ts_event_us, price, size, side) tuples."""
    trades = []
    for msg in messages:
        batch = codec.decode_trade_batch(msg.value())
        sides = batch.side.tolist() if batch.side is not None else [0] * len(batch)
        trades += zip(
            batch.instrument_column(),
            batch.ts_event_us.tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            sides,
            strict=True,
        )
    return trades


def run_module(
    args: list[str], env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m ...` from the repository root with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


async def eventually(predicate, timeout_s: float = 20, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Await until `predicate()` is truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[[list[str], dict[str, str]], Started]]:
    """Start `python -m ...` processes in the background; all are stopped after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> Started:
        path = tmp_path / f"{args[0]}-{len(processes)}.log"
        with path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        processes.append(process)
        return Started(process, path)

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def published_trades(url: str) -> float:
    """The trades a connector has had acknowledged so far, from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    lines = [line for line in text.splitlines() if line.startswith("trades_published_total")]
    return float(lines[0].split()[-1]) if lines else 0.0


@contextlib.asynccontextmanager
async def connector_stream(connector: Connector) -> AsyncIterator[AsyncIterator[Record | Rejected]]:
    """The connector's stream, closed (with its sockets and sessions) when the block ends."""
    stream = connector.stream()
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def take(
    stream: AsyncIterator[Record | Rejected], n: int, timeout_s: float = 4.0
) -> list[Record | Rejected]:
    """The next `n` items of the stream; fail after `timeout_s`."""
    items: list[Record | Rejected] = []
    async with asyncio.timeout(timeout_s):
        while len(items) < n:
            items.append(await anext(stream))
    return items


BarRow = tuple[int, float, float, float, float, float]  # ts, open, high, low, close, volume


def bar_rows(batch: ProviderBarBatch) -> list[BarRow]:
    return list(
        zip(
            batch.ts_us.tolist(),
            batch.open.tolist(),
            batch.high.tolist(),
            batch.low.tolist(),
            batch.close.tolist(),
            batch.volume.tolist(),
            strict=True,
        )
    )


def provider_bars(item: Record | Rejected) -> ProviderBarBatch:
    assert isinstance(item, ProviderBarBatch), item
    return item


def wait_http(url: str, timeout_s: float = 30) -> bytes:
    """GET `url` until it answers 200; return the body."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            # TimeoutError: the port is bound but not served yet (a worker binds it early)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass(frozen=True)
class Answer:
    """What an HTTP request got back."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    body: object = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request with `key` as `Authorization: Bearer` (JSON `body`, or bytes as they are);
    an error status is an Answer too."""
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, data=data, method=method, headers=sent | (headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


@dataclass(frozen=True)
class RunningWorker:
    url: str
    started: Started
    env: dict[str, str]


@pytest.fixture
def start_worker(
    bootstrap: str,
    database_url: str,
    start_process: Callable[[list[str], dict[str, str]], Started],
    tmp_path: Path,
) -> Callable[..., RunningWorker]:
    """Start `python -m streams worker` on the test's broker and database; wait until it serves."""

    def start(app_id: str = "test-worker", **env: str) -> RunningWorker:
        port = free_port()
        full_env = {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_DATABASE_URL": database_url,
            "MS_WORKER_HTTP_PORT": str(port),
            "MS_WORKER_DATA_DIR": str(tmp_path / "worker"),
            "MS_WORKER_APP_ID": app_id,
            "MS_WORKER_SESSION_TIMEOUT_S": "3",
            "MS_WORKER_HEARTBEAT_INTERVAL_S": "0.5",
            **env,
        }
        started = start_process(["streams", "worker"], full_env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live", timeout_s=60)
        return RunningWorker(url, started, full_env)

    return start


@pytest.fixture
def start_api(
    bootstrap: str, start_process: Callable[[list[str], dict[str, str]], Started]
) -> Callable[..., str]:
    """Start `python -m gateways.http` on the test's broker and the given database; return its URL."""

    def start(database_url: str, **env: str) -> str:
        port = free_port()
        start_process(
            ["gateways.http"],
            {
                "MS_API_HTTP_PORT": str(port),
                "MS_KAFKA_BOOTSTRAP": bootstrap,
                "MS_DATABASE_URL": database_url,
                **env,
            },
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live")
        return url

    return start
