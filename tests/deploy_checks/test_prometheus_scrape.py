"""A real Prometheus, on the Compose scrape config with its targets moved to 127.0.0.1, scrapes a
running worker, WebSocket gateway and HTTP API, probes them through the blackbox exporter with
blackbox.yml, and evaluates rules.yml on what they export: the SLO alerts see real labels."""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import psycopg
import yaml
from conftest import ROOT, RunningWorker, Started, eventually, wait_http
from documented_metrics import undocumented
from test_alert_rules import rule_metric_names, rules_groups

from connectors.universe import parse_universe, store_universe
from shared.backfill import queue
from shared.backfill.jobs import priority_for_tier
from shared.codec import Codec
from shared.models import Bar, TradeBatch
from shared.publisher import Publisher
from shared.topics import TRADES
from streams.embedded.ports import free_port
from streams.sink.timescale import BarWriter

PROMETHEUS: Final = Path("/usr/bin/prometheus")  # Debian's `prometheus`
BLACKBOX: Final = Path("/usr/bin/prometheus-blackbox-exporter")  # `prometheus-blackbox-exporter`
COMPOSE: Final = ROOT / "deploy/compose/prometheus"
MINUTE_US: Final = 60_000_000
UNIVERSE: Final = """symbol,exchange,asset_type,tier,active,providers
BTC-USD,CRYPTO,crypto,T0,true,alpaca
"""
WS_KEY: Final = "scrape-test-key"
# The Compose jobs whose processes run here; sink, markets and connectors are the same worker
# and connector code on other services.
JOBS: Final = {
    "prometheus",
    "api",
    "worker",
    "ws-gateway",
    "blackbox",
    "blackbox-http",
    "blackbox-tcp",
}
# What each process exports whatever it does (the worker sets no marketstream_up)
BASELINE: Final = {
    "worker": {"process_resident_memory_bytes"},
    "ws-gateway": {"process_resident_memory_bytes", "marketstream_up"},
    "api": {"process_resident_memory_bytes", "marketstream_up"},
}
# Of the series the rules name, those each process exports here: the worker once it has
# consumed something and measured its group's lag, the API once it has answered a request.
RULE_SERIES: Final = {
    "worker": {
        "consumer_lag_messages",
        "agent_messages_total",
        "slo_gap_violation_rate",
        "backfill_oldest_age_seconds",
        "dead_letters_total",
    },
    "ws-gateway": {"ws_publish_latency_ms_bucket"},
    "api": {"api_requests_total"},
}


def prometheus_api(base: str, path: str, **params: str) -> Any:
    """GET `path` of Prometheus's HTTP API; return its `data`."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}/api/v1/{path}{query}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def local_config(addresses: dict[str, str], rules: Path) -> dict[str, Any]:
    """The Compose prometheus.yml with each `service:port` of `addresses` replaced by its local
    address, only the jobs whose targets all run here, and scrapes and evaluations every 1 s."""
    config: dict[str, Any] = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = []
    for job in config["scrape_configs"]:
        targets = [t for static in job.get("static_configs", []) for t in static["targets"]]
        if all(any(service in target for service in addresses) for target in targets):
            text = json.dumps(job)
            for service, address in addresses.items():
                text = text.replace(service, address)
            jobs.append(json.loads(text))
    every_second = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    return config | {
        "global": config["global"] | every_second,
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


@contextlib.contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a binary for the block; stop it (SIGTERM, then SIGKILL) when the block ends."""
    assert Path(args[0]).exists(), f"{args[0]} is missing: the Makefile installs it with apt"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def store_bars_with_a_hole(database_url: str, now_us: int) -> None:
    """A T0 universe of BTC-USD and its 1m bars of the last 70 minutes with minutes 30 to 39
    missing: 10 of the sweep's 60 windows in a gap, far over the 0.5% SLO."""
    store_universe(database_url, parse_universe(UNIVERSE, "scrape-test"), "scrape-test")
    first = now_us - now_us % MINUTE_US - 70 * MINUTE_US
    bars = [
        Bar("BTC-USD", "1m", first + m * MINUTE_US, 0, 97_000.0, 97_050.0, 96_990.0, 97_010.0,
            3.5, 97_020.0, 41, 2.0, 1.5, "alpaca", first + m * MINUTE_US + 59_000_000, now_us)
        for m in range(71)
        if m not in range(30, 40)
    ]  # fmt: skip
    writer = BarWriter(database_url)
    try:
        await writer.write(bars)
    finally:
        await writer.close()


