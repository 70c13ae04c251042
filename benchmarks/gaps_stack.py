"""The gaps scenario's stack: broker, database, fake history and workers for one path.

Each path gets its own (benchmarks/gaps.py says what it runs), so that no path's topics,
bars, gaps or jobs reach another's figures; and the readers of what it serves (/metrics,
/stats/cadence).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from benchmarks import common, processes
from benchmarks.gaps_feed import INTERVALS, Timeline
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from connectors.universe import UniverseRow, store_universe
from shared import kafka_admin
from shared.errors import DeliveryError
from shared.topics import all_topics
from streams.embedded.ports import free_port

BARS_INTERVALS: Final = ",".join(INTERVALS)
_SAMPLE: Final = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


@dataclass
class Stack:
    """One path's running processes and where to reach them."""

    bootstrap: str
    database_url: str
    fake_url: str
    sink_url: str
    backfill_urls: list[str] = field(default_factory=list)




def wait_http(url: str, process: Any, log_path: Path, timeout_s: float = 90.0) -> None:
    """GET `url` until it answers; raise DeliveryError with the log's tail if the process
    exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=2):
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise DeliveryError(f"{url} did not answer:\n{processes.tail(log_path)}")
        time.sleep(0.1)


@contextlib.contextmanager
def stack(
    args: argparse.Namespace, root: Path, symbols: list[str], timeline: Timeline, backfill: int
) -> Iterator[Stack]:
    """Start broker, database, fake, workers and `backfill` backfill workers; stop them after."""
    with contextlib.ExitStack() as running:
        bootstrap = running.enter_context(common.broker(None))
        kafka_admin.create_topics(bootstrap, all_topics(args.partitions))
        database_url = running.enter_context(common.postgres(root))
        rows = [UniverseRow(s, "ALPACA", "crypto", "T0", True, ("alpaca",)) for s in symbols]
        store_universe(database_url, rows, "benchmarks.gaps")
        url_file = root / "fake.url"
        fake_command = [sys.executable, "-m", "benchmarks.gaps_fake", "--url-file", str(url_file)]
        fake_command += ["--limit", str(args.budget), "--density", str(args.density)]
        fake = running.enter_context(processes.running(fake_command, {}, root / "fake.log"))
        deadline = time.monotonic() + 30
        while not url_file.exists() or not url_file.read_text():
            if fake.poll() is not None or time.monotonic() > deadline:
                raise DeliveryError(f"the fake did not start:\n{processes.tail(root / 'fake.log')}")
            time.sleep(0.05)
        fake_url = url_file.read_text()
        env = {
            "MS_KAFKA_BOOTSTRAP": bootstrap,
            "MS_KAFKA_TRADES_PARTITIONS": str(args.partitions),
            "MS_DATABASE_URL": database_url,
            "MS_BARS_INTERVALS": BARS_INTERVALS,
            "MS_WORKER_APP_ID": f"bench-gaps-{uuid.uuid4().hex[:8]}",
        }
        worker = [sys.executable, "-m", "streams", "worker"]
        started: list[tuple[str, Any, Path]] = []
        for name, extra in (
            ("bars", {"MS_WORKER_AGENTS": "aggregate_bars"}),
            (
                "sink",
                {
                    "MS_WORKER_AGENTS": "sink_bars,detect_gaps",
                    "MS_GAPS_SWEEP_INTERVAL_S": str(args.sweep_interval_s),
                    "MS_GAPS_SWEEP_HOURS": f"{timeline.sweep_hours(time.time_ns() // 1000):.4f}",
                },
            ),
        ):
            port, log_path = free_port(), root / f"{name}.log"
            extra |= {"MS_WORKER_HTTP_PORT": str(port), "MS_WORKER_DATA_DIR": str(root / name)}
            process = running.enter_context(processes.running(worker, env | extra, log_path))
            started.append((f"http://127.0.0.1:{port}", process, log_path))
        backfill_urls = []
        for index in range(backfill):
            port, log_path = free_port(), root / f"backfill-{index}.log"
            backfill_env = env | {
                "MS_BACKFILL_HTTP_PORT": str(port),
                "MS_BACKFILL_WORKER_ID": f"bench-backfill-{index}",
                "MS_BACKFILL_ALPACA_REQUESTS_PER_MINUTE": str(max(1, args.budget // backfill)),
                "MS_BACKFILL_PAGE_LIMIT": str(args.page_limit),
                "MS_ALPACA_REST_URL": fake_url,
                "MS_ALPACA_FEED": "iex",
                "ALPACA_API_KEY": KEY_ID,
                "ALPACA_SECRET_KEY": SECRET_KEY,
            }
            command = [sys.executable, "-m", "connectors", "backfill"]
            process = running.enter_context(processes.running(command, backfill_env, log_path))
            started.append((f"http://127.0.0.1:{port}", process, log_path))
            backfill_urls.append(f"http://127.0.0.1:{port}")
        for url, process, log_path in started:
            wait_http(f"{url}/health/live", process, log_path)
        yield Stack(bootstrap, database_url, fake_url, started[1][0], backfill_urls)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The labelled samples of a /metrics page; empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    samples = {}
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match[2]))
            samples[(match[1], labels)] = float(match[3])
    return samples


def t0_sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> float | None:
    """The T0 (1m, where labelled by interval) sample of metric `name`, or None."""
    for (metric, labels), value in samples.items():
        keys = dict(labels)
        if metric == name and keys.get("tier") == "T0" and keys.get("interval", "1m") == "1m":
            return value
    return None


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return orjson.loads(response.read())


def last_sweep_at(url: str) -> float | None:
    """When the sink worker's latest sweep began (UNIX seconds), from /stats/cadence."""
    try:
        last = get_json(f"{url}/stats/cadence").get("schedule", {}).get("last")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return datetime.fromisoformat(last["at"]).timestamp() if last else None
