"""TradeTally: per-instrument counts, volumes and the last price by event time, across batches."""

from __future__ import annotations

import numpy as np
import pytest

from shared.models import TradeBatch
from streams.stats.core import TradeTally

T0 = 1_767_623_400_000_000


def _batch(
    trades: list[tuple[str, int, float, float]],
    source: str = "test",
    instruments: tuple[str, ...] | None = None,
) -> TradeBatch:
    """Build a batch from (symbol, ts_event_us, price, size) rows, in arrival order."""
    names = instruments if instruments is not None else tuple(dict.fromkeys(t[0] for t in trades))
    return TradeBatch(
        source=source,
        instruments=names,
        instrument_index=np.array([names.index(t[0]) for t in trades], dtype=np.int32),
        ts_event_us=np.array([t[1] for t in trades], dtype=np.int64),
        ts_recv_us=np.full(len(trades), T0 + 10**9, dtype=np.int64),
        price=np.array([t[2] for t in trades], dtype=np.float64),
        size=np.array([t[3] for t in trades], dtype=np.float64),
    )


def test_trade_tally_fold_one_batch_counts_trades_and_volume_per_instrument() -> None:
    # Arrange
    tally = TradeTally()
    batch = _batch(
        [("AAPL", T0, 190.0, 10.0), ("MSFT", T0 + 1, 410.0, 2.5), ("AAPL", T0 + 2, 190.5, 5.0)]
    )

    # Act
    tally.fold(batch)

    # Assert
    assert (tally.instruments["AAPL"].trades, tally.instruments["AAPL"].volume) == (2, 15.0)
    assert (tally.instruments["MSFT"].trades, tally.instruments["MSFT"].volume) == (1, 2.5)
    assert (tally.trades, tally.batches) == (3, 1)


def test_trade_tally_fold_out_of_order_batch_last_price_is_latest_by_event_time() -> None:
    # Arrange
    tally = TradeTally()
    batch = _batch(
        [("AAPL", T0 + 5, 191.0, 1.0), ("AAPL", T0 + 9, 195.0, 1.0), ("AAPL", T0 + 1, 180.0, 1.0)]
    )

    # Act
    tally.fold(batch)

    # Assert
    assert tally.instruments["AAPL"].last_price == 195.0
    assert tally.instruments["AAPL"].last_ts_event_us == T0 + 9


def test_trade_tally_fold_equal_event_times_later_arrival_wins() -> None:
    # Arrange
    tally = TradeTally()
    batch = _batch(
        [
            ("AAPL", T0 + 7, 100.0, 1.0),
            ("MSFT", T0 + 7, 400.0, 1.0),
            ("AAPL", T0 + 7, 101.0, 1.0),
            ("AAPL", T0 + 3, 99.0, 1.0),
            ("AAPL", T0 + 7, 102.0, 1.0),
            ("MSFT", T0 + 7, 401.0, 1.0),
        ]
    )

    # Act
    tally.fold(batch)

    # Assert
    assert tally.instruments["AAPL"].last_price == 102.0
    assert tally.instruments["MSFT"].last_price == 401.0


def test_trade_tally_fold_many_instruments_interleaved_matches_per_trade_reference() -> None:
    # Arrange
    rng = np.random.default_rng(17)
    symbols = [f"S{i}" for i in range(25)]
    batches = [
        _batch(
            [
                (symbols[int(s)], T0 + int(t), float(p), float(q))
                for s, t, p, q in zip(
                    rng.integers(0, 25, 400),
                    rng.integers(0, 50, 400),
                    rng.uniform(1, 100, 400).round(2),
                    rng.integers(1, 100, 400),
                    strict=True,
                )
            ]
        )
        for _ in range(5)
    ]
    expected: dict[str, list[float]] = {}  # symbol -> [trades, volume, last_ts, last_price]
    for batch in batches:
        for s, t, p, q in zip(
            batch.instrument_column(),
            batch.ts_event_us.tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            strict=True,
        ):
            entry = expected.setdefault(s, [0, 0.0, 0, 0.0])
            entry[0] += 1
            entry[1] += q
            if t >= entry[2]:
                entry[2], entry[3] = t, p
    tally = TradeTally()

    # Act
    for batch in batches:
        tally.fold(batch)

    # Assert
    assert set(tally.instruments) == set(expected)
    for symbol, (trades, volume, last_ts, last_price) in expected.items():
        got = tally.instruments[symbol]
        assert (got.trades, got.last_ts_event_us, got.last_price) == (
            trades,
            last_ts,
            last_price,
        ), symbol
        assert got.volume == pytest.approx(volume), symbol
    assert (tally.trades, tally.batches) == (2000, 5)


