"""The bar book against the plain-Python reference: exact OHLCV, revisions, lateness, snapshots."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from reference import reference_bars, split_too_late

from shared.errors import ConfigError
from shared.models import Bar, TradeBatch
from streams.bars.core import BarBook, BarsConfig, FoldScratch, encode_snapshot, summarize_snapshot

T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z
CONFIG = BarsConfig.parse("1s,5s,1m,1h,1d", grace_s=2.0, max_lateness_s=60.0)


def batch_of(
    trades: list[tuple[str, int, float, float, int]], watermark_us: int | None = None
) -> TradeBatch:
    """The trades as one source's batch, stamped as a connector stamps it: by default with the
    latest event time of the batch (a replay's clock), received a few ms after each trade."""
    symbols = tuple(dict.fromkeys(t[0] for t in trades))
    if watermark_us is None:
        watermark_us = max((t[1] for t in trades), default=T0)
    return TradeBatch(
        source="test",
        instruments=symbols,
        instrument_index=np.array([symbols.index(t[0]) for t in trades], np.int32),
        ts_event_us=np.array([t[1] for t in trades], np.int64),
        ts_recv_us=np.array([min(t[1], 2**63 - 3_001) + 3_000 for t in trades], np.int64),
        price=np.array([t[2] for t in trades]),
        size=np.array([t[3] for t in trades]),
        side=np.array([t[4] for t in trades], np.int8),
        watermark_us=watermark_us,
    )


def generated_trades(seed: int, n: int = 6000) -> list[tuple[str, int, float, float, int]]:
    """Trades over ~10 minutes: jitter within grace, some late by 3-40 s, some later than 60 s."""
    rng = np.random.default_rng(seed)
    symbols = ["AAPL", "MSFT", "BRK.B", "ES=F", "QUIET"]
    trades = []
    for i in range(n):
        symbol = symbols[int(rng.integers(0, 4))] if i % 50 else "QUIET"
        ts = T0 + i * 100_000 + int(rng.integers(-1_500_000, 1_500_000))
        roll = rng.random()
        if roll < 0.02:
            ts -= int(rng.integers(3_000_000, 40_000_000))
        elif roll < 0.03:
            ts -= int(rng.integers(70_000_000, 300_000_000))
        if 2000 <= i < 2600:  # a silent stretch for everyone but AAPL
            symbol = "AAPL"
        price = round(100 + float(rng.normal(0, 2)), 2)
        trades.append((symbol, ts, price, float(rng.integers(1, 500)), int(rng.integers(-1, 2))))
    return trades


def fold_all(
    book: BarBook, trades: list[tuple[str, int, float, float, int]], seed: int
) -> tuple[list[Bar], int]:
    rng = np.random.default_rng(seed)
    bars, late, i = [], 0, 0
    while i < len(trades):
        size = int(rng.integers(1, 400))
        result = book.fold(batch_of(trades[i : i + size]))
        bars += result.bars
        late += len(result.too_late)
        i += size
    bars += book.fold(TradeBatch.heartbeat("test", T0 + 3 * 86_400_000_000)).bars
    return bars, late


def final(bars: list[Bar]) -> dict[tuple[str, str, int], Bar]:
    latest: dict[tuple[str, str, int], Bar] = {}
    for bar in bars:
        key = (bar.instrument, bar.interval, bar.ts_us)
        if key not in latest or bar.revision > latest[key].revision:
            latest[key] = bar
    return latest


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bar_book_out_of_order_late_and_silent_data_equals_reference(seed: int) -> None:
    trades = generated_trades(seed)
    kept, late = split_too_late(trades, CONFIG.max_lateness_us)

    bars, too_late = fold_all(BarBook(CONFIG), trades, seed)

    expected = reference_bars(kept, CONFIG.intervals)
    got = final(bars)
    assert too_late == len(late) > 0
    assert set(got) == set(expected)
    for key, ref in expected.items():
        bar = got[key]
        assert (bar.open, bar.high, bar.low, bar.close) == (
            ref.open,
            ref.high,
            ref.low,
            ref.close,
        ), key
        assert (bar.volume, bar.trade_count) == (ref.volume, ref.trade_count), key
        assert (bar.buy_volume, bar.sell_volume) == (ref.buy_volume, ref.sell_volume), key
        assert bar.vwap == pytest.approx(ref.vwap, rel=1e-9), key
        assert bar.ts_event_us == ref.close_ts


def test_bar_book_revisions_are_consecutive_and_only_for_late_trades() -> None:
    bars, _ = fold_all(BarBook(CONFIG), generated_trades(7), 7)

    revisions: dict[tuple[str, str, int], list[int]] = {}
    for bar in bars:
        revisions.setdefault((bar.instrument, bar.interval, bar.ts_us), []).append(bar.revision)

    assert all(r == list(range(len(r))) for r in revisions.values())
    assert any(len(r) > 1 for r in revisions.values()), "late trades produced revisions"


def test_bar_book_closes_window_only_after_grace_on_watermark() -> None:
    book = BarBook(CONFIG)

    first = book.fold(batch_of([("AAPL", T0 + 500_000, 10.0, 1.0, 1)]))
    before_grace = book.fold(TradeBatch.heartbeat("test", T0 + 2_999_999))
    after_grace = book.fold(TradeBatch.heartbeat("test", T0 + 3_000_000))

    assert first.bars == [] and before_grace.bars == []
    assert [(b.interval, b.ts_us, b.revision) for b in after_grace.bars] == [("1s", T0, 0)]


def test_bar_book_quiet_instrument_closes_on_another_instruments_trades() -> None:
    book = BarBook(CONFIG)
    book.fold(batch_of([("QUIET", T0, 5.0, 1.0, 0)]))

    result = book.fold(batch_of([("BUSY", T0 + 3_500_000, 7.0, 1.0, 0)]))

    assert ("QUIET", "1s", T0) in {(b.instrument, b.interval, b.ts_us) for b in result.bars}


def test_bar_book_ties_open_by_first_arrival_and_close_by_last_arrival() -> None:
    book = BarBook(CONFIG)
    book.fold(
        batch_of(
            [("X", T0 + 10, 1.0, 1.0, 0), ("X", T0 + 10, 2.0, 1.0, 0), ("X", T0 + 10, 3.0, 1.0, 0)]
        )
    )

    (bar,) = [
        b
        for b in book.fold(TradeBatch.heartbeat("test", T0 + 10_000_000)).bars
        if b.interval == "1s"
    ]

    assert (bar.open, bar.close, bar.high, bar.low) == (1.0, 3.0, 3.0, 1.0)


def test_bar_book_pre_epoch_trades_floor_to_their_window() -> None:
    book = BarBook(CONFIG)
    book.fold(batch_of([("OLD", -1_500_000, 1.0, 1.0, 0)]))

    bars = book.fold(TradeBatch.heartbeat("test", 10_000_000)).bars

    assert ("1s", -2_000_000) in {(b.interval, b.ts_us) for b in bars}


def test_bar_book_snapshot_restore_continues_identically() -> None:
    trades = generated_trades(11)
    whole, _ = fold_all(BarBook(CONFIG), trades, 11)
    book = BarBook(CONFIG)
    first = [
        bar for i in range(0, 3000, 250) for bar in book.fold(batch_of(trades[i : i + 250])).bars
    ]

    restored = BarBook.restore(CONFIG, book.snapshot())
    rest = [
        bar
        for i in range(3000, len(trades), 250)
        for bar in restored.fold(batch_of(trades[i : i + 250])).bars
    ]
    rest += restored.fold(TradeBatch.heartbeat("test", T0 + 3 * 86_400_000_000)).bars

    def strip(bars: list[Bar]) -> list[tuple[object, ...]]:
        return [
            (b.instrument, b.interval, b.ts_us, b.revision, b.close, b.volume, b.trade_count)
            for b in bars
        ]

    again, _ = fold_all(BarBook(CONFIG), trades, 11) if False else (None, None)
    del again
    one_pass = BarBook(CONFIG)
    expected = [
        bar
        for i in range(0, len(trades), 250)
        for bar in one_pass.fold(batch_of(trades[i : i + 250])).bars
    ]
    expected += one_pass.fold(TradeBatch.heartbeat("test", T0 + 3 * 86_400_000_000)).bars
    assert strip(first + rest) == strip(expected)
    assert final(whole).keys() == final(expected).keys()


def test_bar_book_restore_into_other_layout_is_refused() -> None:
    book = BarBook(CONFIG)
    book.fold(batch_of([("X", T0, 1.0, 1.0, 0)]))

    with pytest.raises(ValueError, match="other intervals"):
        BarBook.restore(BarsConfig.parse("1m", 2.0, 60.0), book.snapshot())


@pytest.mark.parametrize("intervals", ["7s", "1x", "", "1m,60s", "2d", "0s"])
def test_bars_config_invalid_intervals_raise_config_error_naming_variable(intervals: str) -> None:
    with pytest.raises(ConfigError, match="MS_BARS_INTERVALS"):
        BarsConfig.parse(intervals, 2.0, 60.0)


def test_bars_config_grace_above_max_lateness_is_refused() -> None:
    with pytest.raises(ConfigError, match="MS_BARS_GRACE_S"):
        BarsConfig.parse("1s", 120.0, 60.0)


def test_bar_book_growing_past_capacity_keeps_every_instruments_bars() -> None:
    book = BarBook(CONFIG, capacity=2)
    trades = [(f"S{i:03d}", T0 + i, 100.0 + i, 1.0, 0) for i in range(100)]

    book.fold(batch_of(trades[:3]))
    book.fold(batch_of(trades[3:]))
    restored = BarBook.restore(CONFIG, book.snapshot())
    bars = restored.fold(TradeBatch.heartbeat("test", T0 + 10_000_000)).bars

    closes = {b.instrument: b.close for b in bars if b.interval == "1s"}
    assert closes == {f"S{i:03d}": 100.0 + i for i in range(100)}


def test_bar_book_channel_seq_counts_every_emission_without_gaps_across_restore() -> None:
    trades = generated_trades(13)
    book = BarBook(CONFIG)
    bars = [
        bar for i in range(0, 3000, 300) for bar in book.fold(batch_of(trades[i : i + 300])).bars
    ]
    restored = BarBook.restore(CONFIG, book.snapshot())
    bars += [
        bar
        for i in range(3000, len(trades), 300)
        for bar in restored.fold(batch_of(trades[i : i + 300])).bars
    ]

    seqs: dict[tuple[str, str], list[int]] = {}
    for bar in bars:
        seqs.setdefault((bar.instrument, bar.interval), []).append(bar.seq)

    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())


