"""Replays through the worker: the same file twice, then an earlier month, each yields its bars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import RunningWorker, at_least, read_topic
from generated import expected, generate, write_csv
from test_pipeline import (
    INTERVALS,
    MAX_LATENESS_US,
    PARTITIONS,
    assert_equal_to_reference,
    exported,
    replay,
    wait_for_rows,
)

from shared.codec import Codec
from shared.topics import DLQ

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


def test_replay_with_a_live_sources_name_is_judged_late_against_its_clock(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    trades = generate(seed=43, n=3000)
    reference, too_late = expected(trades, INTERVALS, PARTITIONS, MAX_LATENESS_US)
    path = write_csv(trades, tmp_path / "trades.csv")
    start_worker()

    replay(bootstrap, path, extra=["--source", "alpaca"])
    replay(bootstrap, path, extra=["--source", "alpaca"])

    wait_for_rows(database_url, len(reference), timeout_s=120)
    assert_equal_to_reference(exported(database_url, tmp_path), reference)
    letters = [
        codec.decode_dead_letter(m.value())
        for m in read_topic(bootstrap, DLQ, at_least(too_late + len(trades)))
    ]
    # the second pass is two days behind the source's clock: every trade of it is too late
    assert sum(1 for d in letters if d.reason == "too_late") == too_late + len(trades)
