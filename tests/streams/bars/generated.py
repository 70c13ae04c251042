"""Generated trade files for the bars pipeline tests, with their reference bars."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from reference import RefBar, reference_bars, split_too_late

from shared.partitioning import partition_for

T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z
Trade = tuple[str, int, float, float, int]
SYMBOLS = ("AAPL", "MSFT", "BRK.B", "ES=F", "BTC-USD", "QUIET")


def generate(seed: int, n: int, spacing_us: int = 50_000) -> list[Trade]:
    """Trades in arrival order: jitter within grace, some late by 3-40 s, a few more than 70 s
    late (too late), silent stretches, and QUIET trading only now and then."""
    rng = np.random.default_rng(seed)
    trades: list[Trade] = []
    for i in range(n):
        symbol = SYMBOLS[int(rng.integers(0, 5))] if i % 97 else "QUIET"
        if (n // 3) <= i < (n // 3 + n // 10):  # silence for all but AAPL
            symbol = "AAPL"
        ts = T0 + i * spacing_us + int(rng.integers(-1_500_000, 1_500_000))
        roll = rng.random()
        if roll < 0.01:
            ts -= int(rng.integers(3_000_000, 40_000_000))
        elif roll < 0.013 and i > 3000:
            ts -= int(rng.integers(70_000_000, 200_000_000))
        price = round(100 + float(rng.normal(0, 3)), 2)
        side = int(rng.integers(-1, 2))
        trades.append((symbol, ts, price, float(rng.integers(1, 1000)), side))
    return trades


def write_csv(trades: list[Trade], path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["ts", "symbol", "price", "size", "side"])
        for symbol, ts, price, size, side in trades:
            when = datetime.fromtimestamp(ts // 1_000_000, UTC).replace(microsecond=ts % 1_000_000)
            writer.writerow(
                [
                    when.isoformat().replace("+00:00", "Z"),
                    symbol,
                    repr(price),
                    repr(size),
                    {1: "buy", -1: "sell", 0: ""}[side],
                ]
            )
    return path


def expected(
    trades: list[Trade],
    intervals: tuple[tuple[str, int], ...],
    partitions: int,
    max_lateness_us: int,
) -> tuple[dict[tuple[str, str, int], RefBar], int]:
    """Return the final reference bars and how many trades are too late (judged per partition)."""
    kept: list[Trade] = []
    late = 0
    for p in range(partitions):
        mine = [t for t in trades if partition_for(t[0], partitions) == p]
        ok, too_late = split_too_late(mine, max_lateness_us)
        kept += ok
        late += len(too_late)
    return reference_bars(kept, intervals), late