def test_books_sharing_one_scratch_fold_as_books_apart() -> None:
    trades = generated_trades(seed=11, n=3000)
    halves = (trades[::2], trades[1::2])
    scratch = FoldScratch()
    shared = (BarBook(CONFIG, scratch=scratch), BarBook(CONFIG, scratch=scratch))
    apart = (BarBook(CONFIG), BarBook(CONFIG))
    got: tuple[list[Bar], list[Bar]] = ([], [])
    want: tuple[list[Bar], list[Bar]] = ([], [])
    for i in range(0, 1500, 100):  # interleaved, as a worker's partitions are
        for side in (0, 1):
            got[side].extend(shared[side].fold(batch_of(halves[side][i : i + 100])).bars)
            want[side].extend(apart[side].fold(batch_of(halves[side][i : i + 100])).bars)

    strip = [[dataclasses.replace(b, ts_recv_us=0) for b in bars] for bars in (*got, *want)]
    assert strip[0] == strip[2] and strip[1] == strip[3] and len(strip[0]) > 100


def test_trade_at_the_largest_time_lands_in_its_own_instruments_windows() -> None:
    book = BarBook(CONFIG)
    book.fold(batch_of([("FIRST", T0, 1.0, 1.0, 0)]))  # row 0: its windows sit at slot 0 up
    bars = book.fold(batch_of([("LAST", 2**63 - 1, 2.0, 1.0, 0)])).bars

    assert {(b.instrument, b.open) for b in bars} >= {("FIRST", 1.0)}
    assert all(b.open == (1.0 if b.instrument == "FIRST" else 2.0) for b in bars)
    first = [b for b in bars if b.instrument == "FIRST"]
    assert sorted(b.interval for b in first) == sorted(name for name, _ in CONFIG.intervals)
    assert all(b.trade_count == 1 and b.volume == 1.0 for b in first)


