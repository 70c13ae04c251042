"""The seeded simulator (clock=simulated): reproducible, exact counts, paced event times."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from connectors.simulator import MAX_CHUNK, SimulatorConfig, SimulatorConnector
from shared.models import TradeBatch

START_US = 1_767_225_600_000_000


async def _chunks(**settings: Any) -> list[TradeBatch]:
    """Run the simulator to the end of its `count` and return every chunk it yielded."""
    settings = {"clock": "simulated", "start_us": START_US, **settings}
    connector = SimulatorConnector(SimulatorConfig(**settings))
    chunks: list[TradeBatch] = []
    async for item in connector.stream():
        assert isinstance(item, TradeBatch), item
        chunks.append(item)
    return chunks


def _column(chunks: list[TradeBatch], name: str) -> np.ndarray:
    return np.concatenate([getattr(c, name) for c in chunks])


async def test_simulator_same_seed_yields_identical_trades() -> None:
    # Arrange
    settings = {"instruments": 50, "count": 70_000, "rate": 5000.0, "seed": 11}

    # Act
    first = await _chunks(**settings)
    second = await _chunks(**settings)

    # Assert
    assert [len(c) for c in first] == [len(c) for c in second]
    for a, b in zip(first, second, strict=True):
        assert a.instruments == b.instruments
        for name in ("instrument_index", "ts_event_us", "ts_recv_us", "price", "size", "side"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


async def test_simulator_different_seed_yields_different_trades() -> None:
    # Arrange
    settings = {"instruments": 50, "count": 5_000, "rate": 5000.0}

    # Act
    first = await _chunks(seed=1, **settings)
    second = await _chunks(seed=2, **settings)

    # Assert
    assert not np.array_equal(_column(first, "price"), _column(second, "price"))
    assert not np.array_equal(
        _column(first, "instrument_index"), _column(second, "instrument_index")
    )


@pytest.mark.parametrize("count", [1, 999, MAX_CHUNK, MAX_CHUNK + 1, 3 * MAX_CHUNK + 17])
async def test_simulator_count_set_yields_exactly_count_trades(count: int) -> None:
    # Arrange / Act
    chunks = await _chunks(instruments=20, count=count, rate=1000.0)

    # Assert
    assert sum(len(c) for c in chunks) == count
    assert all(0 < len(c) <= MAX_CHUNK for c in chunks)
    for chunk in chunks:
        n = len(chunk)
        assert all(
            len(getattr(chunk, col)) == n
            for col in ("instrument_index", "ts_event_us", "ts_recv_us", "size")
        )


async def test_simulator_prices_are_positive_and_rounded_to_cents() -> None:
    # Arrange / Act
    price = _column(
        await _chunks(instruments=200, count=100_000, rate=10_000.0, volatility=0.01), "price"
    )

    # Assert
    assert np.all(np.isfinite(price))
    assert np.all(price > 0)
    assert np.all(np.abs(price * 100 - np.round(price * 100)) < 1e-6)


async def test_simulator_sizes_are_whole_and_at_least_one() -> None:
    # Arrange / Act
    size = _column(await _chunks(instruments=20, count=50_000, rate=10_000.0), "size")

    # Assert
    assert np.all(size >= 1)
    assert np.all(size == np.round(size))


async def test_simulator_sides_are_buy_or_sell() -> None:
    # Arrange / Act
    side = _column(await _chunks(instruments=20, count=10_000, rate=10_000.0), "side")

    # Assert
    assert set(np.unique(side).tolist()) == {-1, 1}


async def test_simulator_instruments_are_distinct_prefixed_symbols() -> None:
    # Arrange / Act
    chunks = await _chunks(instruments=12, count=2_000, rate=1000.0, prefix="XY")

    # Assert
    symbols = chunks[0].instruments
    assert len(symbols) == len(set(symbols)) == 12
    assert all(s.startswith("XY") for s in symbols)
    index = _column(chunks, "instrument_index")
    assert index.min() >= 0
    assert index.max() < 12


async def test_simulator_zero_volatility_keeps_each_price_constant() -> None:
    # Arrange / Act
    chunks = await _chunks(instruments=30, count=20_000, rate=1000.0, volatility=0.0)

    # Assert
    index, price = _column(chunks, "instrument_index"), _column(chunks, "price")
    for i in np.unique(index).tolist():
        assert np.unique(price[index == i]).size == 1, chunks[0].instruments[i]


@pytest.mark.parametrize("rate", [1000.0, 3000.0, 7.0])
async def test_simulator_clock_simulated_event_times_non_decreasing_within_chunk(
    rate: float,
) -> None:
    # Arrange / Act
    chunks = await _chunks(
        instruments=10, count=3 * MAX_CHUNK // 2 if rate > 100 else 200, rate=rate
    )

    # Assert
    for chunk in chunks:
        assert np.all(np.diff(chunk.ts_event_us) >= 0)
        np.testing.assert_array_equal(chunk.ts_recv_us, chunk.ts_event_us)


@pytest.mark.parametrize("rate", [1000.0, 3000.0, 7.0])
async def test_simulator_clock_simulated_chunks_are_spaced_by_one_over_rate(rate: float) -> None:
    # Arrange
    count = 3 * MAX_CHUNK // 2 if rate > 100 else 200

    # Act
    chunks = await _chunks(instruments=10, count=count, rate=rate)

    # Assert: chunk k covers [start + emitted/rate, start + (emitted + len)/rate)
    emitted = 0
    for chunk in chunks:
        lo = START_US + emitted * 1e6 / rate
        hi = START_US + (emitted + len(chunk)) * 1e6 / rate
        assert chunk.ts_event_us.min() >= lo - 1
        assert chunk.ts_event_us.max() <= hi + 1
        emitted += len(chunk)
    ts = _column(chunks, "ts_event_us")
    assert np.all(np.diff(ts) >= 0)
    span_us = count * 1e6 / rate
    assert ts[-1] - ts[0] >= 0.95 * span_us


async def test_simulator_high_silence_rate_leaves_some_instruments_without_trades() -> None:
    # Arrange: each chunk covers 65.5 s; about half the instruments go quiet per chunk for ~1 h
    settings = {
        "instruments": 10,
        "count": 6 * MAX_CHUNK,
        "rate": 1000.0,
        "seed": 3,
        "silence_mean_s": 3600.0,
    }

    # Act
    quiet = await _chunks(silence_per_hour=27.5, **settings)
    busy = await _chunks(silence_per_hour=0.0, **settings)

    # Assert: every chunk of the busy run trades all ten; some chunk of the quiet run does not
    assert [len(np.unique(c.instrument_index)) for c in busy] == [10] * 6
    assert min(len(np.unique(c.instrument_index)) for c in quiet) < 10
