"""The gaps scenario at a tiny size, as `python -m benchmarks gaps` runs it, and its pure parts:
the timeline, the merged tapes and the reference fold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.gaps_fake import trades_between
from benchmarks.gaps_feed import HOUR_US, INTERVALS, MINUTE_US, Timeline, Trades, reference

ROOT = Path(__file__).resolve().parents[2]
NOW_US = 1_764_605_000 * 1_000_000  # 2025-12-01 16:03:20 UTC
TINY = ["--instruments", "3", "--density", "1", "--timeout-s", "60", "--log-level", "WARNING"]


def test_timeline_plan_outage_ends_mid_hour_and_span_is_whole_hours() -> None:
    # Act
    short, long = Timeline.plan(NOW_US, 1), Timeline.plan(NOW_US, 60)

    # Assert: the outage ends at :30 of an hour that ended at least 5 minutes ago
    assert short.outage_end_us == long.outage_end_us
    assert short.outage_end_us % HOUR_US == 30 * MINUTE_US
    assert NOW_US - 5 * MINUTE_US >= long.span_end_us
    assert (short.span_end_us - short.span_start_us, long.span_end_us - long.span_start_us) == (
        HOUR_US,
        2 * HOUR_US,
    )
    assert long.feed_start_us < long.span_start_us
    assert NOW_US - long.sweep_hours(NOW_US) * HOUR_US > long.feed_start_us


def test_trades_between_density_merges_tapes_in_time_order_within_the_range() -> None:
    # Arrange
    start, end = NOW_US - HOUR_US, NOW_US

    # Act
    one = trades_between("G000/USD", start, end, density=1)
    three = trades_between("G000/USD", start, end, density=3)

    # Assert
    ts = three.ts_ns // 1000
    assert len(three) > 2 * len(one) > 0
    assert bool(np.all(np.diff(three.ts_ns) >= 0))
    assert ts.min() >= start and ts.max() < end


def test_reference_matches_a_fold_one_trade_at_a_time() -> None:
    # Arrange
    trades = Trades.load("G001/USD", NOW_US - HOUR_US, NOW_US, density=2)
    bars: dict[tuple[str, int], list[float]] = {}
    for ts, price, size in zip(
        trades.ts_us.tolist(), trades.price.tolist(), trades.size.tolist(), strict=True
    ):
        for name, length in INTERVALS.items():
            bar = bars.setdefault((name, ts - ts % length), [price, price, price, 0, 0.0, 0])
            bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
            bar[4] += size
            bar[5] += 1

    # Act
    folded = reference(trades, NOW_US - HOUR_US, NOW_US)

    # Assert
    assert set(folded) == set(bars)
    for key, (o, h, low, c, v, n) in folded.items():
        assert (o, h, low, c, n) == (
            bars[key][0],
            bars[key][1],
            bars[key][2],
            bars[key][3],
            bars[key][5],
        )
        assert abs(v - bars[key][4]) < 1e-9 * max(1.0, v)


def test_gaps_scenario_tiny_repairs_every_bar_of_ours(tmp_path: Path) -> None:
    """Our path end to end. The naive peer's path (a stack of its own: 15 s more of the suite)
    runs with `make bench`, `python -m benchmarks gaps`."""
    # Act
    out = tmp_path / "gaps.json"
    command = [sys.executable, "-m", "benchmarks", "gaps", *TINY, "--paths", "ours_1m"]
    done = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=115
    )

    # Assert: every instrument's gap found, every bar of the span equal; ours drained its jobs
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(out.read_text())
    (path,) = data["paths"].values()
    details = path["details"]
    assert not details["timed_out"]
    assert details["gaps"]["instruments_with_a_gap"] == 3
    assert details["comparison"]["equal"] == details["comparison"]["expected"] == path["items"]
    assert details["requests"]["status_429"] == 0
    assert details["jobs"]["total"] == details["jobs"]["done"] == 3
    assert details["requests_if_1d"]["1h"] == path["messages"] == 3
    assert set(data["targets"]["ours_1m"]) == {
        "drained_under_10x_outage",
        "t0_oldest_job_under_15_min",
        "slo_gap_violation_rate_after_repair",
    }
