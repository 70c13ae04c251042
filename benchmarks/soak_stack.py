"""The `soak` scenario's pipeline: `make up`'s processes on free ports, its clients, its samples.

The processes, their commands and environment come from streams.embedded.stack.Stack itself
(the API, the bars worker, the sink worker, the simulator, the WebSocket gateway), so the soak
runs what `make up` runs; this module starts them one by one rather than through the
supervisor, so that the simulator can be stopped alone and the rest drained.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import processes
from benchmarks.bars_watch import Samples, scrape
from benchmarks.gaps_stack import wait_http
from benchmarks.soak_check import tree_pss_bytes
from benchmarks.ws import ClientProcess
from shared import kafka_admin
from shared.topics import BAR_BATCHES, TRADES, all_topics
from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import free_port, wait_listening
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres
from streams.embedded.stack import Stack, StackSettings
from streams.migrations import migrate

MB: Final = 1_000_000
SIMULATOR: Final = "simulator"
WORKER: Final = "worker"
SINK: Final = "sink"
GATEWAY: Final = "ws-gateway"


@dataclass
class Pipeline:
    """The running processes of one soak and where to reach them."""

    stack: Stack
    database_url: str
    children: dict[str, subprocess.Popen[Any]]
    ports: dict[str, int]
    broker_pid: int
    postgres_pid: int | None = None
    extra_pids: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> Path:
        return self.stack.logs / f"{name}.log"

    def memory_mb(self) -> dict[str, float | None]:
        """VmRSS of every process now; PostgreSQL as the PSS of its whole process tree."""
        pids = {name: p.pid for name, p in self.children.items()} | self.extra_pids
        pids["broker"] = self.broker_pid
        out = {name: _mb(processes.status_bytes(pid, "VmRSS")) for name, pid in pids.items()}
        if self.postgres_pid is not None:
            out["postgres"] = _mb(tree_pss_bytes(self.postgres_pid))
        return out

    def cpu_s(self) -> dict[str, float | None]:
        pids = {name: p.pid for name, p in self.children.items()} | self.extra_pids
        pids["broker"] = self.broker_pid
        return {name: processes.cpu_s(pid) for name, pid in pids.items()}

    def metrics(self) -> dict[str, Samples]:
        return {name: scrape(f"{self.url(name)}/metrics") or [] for name in self.children}


def _mb(value: int | None) -> float | None:
    return None if value is None else value / MB


def settings_for(root: Path, rate: float, instruments: int, partitions: int) -> StackSettings:
    """`make up`'s settings with every port free and the run directory under `root`."""
    ports = ("kafka", "postgres", "api", "worker", "sink", "connector", "ws")
    values: dict[str, Any] = {f"{name}_port": free_port() for name in ports}
    values |= {
        "run_dir": root,
        "simulator_rate": rate,
        "simulator_instruments": instruments,
        "trades_partitions": partitions,
    }
    return StackSettings(**values)


@contextlib.contextmanager
def pipeline(settings: StackSettings, extra_env: dict[str, str]) -> Iterator[Pipeline]:
    """Start broker, PostgreSQL and `make up`'s children; yield once each answers; stop after."""
    stack = Stack(settings)
    stack.logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as running:
        broker = start_broker(settings.kafka_port, stack.logs / "broker.log")
        running.callback(stop_broker, broker)
        start_postgres(stack.pg_data, settings.postgres_port)
        running.callback(stop_postgres, stack.pg_data)
        database_url = ensure_database(settings.postgres_port, "marketstream")
        kafka_admin.create_topics(stack.bootstrap, all_topics(settings.trades_partitions))
        migrate(database_url)
        env = stack.child_env(database_url) | extra_env
        children: dict[str, subprocess.Popen[Any]] = {}
        ports: dict[str, int] = {}
        for child in stack.children():
            command = [sys.executable, "-m", *child.module]
            log_path = stack.logs / f"{child.name}.log"
            children[child.name] = running.enter_context(
                processes.running(command, env | child.env, log_path)
            )
            ports[child.name] = child.port
        for name, port in ports.items():
            wait_listening(port, 120, name)
            wait_http(
                f"http://127.0.0.1:{port}/health/live", children[name], stack.logs / f"{name}.log"
            )
        gateway_health = f"http://127.0.0.1:{ports[GATEWAY]}/health"
        wait_http(gateway_health, children[GATEWAY], stack.logs / f"{GATEWAY}.log", 180)
        pid_file = stack.pg_data / "postmaster.pid"
        postgres_pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        yield Pipeline(stack, database_url, children, ports, broker.pid, postgres_pid)


