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


def test_bar_book_source_heartbeated_before_its_first_trade_keeps_its_trades() -> None:
    book = BarBook(CONFIG)
    clock = T0 + 3 * 3_600_000_000  # another partition's instrument set the replay's clock

    book.fold(TradeBatch.heartbeat("replay:sorted.csv:1", clock))
    trades = [("MSFT", T0 + i * 1_000_000, 410.0 + i, 10.0, 1) for i in range(100)]
    result = book.fold(dataclasses.replace(batch_of(trades, clock), source="replay:sorted.csv:1"))

    closing = book.fold(TradeBatch.heartbeat("replay:sorted.csv:1", clock + TWO_DAYS_US))

    assert result.too_late == []
    assert_equals_reference(result.bars + closing.bars, trades)


def test_bar_book_restored_from_a_book_before_per_source_rows_continues_every_source() -> None:
    import numpy as np
    import orjson

    from streams.bars import kernels as k
    from streams.bars.core import NEVER_US, BarsConfig, encode_snapshot

    config = BarsConfig.parse("1s,5s", grace_s=2.0, max_lateness_s=60.0)
    book = BarBook(config)
    live = [("ES=F", T0 + 500_000, 6010.25, 3.0, 1)]
    replayed = [("ES=F", T0 + 10_500_000, 6011.0, 2.0, -1)]
    book.fold(dataclasses.replace(batch_of(live, T0 + 600_000), source="cme"))
    book.fold(dataclasses.replace(batch_of(replayed, T0 + 10_600_000), source="replay:es.csv:1"))
    # the old layout: one row per instrument holding both sources' windows, and latest trades
    # never advanced (the kernel was handed the watermarks)
    per = config.slots_per_instrument
    fstate, istate, state = (
        book.fstate[: 2 * per].copy(),
        book.istate[: 2 * per].copy(),
        book.state[: 2 * per].copy(),
    )
    second = state[per:] != k.EMPTY
    fstate[:per][second], istate[:per][second], state[:per][second] = (
        fstate[per:][second],
        istate[per:][second],
        state[per:][second],
    )
    meta = {"names": book.instruments, "sources": book.sources, "layout": config.fingerprint()}
    old = {
        "fstate": fstate[:per],
        "istate": istate[:per],
        "state": state[:per],
        "watermarks": book.watermarks.copy(),
        "latest_trade_us": np.full(2, NEVER_US),
        "channel_seq": book.channel_seq[:1].copy(),
        "meta": np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
    }

    restored = BarBook.restore(config, encode_snapshot(old))

    assert sorted(restored.row_keys) == sorted(book.row_keys)
    assert list(restored.latest_trade_us) == list(book.latest_trade_us)
    for source in ("cme", "replay:es.csv:1"):
        ending = TradeBatch.heartbeat(source, T0 + TWO_DAYS_US)
        strip = [
            sorted((b.interval, b.ts_us, b.source, b.volume, b.seq) for b in each.fold(ending).bars)
            for each in (book, restored)
        ]
        assert strip[0] == strip[1] and strip[0]


def test_bar_book_restore_of_a_book_whose_sources_all_finished_has_no_rows() -> None:
    book = BarBook(CONFIG)
    replay(book, "replay:done.csv:1", generated_trades(seed=26, n=500))
    assert book.row_keys == []

    restored = BarBook.restore(CONFIG, book.snapshot())

    assert restored.row_keys == [] and restored.instruments == book.instruments