def test_trade_tally_fold_later_batch_with_older_trade_keeps_last_price() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("AAPL", T0 + 100, 190.0, 1.0)]))

    # Act
    tally.fold(_batch([("AAPL", T0 + 50, 150.0, 4.0)]))

    # Assert
    aapl = tally.instruments["AAPL"]
    assert (aapl.last_price, aapl.last_ts_event_us) == (190.0, T0 + 100)
    assert (aapl.trades, aapl.volume) == (2, 5.0)


def test_trade_tally_fold_later_batch_with_newer_trade_updates_last_price() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("AAPL", T0 + 100, 190.0, 1.0)]))

    # Act
    tally.fold(_batch([("AAPL", T0 + 101, 191.0, 1.0)]))

    # Assert
    assert tally.instruments["AAPL"].last_price == 191.0


def test_trade_tally_fold_later_batch_with_equal_event_time_wins() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("AAPL", T0 + 100, 190.0, 1.0)]))

    # Act
    tally.fold(_batch([("AAPL", T0 + 100, 189.0, 1.0)]))

    # Assert
    assert tally.instruments["AAPL"].last_price == 189.0


def test_trade_tally_fold_unused_dictionary_entries_are_not_tallied() -> None:
    # Arrange
    tally = TradeTally()
    batch = _batch([("MSFT", T0, 410.0, 1.0)], instruments=("AAPL", "MSFT", "TSLA"))

    # Act
    tally.fold(batch)

    # Assert
    assert list(tally.instruments) == ["MSFT"]


def test_trade_tally_fold_empty_batch_changes_nothing() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("AAPL", T0, 190.0, 1.0)]))

    # Act
    tally.fold(_batch([], instruments=("AAPL",)))

    # Assert
    assert (tally.trades, tally.batches, tally.instruments["AAPL"].trades) == (1, 1, 1)


def test_trade_tally_fold_records_source_of_latest_batch() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("AAPL", T0, 190.0, 1.0)], source="replay"))

    # Act
    tally.fold(_batch([("AAPL", T0 - 1, 189.0, 1.0)], source="simulator"))

    # Assert
    assert tally.instruments["AAPL"].source == "simulator"


def test_trade_tally_fold_only_pre_epoch_trade_sets_last_price() -> None:
    # Arrange: parse_timestamp_us accepts times before 1970, so event times can be negative
    tally = TradeTally()

    # Act
    tally.fold(_batch([("OLD", -1_000_000, 42.0, 1.0)]))

    # Assert
    assert tally.instruments["OLD"].last_price == 42.0
    assert tally.instruments["OLD"].last_ts_event_us == -1_000_000


def test_trade_tally_snapshot_lists_instruments_sorted_with_totals() -> None:
    # Arrange
    tally = TradeTally()
    tally.fold(_batch([("MSFT", T0 + 1, 410.0, 2.0), ("AAPL", T0, 190.0, 3.0)], source="replay"))

    # Act
    snapshot = tally.snapshot()

    # Assert
    assert snapshot == {
        "trades": 2,
        "batches": 1,
        "instruments": {
            "AAPL": {
                "trades": 1,
                "volume": 3.0,
                "last_price": 190.0,
                "last_ts_event_us": T0,
                "source": "replay",
            },
            "MSFT": {
                "trades": 1,
                "volume": 2.0,
                "last_price": 410.0,
                "last_ts_event_us": T0 + 1,
                "source": "replay",
            },
        },
    }
    assert list(snapshot["instruments"]) == ["AAPL", "MSFT"]  # type: ignore[arg-type]