def test_restore_reads_the_older_snapshots_that_held_every_slot() -> None:
    trades = generated_trades(seed=5, n=3000)
    book = BarBook(CONFIG)
    for i in range(0, 2000, 250):
        book.fold(batch_of(trades[i : i + 250]))
    used = len(book.row_keys) * CONFIG.slots_per_instrument
    arrays = book.snapshot_arrays()
    del arrays["occupied"]
    # one source, so its rows are the instruments in order, as the first books had them
    assert book.row_keys == [(0, i) for i in range(len(book.instruments))]
    old_meta = {"names": book.instruments, "sources": book.sources, "layout": CONFIG.fingerprint()}
    arrays |= {
        "fstate": book.fstate[:used],
        "istate": book.istate[:used],
        "state": book.state[:used],
        "meta": np.frombuffer(orjson.dumps(old_meta), dtype=np.uint8),
    }

    restored = BarBook.restore(CONFIG, encode_snapshot(arrays))

    rest = batch_of(trades[2000:])
    strip = [
        [dataclasses.replace(b, ts_recv_us=0) for b in b_.fold(rest).bars]
        for b_ in (book, restored)
    ]
    assert strip[0] == strip[1] and strip[0]


def test_bar_book_continuing_carries_on_every_channels_seq_of_its_intervals() -> None:
    # Arrange: a book that emitted bars, its seqs, and a layout without 1h and 1d
    book = BarBook(CONFIG)
    book.fold(batch_of([(s, T0 + i * 1_000_000, 10.0, 1.0, 0) for i, s in enumerate("ABCAB")]))
    book.fold(TradeBatch.heartbeat("test", T0 + 3 * 86_400_000_000))
    seqs = book.channel_seqs()
    fewer = BarsConfig.parse("1s,1m", grace_s=2.0, max_lateness_s=60.0)

    # Act
    continued = BarBook.continuing(fewer, seqs)
    bars = continued.fold(batch_of([("A", T0 + 4 * 86_400_000_000, 11.0, 1.0, 0)])).bars
    bars += continued.fold(TradeBatch.heartbeat("test", T0 + 5 * 86_400_000_000)).bars

    # Assert: each channel of the kept intervals goes on right after its last seq
    assert seqs[("A", "1s")] == 2 and seqs[("C", "1d")] == 1
    assert {(b.interval, b.seq) for b in bars} == {
        ("1s", seqs[("A", "1s")] + 1),
        ("1m", seqs[("A", "1m")] + 1),
    }


