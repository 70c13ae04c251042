"""`make down`, then `make up` again: the memory broker comes back empty, and nothing is skipped.

The bar checkpoints in PostgreSQL outlive the broker; they name the topic incarnation they were
taken from, so the restarted worker discards them (with a WARNING) instead of skipping the new
topic's messages up to the old offsets, and channel sequence numbers continue. A file whose
replay the stop cut short, replayed again, leaves exactly its bars in the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, run_module, wait_http
from generated import SYMBOLS, expected, generate, write_csv
from test_pipeline import INTERVALS, MAX_LATENESS_US, Key, assert_equal_to_reference, exported

from shared.settings import KafkaSettings
from streams.embedded.ports import free_port

FILE_TRADES = 20_000  # 1,000 s of event time: 20 s at --speed 50


def per_instrument(url: str, sql: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {str(name): int(value) for name, value in conn.execute(sql).fetchall()}


def scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row is not None else 0


def counted(metrics: str, agent: str) -> float:
    prefix = f'trades_processed_total{{agent="{agent}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.5)


def file_bars_in_database(url: str) -> int:
    symbols = list(SYMBOLS)
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from bars where instrument = any(%s)", [symbols])
        return int(row.fetchone()[0])  # type: ignore[index]


@pytest.mark.timeout(300)  # two stack starts and two replays
def test_stack_restart_mid_replay_discards_old_checkpoints_and_folds_every_trade(
    tmp_path: Path,
) -> None:
    ports = {
        name: free_port()
        for name in ("KAFKA", "POSTGRES", "API", "WORKER", "SINK", "CONNECTOR", "WS")
    }
    env = {f"MS_STACK_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"MS_STACK_RUN_DIR": str(tmp_path / "run"), "MS_STACK_SIMULATOR_RATE": "5000"}
    database = f"postgresql://postgres@127.0.0.1:{ports['POSTGRES']}/marketstream"
    worker = f"http://127.0.0.1:{ports['WORKER']}"
    trades = generate(seed=51, n=FILE_TRADES)
    partitions = KafkaSettings().trades_partitions  # the replayer's, beside make up
    reference, _ = expected(trades, INTERVALS, partitions, MAX_LATENESS_US)
    csv = write_csv(trades, tmp_path / "history.csv")
    replay = ["connectors", "run", "replay", str(csv)]
    replay_env = {"MS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['KAFKA']}"}
    replay_env["MS_CONNECTOR_HTTP_PORT"] = "0"
    try:
        first = run_module(["streams", "stack", "up", "--detach"], env, timeout_s=300)
        assert first.returncode == 0, first.stdout + first.stderr
        wait_until(
            lambda: (
                scalar(database, 'select coalesce(min("offset"), 0) from bar_checkpoints') > 300
            ),
            120,
            "bar checkpoints past offset 300",
        )
        # a user replays a file beside the stack, stops the replay (Ctrl-C) and the stack
        # before it is through, and after make up replays the file again
        replayer = subprocess.Popen(
            [sys.executable, "-m", *replay, "--speed", "50"],
            cwd=ROOT,
            env={**os.environ, **replay_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: file_bars_in_database(database) > 20, 60, "the file's first bars")
            old_seq = per_instrument(
                database, "select instrument, max(seq) from bars where interval = '1s' group by 1"
            )
            assert replayer.poll() is None, "the replay is still under way"
            replayer.send_signal(signal.SIGINT)
            assert replayer.wait(30) == 0, "what it read is acknowledged"
            assert file_bars_in_database(database) < len(reference), "the stop cut it short"
            down = run_module(["streams", "stack", "down"], env, timeout_s=120)
        finally:
            if replayer.poll() is None:
                replayer.kill()
        assert down.returncode == 0, down.stdout + down.stderr
        assert "keeps" in down.stdout and "loses" in down.stdout, down.stdout
        restarted_at = datetime.now(UTC)

        second = run_module(["streams", "stack", "up", "--detach"], env, timeout_s=300)
        assert second.returncode == 0, second.stdout + second.stderr

        wait_until(
            lambda: counted(wait_http(f"{worker}/metrics").decode(), "tally_trades") > 20_000,
            120,
            "20,000 trades tallied after the restart",
        )

        def folded_share() -> float:
            metrics = wait_http(f"{worker}/metrics").decode()
            return counted(metrics, "aggregate_bars") / counted(metrics, "tally_trades")

        # the bar agent starts later than the tally (its books are restored first), then keeps
        # up; a worker skipping the new topic's trades (the defect) would stay near 0
        wait_until(lambda: folded_share() >= 0.9, 60, "the bar agent folding 90% of the trades")
        log = (tmp_path / "run/logs/worker.log").read_text()
        assert "discarding the bar checkpoint" in log and "another incarnation" in log
        since_restart = f"interval = '1s' and ts > '{restarted_at.isoformat()}'"
        wait_until(
            lambda: scalar(database, f"select count(*) from bars where {since_restart}") > 50,
            60,
            "new 1s bars in the database",
        )
        new_seq = per_instrument(
            database, f"select instrument, min(seq) from bars where {since_restart} group by 1"
        )
        continued = [(name, seq, old_seq[name]) for name, seq in new_seq.items() if name in old_seq]
        assert continued and all(seq > old for _, seq, old in continued), continued

        # the same file again, whole: its bars replace what the cut replay left
        again = run_module(replay, replay_env, timeout_s=300)
        assert again.returncode == 0, again.stderr
        wait_until(
            lambda: file_bars_in_database(database) >= len(reference), 120, "the file's bars"
        )
        rows = exported(database, tmp_path)
        file_rows: dict[Key, dict[str, str]] = {k: v for k, v in rows.items() if k[0] in SYMBOLS}
        assert_equal_to_reference(file_rows, reference)
    finally:
        run_module(["streams", "stack", "down"], env, timeout_s=120)
