"""What the `soak` scenario concludes from its samples: memory trends, latency histograms, loss.

Pure parts (trend, histogram percentiles, the reference fold) take plain values; the loss check
reads one window's trades back from md.trades.v1 and that window's bars from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from numpy.typing import NDArray

from shared.codec import Codec
from shared.schema_ids import CommittedSchemas
from shared.topics import TRADES

NOISE_SIGMAS: Final = 3.0  # fitted growth within this many residual deviations is noise
NOISE_SHARE: Final = 0.01  # ... or within this share of the mean
VOLUME_TOLERANCE: Final = 1e-9  # relative; sums of integer sizes in another order


def rss_trend(times_s: Sequence[float], mb: Sequence[float]) -> dict[str, Any]:
    """Fit MB = a + b·minutes by least squares; say whether the growth over the span is noise.

    Flat means the fitted growth over the span is no more than NOISE_SIGMAS residual standard
    deviations, or NOISE_SHARE of the mean, whichever is larger.
    """
    if len(times_s) < 3:
        return {"samples": len(times_s), "slope_mb_per_min": None, "flat": None}
    t = (np.asarray(times_s, dtype=np.float64) - times_s[0]) / 60
    y = np.asarray(mb, dtype=np.float64)
    slope, intercept = np.polyfit(t, y, 1)
    residual = y - (slope * t + intercept)
    noise = float(residual.std(ddof=2)) if len(t) > 2 else 0.0
    spread = float(((t - t.mean()) ** 2).sum())
    span = float(t[-1])
    growth = float(slope) * span
    allowed = max(NOISE_SIGMAS * noise, NOISE_SHARE * float(y.mean()))
    return {
        "samples": len(t),
        "span_min": span,
        "first_mb": float(y[0]),
        "last_mb": float(y[-1]),
        "min_mb": float(y.min()),
        "max_mb": float(y.max()),
        "slope_mb_per_min": float(slope),
        "slope_stderr_mb_per_min": noise / math.sqrt(spread) if spread > 0 else None,
        "residual_sd_mb": noise,
        "fitted_growth_mb": growth,
        "noise_allowance_mb": allowed,
        "flat": abs(growth) <= allowed,
    }


def histogram_merge(into: dict[int, int], part: Mapping[str, int] | Mapping[int, int]) -> None:
    for ms, n in part.items():
        key = int(ms)
        into[key] = into.get(key, 0) + n


def histogram_summary(hist: Mapping[int, int]) -> dict[str, Any]:
    """p50, p99 and max of a {whole ms: count} histogram (a value's ms is its floor)."""
    n = sum(hist.values())
    if not n:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    keys = sorted(hist)
    counts = np.cumsum([hist[k] for k in keys])

    def quantile(q: float) -> float:
        return float(keys[int(np.searchsorted(counts, q * n, side="left"))])

    return {"samples": n, "p50_ms": quantile(0.5), "p99_ms": quantile(0.99), "max_ms": keys[-1]}


def tree_pss_bytes(pid: int) -> int | None:
    """Proportional set size of `pid` and its descendants (PostgreSQL's postmaster and backends:
    their shared buffers counted once in all, not once per backend)."""
    total, seen, todo = 0, set(), [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total or None


@dataclass(frozen=True, slots=True)
class WindowTrades:
    """Every trade of one window read back from the topic, in arrival order per instrument."""

    instruments: tuple[str, ...]
    instrument_id: NDArray[np.int64]
    ts_event_us: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]


def read_window(
    bootstrap: str, start_us: int, end_us: int, past_us: int, quiet_s: float = 5.0
) -> tuple[WindowTrades, dict[str, Any]]:
    """Read md.trades.v1 from the start; keep the trades with start <= ts_event < end.

    A partition is done once a message's watermark passes end + `past_us` (later trades of
    the window would be dead letters, not bars); reading ends when every partition is done or
    nothing arrives for `quiet_s`.
    """
    codec = Codec(CommittedSchemas())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-soak-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    partitions = list(consumer.list_topics(TRADES, timeout=10).topics[TRADES].partitions)
    consumer.assign([TopicPartition(TRADES, p, OFFSET_BEGINNING) for p in partitions])
    names: dict[str, int] = {}
    ids, ts, price, size = [], [], [], []
    done: set[int] = set()
    messages = trades = 0
    started = time.monotonic()
    try:
        while len(done) < len(partitions):
            batch = consumer.consume(1000, quiet_s)
            if not batch:
                break
            for message in batch:
                value, partition = message.value(), message.partition()
                if message.error() is not None or value is None or partition is None:
                    continue
                if partition in done:
                    continue
                trade_batch = codec.decode_trade_batch(value)
                messages += 1
                trades += len(trade_batch)
                if trade_batch.watermark_us > end_us + past_us:
                    done.add(partition)
                    consumer.pause([TopicPartition(TRADES, partition)])
                mask = (trade_batch.ts_event_us >= start_us) & (trade_batch.ts_event_us < end_us)
                if not mask.any():
                    continue
                local = np.array(
                    [names.setdefault(n, len(names)) for n in trade_batch.instruments], np.int64
                )
                ids.append(local[trade_batch.instrument_index[mask]])
                ts.append(trade_batch.ts_event_us[mask])
                price.append(trade_batch.price[mask])
                size.append(trade_batch.size[mask])
    finally:
        consumer.close()
    window = WindowTrades(
        tuple(names),
        np.concatenate(ids) if ids else np.zeros(0, np.int64),
        np.concatenate(ts) if ts else np.zeros(0, np.int64),
        np.concatenate(price) if price else np.zeros(0),
        np.concatenate(size) if size else np.zeros(0),
    )
    read = {
        "messages_read": messages,
        "trades_read": trades,
        "partitions_done_by_watermark": len(done),
        "read_seconds": time.monotonic() - started,
    }
    return window, read


Ohlcv = tuple[float, float, float, float, float, int]  # open, high, low, close, volume, trades


def fold(trades: WindowTrades) -> dict[str, Ohlcv]:
    """The reference bar of each instrument: open/close by event time (ties: arrival order)."""
    n = len(trades.price)
    if not n:
        return {}
    order = np.lexsort((np.arange(n), trades.ts_event_us, trades.instrument_id))
    ids, price, size = trades.instrument_id[order], trades.price[order], trades.size[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], n] - 1
    high = np.maximum.reduceat(price, starts)
    low = np.minimum.reduceat(price, starts)
    volume = np.add.reduceat(size, starts)
    count = np.diff(np.r_[starts, n])
    return {
        trades.instruments[int(ids[s])]: (
            float(price[s]),
            float(high[k]),
            float(low[k]),
            float(price[e]),
            float(volume[k]),
            int(count[k]),
        )
        for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))
    }


