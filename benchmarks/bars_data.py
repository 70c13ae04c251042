"""The seeded trades every path of the bars scenario shares, and the bars they imply."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final

import numpy as np

from benchmarks.produce import first_trades
from connectors.event_clock import END_OF_STREAM_ADVANCE_US
from connectors.simulator import SimulatorConfig, SimulatorConnector
from shared.intervals import DAY_US
from shared.models import TradeBatch

START_US: Final[int] = SimulatorConfig.model_fields["start_us"].default


def _simulator(
    args: argparse.Namespace, *, seed: int, start_us: int, rate: float, count: int
) -> SimulatorConnector:
    config = {
        "instruments": args.instruments,
        "clock": "simulated",
        "rate": rate,
        "count": count,
        "seed": seed,
        "start_us": start_us,
    }
    return SimulatorConnector(SimulatorConfig.model_validate(config))


def generate(args: argparse.Namespace, n: int) -> list[TradeBatch]:
    """Return the first `n` trades of the seeded run every path shares (not timed).

    The run is `max(--trades, --peer-trades)` trades long whoever asks, so that a shorter
    prefix holds exactly the same trades.
    """
    count = max(args.trades, args.peer_trades)
    simulator = _simulator(
        args, seed=args.seed, start_us=START_US, rate=args.event_rate, count=count
    )
    return first_trades(simulator, n)


def latency_start_us(args: argparse.Namespace) -> int:
    """Return where the latency feed starts: a day boundary past the end-of-stream markers."""
    span_us = int(max(args.trades, args.peer_trades) / args.event_rate * 1e6)
    return START_US + ((span_us + END_OF_STREAM_ADVANCE_US) // DAY_US + 1) * DAY_US


def latency_ticks(args: argparse.Namespace) -> list[TradeBatch]:
    """Return the latency feed, one chunk per tick, the same for every path (not timed)."""
    tick_s = args.latency_tick_ms / 1000
    per_tick = max(1, round(args.latency_rate * tick_s))
    event_tick_s = tick_s * args.latency_speedup
    start_us = latency_start_us(args)
    simulator = _simulator(
        args, seed=args.seed + 1, start_us=start_us, rate=per_tick / event_tick_s, count=0
    )
    return [
        simulator.chunk(per_tick, start_us / 1e6 + i * event_tick_s, event_tick_s)
        for i in range(round(args.latency_seconds / tick_s))
    ]


def expected_bars(
    chunks: Sequence[TradeBatch], intervals: Sequence[tuple[str, int]]
) -> dict[str, int]:
    """Count the windows that hold trades, per interval: one first emission each."""
    symbols = len(chunks[0].instruments)
    index = np.concatenate([c.instrument_index for c in chunks]).astype(np.int64)
    ts = np.concatenate([c.ts_event_us for c in chunks])
    return {name: len(np.unique((ts // length) * symbols + index)) for name, length in intervals}
