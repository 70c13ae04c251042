"""Bars per source: lateness against the partition's trades, replays with clocks of their own."""

from __future__ import annotations

import dataclasses

import pytest
from reference import reference_bars, split_too_late
from test_core import CONFIG, T0, batch_of, final, generated_trades

from shared.models import Bar, TradeBatch
from streams.bars.core import BarBook

MARCH = T0 + 59 * 86_400_000_000  # 2026-03-05T14:30:00Z
TWO_DAYS_US = 2 * 86_400_000_000


def replay(
    book: BarBook, source: str, trades: list[tuple[str, int, float, float, int]]
) -> tuple[list[Bar], int]:
    """Fold `trades` as a replay does: batches stamped with the latest event time, then +2 days."""
    bars, late, latest = [], 0, trades[0][1]
    for i in range(0, len(trades), 300):
        chunk = trades[i : i + 300]
        latest = max(latest, *(t[1] for t in chunk))
        result = book.fold(dataclasses.replace(batch_of(chunk, latest), source=source))
        bars += result.bars
        late += len(result.too_late)
    bars += book.fold(TradeBatch.heartbeat(source, latest + TWO_DAYS_US)).bars
    return bars, late


def shifted(
    trades: list[tuple[str, int, float, float, int]], by_us: int
) -> list[tuple[str, int, float, float, int]]:
    return [(symbol, ts + by_us, price, size, side) for symbol, ts, price, size, side in trades]


def assert_equals_reference(
    bars: list[Bar], trades: list[tuple[str, int, float, float, int]]
) -> None:
    kept, _ = split_too_late(trades, CONFIG.max_lateness_us)
    expected = reference_bars(kept, CONFIG.intervals)
    got = final(bars)
    assert set(got) == set(expected)
    for key, ref in expected.items():
        bar = got[key]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
            ref.open,
            ref.high,
            ref.low,
            ref.close,
            ref.volume,
            ref.trade_count,
        ), key


def test_bar_book_live_watermark_ahead_of_trades_judges_lateness_by_latest_trade() -> None:
    book = BarBook(CONFIG)
    wall_clock = T0 + 100_000_000  # a live feed's clock, 70 s ahead of its latest trade
    book.fold(batch_of([("AAPL", T0 + 30_000_000, 190.0, 100.0, 1)], wall_clock))

    # 95 s behind the watermark but 25 s behind the latest trade: late, not too late
    result = book.fold(batch_of([("AAPL", T0 + 5_000_000, 189.5, 40.0, -1)], wall_clock + 1))

    assert result.too_late == []
    (minute,) = [b for b in result.bars if b.interval == "1m"]
    assert (minute.revision, minute.volume, minute.open, minute.low) == (1, 140.0, 189.5, 189.5)


def test_bar_book_too_late_trade_reports_the_latest_trade_it_was_judged_by() -> None:
    book = BarBook(CONFIG)
    book.fold(batch_of([("AAPL", T0 + 130_000_000, 190.0, 100.0, 1)], T0 + 131_000_000))

    result = book.fold(
        batch_of(
            [("AAPL", T0 + 140_000_000, 190.2, 5.0, 1), ("AAPL", T0 + 70_000_000, 189.0, 7.0, 0)],
            T0 + 141_000_000,
        )
    )

    (late,) = result.too_late
    assert (late.instrument, late.ts_event_us, late.latest_trade_us) == (
        "AAPL",
        T0 + 70_000_000,
        T0 + 140_000_000,
    )


def test_bar_book_same_file_replayed_twice_yields_its_bars_again() -> None:
    trades = generated_trades(seed=21, n=3000)
    book = BarBook(CONFIG)

    first, first_late = replay(book, "replay:trades.csv:1", trades)
    second, second_late = replay(book, "replay:trades.csv:2", trades)

    assert first_late == second_late
    assert_equals_reference(first, trades)
    assert_equals_reference(second, trades)
    strip = [
        sorted((b.instrument, b.interval, b.ts_us, b.revision, b.close, b.volume) for b in bars)
        for bars in (first, second)
    ]
    assert strip[0] == strip[1]


def test_bar_book_replay_of_february_after_march_yields_februarys_bars() -> None:
    february = generated_trades(seed=22, n=3000)
    march = shifted(generated_trades(seed=23, n=3000), MARCH - T0)
    book = BarBook(CONFIG)

    replay(book, "replay:march.csv:1", march)
    bars, late = replay(book, "replay:february.csv:1", february)

    assert late == len(split_too_late(february, CONFIG.max_lateness_us)[1])
    assert_equals_reference(bars, february)


def test_bar_book_channel_seq_is_shared_by_the_sources_of_an_instrument() -> None:
    trades = generated_trades(seed=24, n=2000)
    book = BarBook(CONFIG)

    bars = replay(book, "replay:a.csv:1", trades)[0] + replay(book, "replay:b.csv:1", trades)[0]

    for channel in {(b.instrument, b.interval) for b in bars}:
        seqs = [b.seq for b in bars if (b.instrument, b.interval) == channel]
        assert seqs == list(range(1, len(seqs) + 1)), channel


def test_bar_book_finished_replay_releases_its_rows_and_refuses_stragglers() -> None:
    trades = generated_trades(seed=25, n=2000)
    book = BarBook(CONFIG)
    book.fold(batch_of([("LIVE", T0 + 1_000_000, 50.0, 1.0, 0)], T0 + 1_000_000))
    rows_before = len(book.row_keys)

    replay(book, "replay:done.csv:1", trades)
    straggler = book.fold(
        dataclasses.replace(batch_of([trades[-1]], trades[-1][1]), source="replay:done.csv:1")
    )

    assert len(book.row_keys) == rows_before == 1
    assert len(straggler.too_late) == 1 and straggler.bars == []
    restored = BarBook.restore(CONFIG, book.snapshot())
    assert restored.row_keys == book.row_keys


@pytest.mark.parametrize("seed", [31, 32])
def test_bar_book_live_feed_and_replay_beside_it_each_yield_exact_bars(seed: int) -> None:
    live = generated_trades(seed, n=2000)
    history = shifted(generated_trades(seed + 100, n=2000), -7 * 86_400_000_000)
    book = BarBook(CONFIG)
    live_bars: list[Bar] = []
    history_bars: list[Bar] = []

    for i in range(0, 2000, 200):  # interleaved, as two connectors publish at once
        chunk = live[i : i + 200]
        live_bars += book.fold(
            dataclasses.replace(batch_of(chunk, max(t[1] for t in chunk)), source="alpaca")
        ).bars
        part = history[i : i + 200]
        history_bars += book.fold(
            dataclasses.replace(batch_of(part, max(t[1] for t in part)), source="replay:h.csv:1")
        ).bars
    live_bars += book.fold(TradeBatch.heartbeat("alpaca", live[-1][1] + TWO_DAYS_US)).bars
    history_bars += book.fold(
        TradeBatch.heartbeat("replay:h.csv:1", history[-1][1] + TWO_DAYS_US)
    ).bars

    assert_equals_reference(live_bars, live)
    assert_equals_reference(history_bars, history)