def test_summarize_snapshot_of_another_layout_names_seqs_instruments_and_open_windows() -> None:
    # Arrange: two windows per interval still open for "A", one closed channel for "B"
    book = BarBook(CONFIG)
    book.fold(batch_of([("B", T0, 10.0, 1.0, 0)]))
    book.fold(batch_of([("A", T0 + 10_000_000, 10.0, 1.0, 0)]))

    # Act
    summary = summarize_snapshot(book.snapshot(), BarsConfig.parse("1m", 2.0, 60.0))

    # Assert: B's 1s bar was emitted (seq 1); A's windows are open in every interval
    assert summary.instruments == ["B", "A"]
    assert summary.seqs == {("B", "1s"): 1, ("B", "5s"): 1}
    assert summary.open_windows == len(CONFIG.intervals) + 3  # A in each, B's 1m, 1h, 1d


def test_summarize_snapshot_from_before_interval_names_takes_them_from_its_own_layout() -> None:
    # Arrange: a snapshot whose meta does not name its intervals, as before they were kept
    book = BarBook(CONFIG)
    book.fold(batch_of([("B", T0, 10.0, 1.0, 0)]))
    book.fold(batch_of([("A", T0 + 10_000_000, 10.0, 1.0, 0)]))
    arrays = book.snapshot_arrays()
    meta = orjson.loads(arrays["meta"].tobytes())
    del meta["intervals"]
    arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    old = encode_snapshot(arrays)

    # Act / Assert: the same layout knows them; another cannot tell its columns apart
    assert summarize_snapshot(old, CONFIG).seqs == {("B", "1s"): 1, ("B", "5s"): 1}
    assert summarize_snapshot(old, BarsConfig.parse("1m", 2.0, 60.0)).seqs == {}
