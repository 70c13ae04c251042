"""Session fixtures: a real Tansu broker and a real PostgreSQL, started on free ports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import admin
from streams.codec import Codec
from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import free_port
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres
from streams.registry import CommittedSchemas
from streams.topics import all_topics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker for the whole session, with our topics created (MS_TEST_KAFKA reuses one)."""
    if existing := os.environ.get("MS_TEST_KAFKA"):
        yield existing
        return
    port = free_port()
    process = start_broker(port, tmp_path_factory.mktemp("tansu") / "tansu.log")
    address = f"127.0.0.1:{port}"
    admin.create_topics(address, all_topics(3))
    yield address
    stop_broker(process)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL database for the whole session."""
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    port = free_port()
    start_postgres(data_dir, port)
    yield ensure_database(port, "marketstream_test")
    stop_postgres(data_dir)


@pytest.fixture
def unique_topic(bootstrap: str) -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec(CommittedSchemas())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Return the high-water mark of every partition of `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.topics[topic].partitions
        }
    finally:
        consumer.close()


def consume_from(bootstrap: str, topic: str, start: dict[int, int], count: int, timeout_s: float = 20) -> list[bytes]:
    """Read `count` messages of `topic` from the given offsets; fail if they do not arrive in time."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                assert msg.error() is None, msg.error()
                values.append(msg.value())
    finally:
        consumer.close()
    assert len(values) >= count, f"{len(values)} of {count} messages on {topic} within {timeout_s} s"
    return values


def run_module(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m ...` from the repository root with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
        text=True, timeout=timeout_s,
    )


async def eventually(predicate, timeout_s: float = 20, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Await until `predicate()` is truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[object]:
    """Start `python -m ...` processes in the background; all are stopped after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        with (tmp_path / f"{args[0]}-{len(processes)}.log").open("w") as log:
            process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env={**os.environ, **env},
                                       stdout=log, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


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
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