class SoakClients(ClientProcess):
    """The benchmarks.soak_clients process, driven by lines on its stdin and stdout."""

    def __init__(self, url: str, command: list[str], work: Path) -> None:
        self.out = work / "clients.json"
        self.log_path = work / "clients.log"
        module = [sys.executable, "-m", "benchmarks.soak_clients", "--url", url]
        self._spawn([*module, *command, "--out", str(self.out)])

    def poll(self) -> dict[str, Any]:
        """What the clients received since the last poll."""
        self.send("poll")
        part: dict[str, Any] = json.loads(" ".join(self.expect("poll", 30)))
        return part

    def close(self) -> dict[str, Any]:
        """Stop the clients; return their totals."""
        self.send("stop")
        self.expect("done", 60)
        self.process.wait(30)
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of metric `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for metric, have, value in samples
        if metric == name and all(have.get(k) == v for k, v in labels.items())
    )


def lag_by_topic(samples: Samples) -> dict[str, float]:
    """consumer_lag_messages summed over partitions, per topic."""
    out: dict[str, float] = {}
    for metric, labels, value in samples:
        if metric == "consumer_lag_messages":
            topic = labels.get("topic", "?")
            out[topic] = out.get(topic, 0.0) + value
    return out


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """The cumulative buckets of histogram `name` ({le: count})."""
    return {
        float(labels["le"]): value
        for metric, labels, value in samples
        if metric == f"{name}_bucket" and "le" in labels
    }


def bucket_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The upper bound of the bucket holding quantile `q` of what was observed in between."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    if not counts or counts[-1] <= 0:
        return None
    return next(e for e, c in zip(edges, counts, strict=True) if c >= q * counts[-1])


def counters(metrics: dict[str, Samples]) -> dict[str, Any]:
    """The pipeline's counters of one sample."""
    worker, sink = metrics.get(WORKER, []), metrics.get(SINK, [])
    gateway = metrics.get(GATEWAY, [])
    simulator = metrics.get(SIMULATOR, [])
    return {
        "published": total(simulator, "trades_published_total"),
        "trade_messages": total(simulator, "kafka_messages_acked_total", topic=TRADES),
        "tallied": total(worker, "trades_processed_total", agent="tally_trades"),
        "folded": total(worker, "trades_processed_total", agent="aggregate_bars"),
        "bars_emitted": total(worker, "bars_emitted_total"),
        "bars_sunk": total(sink, "bars_sunk_total"),
        "lag_worker": lag_by_topic(worker),
        "lag_sink": lag_by_topic(sink),
        "dead_letters": sum(total(s, "dead_letters_total") for s in metrics.values()),
        "delivery_failures": sum(total(s, "delivery_failures_total") for s in metrics.values()),
        "ws_clients": total(gateway, "ws_clients"),
        "ws_dropped": total(gateway, "ws_dropped_messages_total"),
    }


def drained(c: dict[str, Any], published: int) -> bool:
    """Every trade published was tallied and folded, and the sink has read every bar batch."""
    return bool(
        c["tallied"] >= published
        and c["folded"] >= published
        and c["lag_sink"].get(BAR_BATCHES, 1.0) == 0
    )


def stop_feed(pipe: Pipeline, timeout_s: float = 60.0) -> int | None:
    """SIGTERM the simulator (it flushes what it holds); return the trades it says it published."""
    process = pipe.children[SIMULATOR]
    processes.stop(process, timeout_s=timeout_s)
    for line in reversed(pipe.log(SIMULATOR).read_text(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            summary = json.loads(line)
            if isinstance(summary, dict) and "published" in summary:
                return int(summary["published"])
    return None


def wait_drained(pipe: Pipeline, published: int, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Poll until `drained` (and the sink's count stops moving); return seconds and the counters."""
    started = time.monotonic()
    last_sunk = -1.0
    while True:
        c = counters(pipe.metrics())
        if drained(c, published) and c["bars_sunk"] == last_sunk:
            return time.monotonic() - started, c
        if time.monotonic() - started > timeout_s:
            return time.monotonic() - started, c
        last_sunk = c["bars_sunk"]
        time.sleep(1.0)