async def queue_job_waiting_since(database_url: str, now_us: int, waited_s: int) -> None:
    """A T0 backfill job queued `waited_s` ago that no backfill worker has claimed."""
    start = now_us - now_us % MINUTE_US - 3 * 60 * MINUTE_US
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        job = await queue.enqueue(
            conn,
            instrument="BTC-USD",
            interval="1m",
            start_us=start,
            end_us=start + 5 * MINUTE_US,
            priority=priority_for_tier("T0"),
        )
        await conn.execute(
            "update backfill_jobs set created_at = now() - make_interval(secs => %s) where id = %s",
            (waited_s, job),
        )


def publish_trades_and_garbage(bootstrap: str, codec: Codec, now_us: int) -> None:
    """One batch of BTC-USD trades and one message no agent can decode (a dead letter)."""
    batch = TradeBatch(
        source="alpaca",
        instruments=("BTC-USD",),
        instrument_index=np.zeros(3, np.int32),
        ts_event_us=np.array([now_us - 2_400_000, now_us - 1_700_000, now_us - 900_000]),
        ts_recv_us=np.array([now_us - 2_390_000, now_us - 1_690_000, now_us - 890_000]),
        price=np.array([97_012.5, 97_013.0, 97_011.75]),
        size=np.array([0.012, 0.25, 0.003]),
    )
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(TRADES, codec.encode_trade_batch(batch), key=b"BTC-USD", partition=0)
    publisher.produce(TRADES, b"\x00\x00\x00\x00\x01garbage", key=b"BTC-USD", partition=0)
    publisher.flush()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector `promql` evaluates to now."""
    found: list[dict[str, Any]] = prometheus_api(base, "query", query=promql)["result"]
    return found


def jobs_up(base: str) -> set[str]:
    """The jobs of the active targets once every one of them is up, else nothing."""
    found = prometheus_api(base, "targets")["activeTargets"]
    return {t["labels"]["job"] for t in found} if all(t["health"] == "up" for t in found) else set()


def rule_groups_of(base: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = prometheus_api(base, "rules")["groups"]
    return found


def alerts_of(base: str) -> dict[str, dict[str, Any]]:
    """Pending and firing alerts by name."""
    return {a["labels"]["alertname"]: a for a in prometheus_api(base, "alerts")["alerts"]}


def names_of(base: str, job: str) -> set[str]:
    """The metric names Prometheus holds for `job`."""
    return set(prometheus_api(base, "label/__name__/values", **{"match[]": f'{{job="{job}"}}'}))


def exports(base: str, job: str, names: set[str]) -> bool:
    return names <= names_of(base, job)


def evaluated(group: dict[str, Any], after: datetime) -> bool:
    return datetime.fromisoformat(group["lastEvaluation"]) > after


async def test_prometheus_scrapes_our_processes_and_evaluates_every_rule_group(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    tmp_path: Path,
    start_worker: Callable[..., RunningWorker],
    start_api: Callable[..., str],
    start_process: Callable[[list[str], dict[str, str]], Started],
) -> None:
    now_us = time.time_ns() // 1000
    await store_bars_with_a_hole(database_url, now_us)
    await queue_job_waiting_since(database_url, now_us, 20 * 60)
    ws_port, blackbox_port, prometheus_port = free_port(), free_port(), free_port()
    start_process(
        ["gateways.ws"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_WS_PORT": str(ws_port), "MS_WS_API_KEYS": WS_KEY},
    )
    worker = start_worker(
        MS_WORKER_AGENTS="tally_trades,detect_gaps",
        MS_GAPS_SWEEP_INTERVAL_S="1",
        MS_GAPS_SWEEP_HOURS="1",
        MS_WORKER_LAG_INTERVAL_S="1",
    )
    api_url = start_api(database_url)
    wait_http(f"http://127.0.0.1:{ws_port}/health", timeout_s=30)
    publish_trades_and_garbage(bootstrap, codec, now_us)
    addresses = {
        "api:8080": api_url.removeprefix("http://"),
        "worker:6066": worker.url.removeprefix("http://"),
        "ws-gateway:8765": f"127.0.0.1:{ws_port}",
        "blackbox:9115": f"127.0.0.1:{blackbox_port}",
        "localhost:9090": f"127.0.0.1:{prometheus_port}",
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_config(addresses, COMPOSE / "rules.yml")))
    base = f"http://127.0.0.1:{prometheus_port}"

    with (
        running(
            [str(BLACKBOX), f"--config.file={COMPOSE / 'blackbox.yml'}",
             f"--web.listen-address=127.0.0.1:{blackbox_port}"],
            tmp_path / "blackbox.log",
        ),
        running(
            [str(PROMETHEUS), f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            tmp_path / "prometheus.log",
        ),
    ):  # fmt: skip
        wait_http(f"{base}/-/ready", timeout_s=20)

        await eventually(lambda: jobs_up(base) == JOBS, 20, f"every target of {sorted(JOBS)} up")
        probes = query(base, "probe_success")
        assert {(p["metric"]["job"], p["metric"]["instance"], p["value"][1]) for p in probes} == {
            ("blackbox-http", f"{api_url}/health", "1"),
            ("blackbox-http", f"http://127.0.0.1:{ws_port}/health", "1"),
            ("blackbox-tcp", f"127.0.0.1:{ws_port}", "1"),
        }

        named = rule_metric_names()
        for job, series in RULE_SERIES.items():
            assert series <= named, f"not in the rules: {series - named}"
            wanted = series | BASELINE[job]
            try:
                await eventually(functools.partial(exports, base, job, wanted), 20, job)
            except AssertionError:
                missing = wanted - names_of(base, job)
                raise AssertionError(f"{job} does not export {sorted(missing)}") from None

        for job in RULE_SERIES:  # every name a process exports is in the README's table
            assert undocumented(names_of(base, job)) == set(), job

        # the labels the rules aggregate and join on are those the processes export
        stalled_join = (
            "max by (job, group, topic) (consumer_lag_messages)"
            " and on (job, topic) sum by (job, topic) (rate(agent_messages_total[1m]))"
        )
        await eventually(
            lambda: (
                {(r["metric"]["job"], r["metric"]["topic"]) for r in query(base, stalled_join)}
                >= {("worker", TRADES)}
            ),
            10,
            "the worker's lag and throughput joined on job and topic",
        )
        await eventually(
            lambda: query(base, 'api_requests_total{job="api", route="/health", status="200"}'),
            10,
            "the probes' requests counted by route and status",
        )
        # the rules read delivery_failures_created and backfill_jobs_created: scrapes keep _created
        assert "dead_letters_created" in names_of(base, "worker")
        exported_at = datetime.now(UTC)

        await eventually(
            lambda: all(evaluated(g, exported_at) for g in rule_groups_of(base)),
            10,
            "every group evaluated",
        )
        groups = rule_groups_of(base)
        assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in rules_groups())
        for group in groups:
            for rule in group["rules"]:
                assert rule["health"] == "ok", (group["name"], rule["name"], rule.get("lastError"))

        await eventually(
            lambda: {"GapViolationRateHigh", "BackfillT0Behind"} <= alerts_of(base).keys(),
            20,
            "the continuity and backfill alerts pending",
        )
        alerts = alerts_of(base)
        gap, backfill = alerts["GapViolationRateHigh"], alerts["BackfillT0Behind"]
        assert (gap["labels"]["tier"], gap["labels"]["interval"]) == ("T0", "1m"), gap
        assert backfill["labels"]["tier"] == "T0", backfill
        assert gap["state"] == "pending", gap  # for 15 minutes before it fires
        assert 0.1 < float(gap["value"]) < 0.25, gap  # 10 of the hour's 60 windows
        assert float(backfill["value"]) >= 20 * 60, backfill
        assert "TargetDown" not in alerts