_DB_BARS: Final = (
    "select instrument, open, high, low, close, volume, trade_count from bars "
    "where interval = %s and ts = timestamptz 'epoch' + %s * interval '1 microsecond'"
)


def database_bars(database_url: str, interval: str, start_us: int) -> dict[str, Ohlcv]:
    """The latest revision of every bar of the window in the sink's `bars` table."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(_DB_BARS, (interval, start_us)).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}


def compare(expected: Mapping[str, Ohlcv], stored: Mapping[str, Ohlcv]) -> dict[str, Any]:
    """Bars equal between the fold and the database: prices and counts exactly, volume to
    VOLUME_TOLERANCE."""
    equal, unequal = 0, list[dict[str, Any]]()
    for instrument, want in expected.items():
        got = stored.get(instrument)
        same = got is not None and want[:4] == got[:4] and want[5] == got[5]
        if same and got is not None:
            same = abs(want[4] - got[4]) <= VOLUME_TOLERANCE * max(1.0, abs(want[4]))
        if same:
            equal += 1
        elif len(unequal) < 5:
            unequal.append({"instrument": instrument, "fold": want, "database": got})
    missing = sum(1 for i in expected if i not in stored)
    return {
        "expected": len(expected),
        "equal": equal,
        "missing_in_database": missing,
        "extra_in_database": sum(1 for i in stored if i not in expected),
        "trades_in_window": sum(b[5] for b in expected.values()),
        "examples_unequal": unequal,
        "ok": equal == len(expected) == len(stored) and len(expected) > 0,
    }
