"""Bars through the whole pipeline: replayer -> broker -> aggregate_bars -> sink -> database -> export."""

from __future__ import annotations

import contextlib
import csv
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import PostgresServer, RunningWorker, at_least, read_topic, run_module, wait_http
from generated import expected, generate, write_csv
from reference import RefBar

from connectors.replay import EPOCH
from shared.codec import Codec
from shared.intervals import DEFAULT_INTERVALS, parse_intervals
from shared.topics import BARS, DLQ
from streams.bars.export import export_to_file

INTERVALS = parse_intervals(DEFAULT_INTERVALS)
MAX_LATENESS_US = 60_000_000
PARTITIONS = 3  # of the test broker's trades topic
Key = tuple[str, str, int]


def replay(
    bootstrap: str, path: Path, speed: str = "max", extra: tuple[str, ...] | list[str] = ()
) -> subprocess.CompletedProcess[str]:
    result = run_module(
        ["connectors", "run", "replay", str(path), "--speed", speed, *extra],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_CONNECTOR_HTTP_PORT": "0"},
        timeout_s=300,
    )
    assert result.returncode in (0, 3), result.stderr
    return result


@contextlib.contextmanager
def replaying(worker: RunningWorker, path: Path, speed: str) -> Iterator[subprocess.Popen[bytes]]:
    """Replay `path` in the background at `speed` into the worker's broker; the block must
    see it finish (exit 0, or 3 for rejected rows): it is killed if still running after."""
    replayer = subprocess.Popen(
        [sys.executable, "-m", "connectors", "run", "replay", str(path), "--speed", speed],
        env={**worker.env, "MS_CONNECTOR_HTTP_PORT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield replayer
    finally:
        if replayer.poll() is None:
            replayer.kill()
            replayer.wait(10)


def assert_bars_equal_reference(
    database_url: str, bootstrap: str, codec: Codec, reference: dict[Key, RefBar], tmp_path: Path
) -> None:
    """Every bar of `reference`, and no other, in the database and (latest revisions) on
    md.bars.v1, where a key and revision seen twice is the same bar and seqs have no gap."""
    wait_for_rows(database_url, len(reference), timeout_s=120)
    assert_equal_to_reference(exported(database_url, tmp_path), reference)
    latest, _ = latest_on_topic(bootstrap, codec, len(reference))
    assert_topic_equals_reference(latest, reference)


def rows_in_database(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("select count(*) from bars").fetchone()[0])  # type: ignore[index]


def wait_for_rows(url: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := rows_in_database(url)) < count:
        assert time.monotonic() < deadline, (
            f"{found} of {count} bars in the database after {timeout_s} s"
        )
        time.sleep(0.5)


def seconds_until_rows_grow(url: str, beyond: int, timeout_s: float = 60) -> float:
    """How long until the database holds more than `beyond` bars: the pipeline flows again
    (printed, for the README's reliability table)."""
    start = time.monotonic()
    wait_for_rows(url, beyond + 1, timeout_s)
    elapsed = time.monotonic() - start
    print(f"bars flowing again {elapsed:.1f} s after the fault")
    return elapsed


def exported(url: str, tmp_path: Path) -> dict[Key, dict[str, str]]:
    """Export every interval and index the rows by key: the first with the CLI, as users run
    it, the others by the function behind it (a process start each would cost the suite)."""
    rows: dict[Key, dict[str, str]] = {}
    for k, (name, _) in enumerate(INTERVALS):
        out = tmp_path / f"bars-{name}.csv"
        if k == 0:
            result = run_module(
                ["streams", "bars", "export", "--interval", name, "--out", str(out)],
                {"MS_DATABASE_URL": url},
            )
            assert result.returncode == 0, result.stderr
        else:
            export_to_file(url, name, out)
        with out.open() as handle:
            for row in csv.DictReader(handle):
                moment = datetime.fromisoformat(row["ts"])
                micros = (moment - EPOCH) // timedelta(microseconds=1)
                rows[(row["symbol"], row["interval"], micros)] = row
    return rows


def assert_equal_to_reference(
    rows: dict[Key, dict[str, str]], reference: dict[Key, RefBar]
) -> None:
    assert set(rows) == set(reference)
    for key, ref in reference.items():
        row = rows[key]
        ohlc = tuple(float(row[c]) for c in ("open", "high", "low", "close"))
        assert ohlc == (ref.open, ref.high, ref.low, ref.close), key
        assert (float(row["volume"]), int(row["trade_count"])) == (ref.volume, ref.trade_count), key
        assert float(row["vwap"]) == pytest.approx(ref.vwap, rel=1e-9), key


def latest_on_topic(bootstrap: str, codec: Codec, count: int) -> tuple[dict[Key, object], int]:
    """Deduplicate bars on md.bars.v1 by key and revision; return the latest per key and the
    number of revisions (revision > 0) seen."""
    messages = read_topic(
        bootstrap,
        BARS,
        lambda m: (
            len(
                {
                    (b.instrument, b.interval, b.ts_us)
                    for b in map(codec.decode_bar, (x.value() for x in m))
                }
            )
            >= count
        ),
        timeout_s=60,
    )
    latest: dict[Key, object] = {}
    seen: dict[tuple[Key, int], object] = {}
    channel_seqs: dict[tuple[str, str], dict[int, object]] = {}
    for bar in (codec.decode_bar(m.value()) for m in messages):
        key = (bar.instrument, bar.interval, bar.ts_us)
        content = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count, bar.vwap)
        assert seen.setdefault((key, bar.revision), content) == content, (
            "same key and revision, same bar"
        )
        by_seq = channel_seqs.setdefault((bar.instrument, bar.interval), {})
        assert by_seq.setdefault(bar.seq, (key, bar.revision)) == (key, bar.revision), (
            "same seq, same bar"
        )
        if key not in latest or bar.revision > latest[key].revision:  # type: ignore[attr-defined]
            latest[key] = bar
    for channel, by_seq in channel_seqs.items():
        assert sorted(by_seq) == list(range(1, len(by_seq) + 1)), f"{channel}: seq without gaps"
    return latest, sum(1 for key, revision in seen if revision > 0)


def assert_topic_equals_reference(latest: dict[Key, object], reference: dict[Key, RefBar]) -> None:
    assert set(latest) == set(reference)
    for key, ref in reference.items():
        bar = latest[key]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (  # type: ignore[attr-defined]
            ref.open,
            ref.high,
            ref.low,
            ref.close,
            ref.volume,
            ref.trade_count,
        ), key


def test_bars_pipeline_out_of_order_late_and_silent_trades_equal_reference(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    trades = generate(seed=5, n=20_000)
    reference, too_late = expected(trades, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    start_worker()

    replay(bootstrap, write_csv(trades, tmp_path / "trades.csv"))

    wait_for_rows(database_url, len(reference), timeout_s=120)
    assert_equal_to_reference(exported(database_url, tmp_path), reference)
    latest, revisions = latest_on_topic(bootstrap, codec, len(reference))
    assert_topic_equals_reference(latest, reference)
    assert revisions > 0, "late trades revised bars on the topic"
    letters = [
        codec.decode_dead_letter(m.value()) for m in read_topic(bootstrap, DLQ, at_least(too_late))
    ]
    assert too_late > 0 and sum(1 for d in letters if d.reason == "too_late") == too_late
    with psycopg.connect(database_url) as conn:
        db_revisions = conn.execute("select count(*) from bars where revision > 0").fetchone()[0]  # type: ignore[index]
    assert db_revisions > 0


def test_bars_pipeline_worker_killed_mid_stream_and_restarted_equals_reference(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    trades = generate(seed=8, n=30_000, spacing_us=20_000)
    reference, _ = expected(trades, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    worker = start_worker(app_id="killed", MS_BARS_CHECKPOINT_INTERVAL_S="0.5")
    with replaying(worker, write_csv(trades, tmp_path / "trades.csv"), speed="100") as replayer:
        wait_for_rows(database_url, len(reference) // 4, timeout_s=60)
        worker.started.process.send_signal(signal.SIGKILL)
        worker.started.process.wait(10)
        rows_at_kill = rows_in_database(database_url)
        start_worker(app_id="killed", MS_BARS_CHECKPOINT_INTERVAL_S="0.5")
        seconds_until_rows_grow(database_url, rows_at_kill)
        assert replayer.wait(120) in (0, 3)

    assert rows_at_kill < len(reference), "the worker was killed mid-stream"
    assert_bars_equal_reference(database_url, bootstrap, codec, reference, tmp_path)


def test_bars_pipeline_database_outage_is_retried_and_nothing_lost(
    bootstrap: str,
    database_url: str,
    postgres: PostgresServer,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    trades = generate(seed=9, n=20_000)
    reference, _ = expected(trades, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    worker = start_worker(app_id="outage")
    with replaying(worker, write_csv(trades, tmp_path / "trades.csv"), speed="100") as replayer:
        wait_for_rows(database_url, len(reference) // 5, timeout_s=60)
        postgres.stop()
        time.sleep(3)  # the outage itself: the sink must retry through it, not a wait for an event
        postgres.start()
        assert replayer.wait(120) in (0, 3)

    wait_for_rows(database_url, len(reference), timeout_s=120)
    assert_equal_to_reference(exported(database_url, tmp_path), reference)
    metrics = wait_http(f"{worker.url}/metrics").decode()
    retries = [line for line in metrics.splitlines() if line.startswith("sink_retries_total")]
    assert retries and float(retries[0].split()[-1]) > 0, "the sink saw the outage and retried"
