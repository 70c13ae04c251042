"""The seeded recordings of the providers scenario: Alpaca stream frames and Finnhub frames.

Trades are drawn for a universe of liquid US listings at their March 2024 price levels: activity
skewed towards the largest names, prices a random walk in cents, sizes a mix of odd lots and
round lots with the odd-lot condition, IEX's exchange code, times in nanoseconds. Frames are
written in each provider's documented format (stream v2 for Alpaca, `{"type":"trade"}` for
Finnhub), as the fakes of connectors.fakes replay them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

# symbol, reference price (USD, March 2024), tape (A: NYSE, B: NYSE Arca and others, C: Nasdaq)
UNIVERSE: Final[tuple[tuple[str, float, str], ...]] = (
    ("AAPL", 172.8, "C"), ("MSFT", 404.5, "C"), ("NVDA", 919.1, "C"), ("TSLA", 177.6, "C"),
    ("AMZN", 175.4, "C"), ("META", 499.8, "C"), ("GOOGL", 139.6, "C"), ("GOOG", 141.0, "C"),
    ("AMD", 190.4, "C"), ("SPY", 516.8, "B"), ("QQQ", 443.1, "C"), ("IWM", 203.9, "B"),
    ("AVGO", 1271.5, "C"), ("NFLX", 600.7, "C"), ("INTC", 43.2, "C"), ("PLTR", 24.8, "A"),
    ("SMCI", 1050.9, "C"), ("COIN", 257.3, "C"), ("MARA", 27.1, "C"), ("BAC", 36.4, "A"),
    ("JPM", 193.4, "A"), ("WFC", 56.7, "A"), ("C", 59.8, "A"), ("GS", 397.2, "A"),
    ("MS", 87.9, "A"), ("XOM", 110.2, "A"), ("CVX", 153.3, "A"), ("OXY", 61.7, "A"),
    ("KO", 59.9, "A"), ("PEP", 167.3, "C"), ("WMT", 60.4, "A"), ("COST", 728.9, "C"),
    ("HD", 377.9, "A"), ("LOW", 240.1, "A"), ("TGT", 166.4, "A"), ("NKE", 101.6, "A"),
    ("DIS", 113.7, "A"), ("CMCSA", 42.4, "C"), ("T", 17.1, "A"), ("VZ", 40.3, "A"),
    ("PFE", 27.6, "A"), ("MRK", 126.3, "A"), ("JNJ", 158.4, "A"), ("ABBV", 176.1, "A"),
    ("LLY", 768.6, "A"), ("UNH", 490.6, "A"), ("CVS", 74.5, "A"), ("BMY", 51.9, "A"),
    ("V", 282.6, "A"), ("MA", 473.4, "A"), ("PYPL", 62.3, "C"), ("SQ", 78.6, "A"),
    ("CRM", 305.2, "A"), ("ORCL", 112.3, "A"), ("ADBE", 550.1, "C"), ("IBM", 197.7, "A"),
    ("CSCO", 49.5, "C"), ("QCOM", 170.5, "C"), ("TXN", 171.4, "C"), ("MU", 98.5, "C"),
    ("ARM", 140.9, "C"), ("UBER", 78.3, "A"), ("ABNB", 163.3, "C"), ("SHOP", 79.1, "A"),
    ("SNOW", 166.3, "A"), ("BA", 193.9, "A"), ("CAT", 339.7, "A"), ("GE", 157.2, "A"),
    ("F", 12.3, "A"), ("GM", 42.1, "A"), ("RIVN", 11.2, "C"), ("LCID", 3.1, "C"),
    ("NIO", 5.4, "A"), ("BABA", 73.5, "A"), ("PDD", 123.3, "C"), ("SOFI", 8.3, "C"),
    ("HOOD", 17.4, "C"), ("AAL", 14.9, "C"), ("DAL", 43.3, "A"), ("UAL", 43.4, "C"),
    ("CCL", 16.5, "A"), ("X", 41.7, "A"), ("FCX", 42.6, "A"), ("NEM", 36.5, "A"),
    ("GLD", 200.4, "B"), ("SLV", 22.6, "B"), ("TLT", 95.2, "C"), ("HYG", 77.4, "B"),
    ("XLF", 41.1, "B"), ("XLE", 92.0, "B"), ("XLK", 211.4, "B"), ("SOXL", 50.1, "B"),
    ("TQQQ", 61.3, "C"), ("SQQQ", 11.1, "C"), ("UVXY", 8.3, "B"), ("GME", 14.1, "A"),
    ("AMC", 4.1, "A"), ("SNAP", 11.3, "A"), ("PINS", 34.5, "A"), ("ROKU", 62.9, "C"),
)  # fmt: skip
IEX: Final = "V"  # the exchange code of every trade on Alpaca's iex feed
OPEN_NS: Final = 1_710_250_200_000_000_000  # 2024-03-12T13:30:00Z, the US open
FIRST_TRADE_ID: Final = 52_983_525_029_481
ROUND_LOTS: Final = (200, 300, 400, 500, 1000)


@dataclass(frozen=True, slots=True)
class Trades:
    """Columns of a seeded run of trades, in time order."""

    symbols: tuple[str, ...]
    tapes: tuple[str, ...]
    index: NDArray[np.int64]
    ts_ns: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ts_ns)


def draw_trades(
    n: int, instruments: int, seed: int, *, rate: float, start_ns: int = OPEN_NS
) -> Trades:
    """Return `n` trades of the first `instruments` listings, `rate` trades per second on average.

    Raise ValueError if more instruments are asked for than the universe holds.
    """
    if not 1 <= instruments <= len(UNIVERSE):
        raise ValueError(f"instruments must be 1 to {len(UNIVERSE)}, not {instruments}")
    rng = np.random.default_rng(seed)
    listings = UNIVERSE[:instruments]
    weights = 1.0 / np.arange(1, instruments + 1) ** 0.8
    index = rng.choice(instruments, size=n, p=weights / weights.sum()).astype(np.int64)
    gaps = rng.exponential(1e9 / rate, size=n).astype(np.int64) + 1
    ts_ns = start_ns + np.cumsum(gaps) - gaps[0]
    steps = rng.normal(0.0, 2e-4, size=n)
    price = np.empty(n, dtype=np.float64)
    for k, (_, reference, _) in enumerate(listings):
        mine = index == k
        price[mine] = reference * np.exp(np.cumsum(steps[mine]))
    price = np.maximum(np.round(price, 2), 0.01)
    u = rng.random(n)
    size = np.where(
        u < 0.45,
        rng.integers(1, 100, size=n),
        np.where(u < 0.85, 100, rng.choice(ROUND_LOTS, size=n)),
    ).astype(np.int64)
    return Trades(
        symbols=tuple(s for s, _, _ in listings),
        tapes=tuple(t for _, _, t in listings),
        index=index,
        ts_ns=ts_ns,
        price=price,
        size=size,
    )


def _rfc3339(ts_ns: NDArray[np.int64]) -> list[str]:
    text = np.datetime_as_string(ts_ns.astype("datetime64[ns]"), unit="ns")
    return [f"{t}Z" for t in text.tolist()]


def alpaca_messages(trades: Trades) -> list[dict[str, Any]]:
    """The trades as Alpaca stream v2 trade messages (`T` "t"), RFC 3339 times."""
    times = _rfc3339(trades.ts_ns)
    ids = FIRST_TRADE_ID + np.cumsum(np.arange(len(trades)) % 7 + 1)
    return [
        {
            "T": "t",
            "S": trades.symbols[k],
            "i": trade_id,
            "x": IEX,
            "p": p,
            "s": s,
            "c": ["@", "I"] if s < 100 else ["@"],
            "z": trades.tapes[k],
            "t": t,
        }
        for k, trade_id, p, s, t in zip(
            trades.index.tolist(),
            ids.tolist(),
            trades.price.tolist(),
            trades.size.tolist(),
            times,
            strict=True,
        )
    ]


def alpaca_frames(trades: Trades, frame_trades: int) -> list[list[dict[str, Any]]]:
    """The trades as Alpaca frames of `frame_trades` consecutive trades each (the last: fewer)."""
    messages = alpaca_messages(trades)
    return [messages[k : k + frame_trades] for k in range(0, len(messages), frame_trades)]


def _windows(trades: Trades, interval_ns: int) -> list[NDArray[np.intp]]:
    """The rows of each `interval_ns` window from the first trade on, empty windows included."""
    slot = (trades.ts_ns - trades.ts_ns[0]) // interval_ns
    bounds = np.searchsorted(slot, np.arange(int(slot[-1]) + 2))
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]


def paced_alpaca_frames(trades: Trades, interval_s: float) -> list[list[dict[str, Any]]]:
    """Frames of the trades of each `interval_s` window, for a fake that sends one frame per
    `interval_s`; a window without trades gets a frame without messages."""
    messages = alpaca_messages(trades)
    return [[messages[i] for i in rows.tolist()] for rows in _windows(trades, round(interval_s * 1e9))]


def paced_finnhub_frames(trades: Trades, interval_s: float) -> list[dict[str, Any]]:
    """The same windows as `paced_alpaca_frames`, as Finnhub trade frames (times in ms)."""
    frames = []
    for rows in _windows(trades, round(interval_s * 1e9)):
        data = [
            {
                "s": trades.symbols[trades.index[i]],
                "p": float(trades.price[i]),
                "t": int(trades.ts_ns[i]) // 1_000_000,
                "v": int(trades.size[i]),
                "c": ["1"],
            }
            for i in rows.tolist()
        ]
        frames.append({"data": data, "type": "trade"})
    return frames
