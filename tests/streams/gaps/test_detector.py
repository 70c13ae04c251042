"""The gap detector's core: the hole a bar reveals after silence, judged by market and tier."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from streams.gaps.detector import GapDetector, Hole, Profile
from streams.gaps.expected import AssetClass, GapSettings, Market, market_of

MINUTE_US = 60_000_000
NYSE = market_of("stock", "NASDAQ")
CRYPTO = Market(AssetClass.CRYPTO, None)


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


def detector(profiles: dict[str, Profile]) -> GapDetector:
    return GapDetector({"1m": MINUTE_US}, GapSettings(), profiles.get)


def test_t0_hole_in_session_is_found_once_between_the_bars_around_it() -> None:
    gaps = detector({"AAPL": Profile(NYSE, "T0")})
    for minute in range(0, 11):  # 2025-03-12 14:30..14:40 UTC, in session (EDT)
        assert (
            gaps.observe("AAPL", "1m", at("2025-03-12T14:30") + minute * MINUTE_US, "alpaca") == []
        )

    holes = gaps.observe("AAPL", "1m", at("2025-03-12T14:51"), "alpaca")

    assert holes == [
        Hole(
            "AAPL",
            "1m",
            at("2025-03-12T14:41"),
            at("2025-03-12T14:51"),
            "T0",
            "alpaca",
            at("2025-03-12T14:40"),
            at("2025-03-12T14:51"),
        )
    ]
    assert gaps.observe("AAPL", "1m", at("2025-03-12T14:45"), "alpaca") == []  # a late bar
    assert gaps.observe("AAPL", "1m", at("2025-03-12T14:51"), "alpaca") == []  # a revision


def test_thin_names_weekends_and_unknown_instruments_raise_nothing() -> None:
    gaps = detector({"THIN": Profile(NYSE, "T1"), "AAPL": Profile(NYSE, "T0")})
    gaps.observe("THIN", "1m", at("2025-03-12T14:30"), "alpaca")
    assert gaps.observe("THIN", "1m", at("2025-03-12T14:41"), "alpaca") == []  # 10 of 15 min
    assert len(gaps.observe("THIN", "1m", at("2025-03-12T15:00"), "alpaca")) == 1  # 18 silent

    gaps.observe("AAPL", "1m", at("2025-03-14T19:59"), "alpaca")  # Friday's last minute
    assert gaps.observe("AAPL", "1m", at("2025-03-17T13:30"), "alpaca") == []  # Monday's first

    gaps.observe("SIM0001", "1m", at("2025-03-12T14:30"), "simulator")
    assert gaps.observe("SIM0001", "1m", at("2025-03-12T18:30"), "simulator") == []
    assert gaps.observe("AAPL", "5m", at("2025-03-17T18:30"), "alpaca") == []  # not watched


def test_first_bar_after_a_restart_is_judged_against_the_database() -> None:
    gaps = detector({"BTC-USD": Profile(CRYPTO, "T0")})
    key = ("BTC-USD", "1m")
    assert gaps.unknown([key]) == [key]

    gaps.learn({key: at("2025-03-15T23:50")})  # Saturday night: crypto trades 24/7
    holes = gaps.observe("BTC-USD", "1m", at("2025-03-16T00:10"), "alpaca")

    assert [(h.start_us, h.end_us) for h in holes] == [
        (at("2025-03-15T23:51"), at("2025-03-16T00:10"))
    ]
    assert gaps.unknown([key]) == []


def test_a_month_of_silence_is_judged_over_the_lookback_only() -> None:
    gaps = detector({"BTC-USD": Profile(CRYPTO, "T0")})
    gaps.learn({("BTC-USD", "1m"): at("2025-02-01T00:00")})

    (hole,) = gaps.observe("BTC-USD", "1m", at("2025-03-16T00:00"), "alpaca")

    assert (hole.start_us, hole.end_us) == (at("2025-03-13T00:00"), at("2025-03-16T00:00"))


def test_sweep_finds_holes_and_counts_windows_against_the_continuity_slo() -> None:
    from streams.gaps.sweep import sweep

    start, end = at("2025-03-12T13:30"), at("2025-03-12T20:00")  # the whole session: 390
    minutes = np.arange(start, end, MINUTE_US, dtype=np.int64)
    deleted = (minutes >= at("2025-03-12T15:00")) & (minutes < at("2025-03-12T15:10"))
    blip = minutes == at("2025-03-12T16:00")  # one quiet minute: a gap for T0, not an outage
    seen = minutes[~deleted & ~blip]

    swept = sweep(Profile(NYSE, "T0"), MINUTE_US, seen, start, end, GapSettings())

    assert swept.spans == [
        (at("2025-03-12T15:00"), at("2025-03-12T15:10")),
        (at("2025-03-12T16:00"), at("2025-03-12T16:01")),
    ]
    assert (swept.expected, swept.seen, swept.violating) == (390, 379, 10)
    thin = sweep(Profile(NYSE, "T1"), MINUTE_US, seen, start, end, GapSettings())
    assert thin.spans == [] and thin.violating == 10


def test_windows_a_halt_overlaps_are_excused_and_the_rest_stays_a_gap() -> None:
    from streams.gaps.detector import excuse_halts

    start, end = at("2025-03-12T15:31"), at("2025-03-12T15:45")
    halt = (at("2025-03-12T15:33"), at("2025-03-12T15:40"))

    assert excuse_halts(start, end, MINUTE_US, [halt]) == [
        (at("2025-03-12T15:31"), at("2025-03-12T15:33")),
        (at("2025-03-12T15:40"), at("2025-03-12T15:45")),
    ]
    assert excuse_halts(start, end, MINUTE_US, [(at("2025-03-12T15:20:10"), None)]) == []
