"""Replays through the worker: the same file twice, then an earlier month, each yields its bars."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from conftest import RunningWorker, at_least, decoded_trades, read_topic
from generated import expected, generate, write_csv
from test_pipeline import (
    INTERVALS,
    MAX_LATENESS_US,
    PARTITIONS,
    assert_equal_to_reference,
    exported,
    replay,
    replaying,
    wait_for_rows,
)

from shared.codec import Codec
from shared.topics import DLQ, TRADES

MONTH_US = 31 * 86_400_000_000


def test_replay_same_file_twice_then_an_earlier_file_yields_exactly_their_bars(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    march = [(s, ts + 2 * MONTH_US, p, q, side) for s, ts, p, q, side in generate(seed=41, n=8000)]
    february = [(s, ts + MONTH_US, p, q, side) for s, ts, p, q, side in generate(seed=42, n=8000)]
    march_bars, march_late = expected(march, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    february_bars, february_late = expected(february, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    march_csv = write_csv(march, tmp_path / "march.csv")
    start_worker()

    for path in (march_csv, march_csv, write_csv(february, tmp_path / "february.csv")):
        replay(bootstrap, path)

    wait_for_rows(database_url, len(march_bars) + len(february_bars), timeout_s=120)
    assert_equal_to_reference(exported(database_url, tmp_path), march_bars | february_bars)
    too_late = 2 * march_late + february_late
    letters = [
        codec.decode_dead_letter(m.value()) for m in read_topic(bootstrap, DLQ, at_least(too_late))
    ]
    assert march_late > 0 and sum(1 for d in letters if d.reason == "too_late") == too_late
    details = [d.detail for d in letters if d.reason == "too_late"]
    assert all("latest trade of its source" in d and "-46" not in d for d in details)


def test_replay_joining_a_sources_clock_is_judged_late_by_it_and_leaves_it_where_it_was(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    feed = generate(seed=43, n=3000)  # as a live feed's trades: 150 s of them
    _, feed_late = expected(feed, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    hour_before = [(s, ts - 3_600_000_000, p, q, side) for s, ts, p, q, side in feed[:500]]
    end_us = max(t[1] for t in feed)
    right_after = [("AAPL", end_us + 1_000_000 + i * 10_000, 191.0, 5.0, 1) for i in range(50)]
    start_worker()

    for trades, name in ((feed, "feed"), (hour_before, "late"), (right_after, "next")):
        replay(bootstrap, write_csv(trades, tmp_path / f"{name}.csv"), extra=["--source", "alpaca"])

    too_late = feed_late + len(hour_before)
    letters = [
        codec.decode_dead_letter(m.value()) for m in read_topic(bootstrap, DLQ, at_least(too_late))
    ]
    # the hour-old trades are too late for alpaca's clock; the ones right after its latest
    # trade are not: a joining replay leaves the clock where the feed had it
    assert sum(1 for d in letters if d.reason == "too_late") == too_late


def test_replay_stopped_mid_file_closes_every_bar_of_what_it_published(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    worker = start_worker()
    csv = write_csv(generate(seed=44, n=3000), tmp_path / "t.csv")
    with replaying(worker, csv, "1") as replayer:
        wait_for_rows(database_url, 10, timeout_s=30)  # a few seconds of the file are in
        replayer.send_signal(signal.SIGTERM)
        assert replayer.wait(30) == 0

    published = decoded_trades(codec, read_topic(bootstrap, TRADES, at_least(1)))
    reference, _ = expected(published, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    assert 0 < len(published) < 3000, "stopped mid-file"
    wait_for_rows(database_url, len(reference), timeout_s=60)
    assert_equal_to_reference(exported(database_url, tmp_path), reference)
