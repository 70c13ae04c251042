"""Expected bar windows on real NYSE dates (DST, a half day, holidays), 24/7 markets, tier rules."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from numpy.typing import NDArray

from shared.errors import ConfigError
from shared.intervals import DAY_US, parse_interval
from streams.gaps.expected import (
    AssetClass,
    GapSettings,
    Market,
    MissingRule,
    OutsideCalendarError,
    expected_windows,
    is_trading,
    market_of,
    missing_spans,
)

M1, M5, M15, H1, H4, D1 = (parse_interval(n) for n in ("1m", "5m", "15m", "1h", "4h", "1d"))
NASDAQ = market_of("stock", "NASDAQ")
NASDAQ_EXTENDED = market_of("stock", "NASDAQ", extended_hours=True)
CRYPTO = market_of("crypto", "COINBASE")


def utc_us(text: str) -> int:
    """UTC micros of `text` ('2025-03-12 13:30'), as bars stamp their window starts."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def day(market: Market, date: str, interval_us: int = M1) -> NDArray[np.int64]:
    start = utc_us(f"{date} 00:00")
    return expected_windows(market, interval_us, start, start + DAY_US)


def test_market_of_universe_names_resolve_to_calendars() -> None:
    # Arrange, act
    markets = [market_of("stock", x) for x in ("NYSE", "XNAS", "ARCX", "BATS", "IEX", "nyse arca")]

    # Assert
    assert {m.calendar for m in markets} == {"XNYS"}
    assert market_of("Prediction_Market", "") == Market(AssetClass.PREDICTION, None)
    assert CRYPTO == Market(AssetClass.CRYPTO, None)


@pytest.mark.parametrize(
    ("asset_type", "exchange", "extended", "message"),
    [
        ("bond", "NYSE", False, "asset_type 'bond'"),
        ("stock", "MOON", False, "exchange 'MOON' has no calendar"),
        ("stock", "XLON", True, "US exchanges only"),
    ],
)
def test_market_of_unknown_or_unsupported_raises_config_error(
    asset_type: str, exchange: str, extended: bool, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        market_of(asset_type, exchange, extended_hours=extended)


def test_expected_windows_summer_session_390_minutes_from_1330_utc() -> None:
    # Act: Wednesday 2025-03-12, New York on EDT (UTC-4) since Sunday
    windows = day(NASDAQ, "2025-03-12")

    # Assert
    assert windows.size == 390
    assert windows[0] == utc_us("2025-03-12 13:30")
    assert windows[-1] == utc_us("2025-03-12 19:59")
    assert np.all(np.diff(windows) == M1)


def test_expected_windows_across_dst_change_open_moves_an_hour_earlier_in_utc() -> None:
    # Act: Friday on EST (UTC-5), Monday after the switch on EDT (UTC-4)
    friday, monday = day(NASDAQ, "2025-03-07"), day(NASDAQ, "2025-03-10")

    # Assert
    assert (friday.size, monday.size) == (390, 390)
    assert (friday[0], friday[-1]) == (utc_us("2025-03-07 14:30"), utc_us("2025-03-07 20:59"))
    assert (monday[0], monday[-1]) == (utc_us("2025-03-10 13:30"), utc_us("2025-03-10 19:59"))


def test_expected_windows_half_day_after_thanksgiving_closes_1300_new_york() -> None:
    # Act
    windows = day(NASDAQ, "2025-11-28")

    # Assert: 09:30-13:00 EST is 14:30-18:00 UTC
    assert windows.size == 210
    assert (windows[0], windows[-1]) == (utc_us("2025-11-28 14:30"), utc_us("2025-11-28 17:59"))


@pytest.mark.parametrize(
    "date",
    ["2025-12-25", "2025-11-27", "2025-04-18", "2025-01-09", "2025-03-08", "2025-03-09"],
    ids=["christmas", "thanksgiving", "good-friday", "carter-mourning", "saturday", "sunday"],
)
def test_expected_windows_holiday_or_weekend_has_none(date: str) -> None:
    assert day(NASDAQ, date).size == 0
    assert day(NASDAQ, date, D1).size == 0


def test_expected_windows_crypto_and_prediction_every_minute_on_a_dst_sunday() -> None:
    # Act
    crypto = day(CRYPTO, "2025-03-09")
    prediction = day(market_of("prediction", "KALSHI"), "2025-03-09")

    # Assert
    assert crypto.size == prediction.size == 1440
    assert crypto[0] == utc_us("2025-03-09 00:00")
    assert crypto[-1] == utc_us("2025-03-09 23:59")


@pytest.mark.parametrize(
    ("week", "interval_us", "count"),
    [
        ("2025-03-10", M5, 5 * 78),
        ("2025-03-10", H1, 5 * 7),  # 13:00 (open at 13:30) to 19:00
        ("2025-03-10", H4, 5 * 2),  # 12:00 and 16:00 on EDT
        ("2025-01-06", H4, 4 * 3),  # 12:00, 16:00, 20:00 on EST; closed on the 9th (Carter)
        ("2025-03-10", D1, 5),
        ("2025-11-24", D1, 4),  # Thanksgiving week
        ("2025-11-24", M1, 3 * 390 + 210),
    ],
)
def test_expected_windows_week_counts(week: str, interval_us: int, count: int) -> None:
    # Act
    start = utc_us(f"{week} 00:00")
    windows = expected_windows(NASDAQ, interval_us, start, start + 7 * DAY_US)

    # Assert
    assert windows.size == count
    assert np.all(windows % interval_us == 0)


def test_expected_windows_1d_bars_start_at_utc_midnight_of_each_session() -> None:
    # Act
    start = utc_us("2025-11-24 00:00")
    windows = expected_windows(NASDAQ, D1, start, start + 7 * DAY_US)

    # Assert
    dates = ("2025-11-24", "2025-11-25", "2025-11-26", "2025-11-28")
    assert windows.tolist() == [utc_us(f"{d} 00:00") for d in dates]


def test_expected_windows_window_straddling_open_counts_one_ending_at_close_does_not() -> None:
    # Act: 1h windows 12:00-21:00 on 2025-03-12 (session 13:30-20:00 UTC)
    windows = expected_windows(NASDAQ, H1, utc_us("2025-03-12 12:00"), utc_us("2025-03-12 21:00"))

    # Assert
    assert windows[0] == utc_us("2025-03-12 13:00")
    assert windows[-1] == utc_us("2025-03-12 19:00")


def test_expected_windows_unaligned_span_keeps_windows_starting_inside_it() -> None:
    # Act
    windows = expected_windows(
        NASDAQ, M1, utc_us("2025-03-12 13:30") + 30_000_000, utc_us("2025-03-12 13:35")
    )

    # Assert
    assert windows.tolist() == [utc_us(f"2025-03-12 13:{m}") for m in (31, 32, 33, 34)]


def test_expected_windows_extended_hours_0400_to_2000_new_york_1700_on_half_days() -> None:
    # Act
    normal = day(NASDAQ_EXTENDED, "2025-03-12")
    half = day(NASDAQ_EXTENDED, "2025-11-28")

    # Assert
    assert normal.size == 16 * 60
    assert (normal[0], normal[-1]) == (utc_us("2025-03-12 08:00"), utc_us("2025-03-12 23:59"))
    assert half.size == 13 * 60
    assert (half[0], half[-1]) == (utc_us("2025-11-28 09:00"), utc_us("2025-11-28 21:59"))


def test_expected_windows_outside_calendar_or_odd_interval_raises() -> None:
    with pytest.raises(OutsideCalendarError):
        day(NASDAQ, "1999-12-01")
    with pytest.raises(ValueError, match="does not divide a day"):
        day(NASDAQ, "2025-03-12", 7 * M1)


def test_is_trading_at_open_close_and_holiday() -> None:
    assert not is_trading(NASDAQ, utc_us("2025-03-12 13:30") - 1)
    assert is_trading(NASDAQ, utc_us("2025-03-12 13:30"))
    assert is_trading(NASDAQ, utc_us("2025-03-12 20:00") - 1)
    assert not is_trading(NASDAQ, utc_us("2025-03-12 20:00"))
    assert not is_trading(NASDAQ, utc_us("2025-12-25 15:00"))
    assert is_trading(NASDAQ_EXTENDED, utc_us("2025-03-12 08:00"))
    assert is_trading(CRYPTO, utc_us("2025-12-25 15:00"))


def test_gap_settings_rule_silent_minutes_in_whole_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange
    settings = GapSettings()
    monkeypatch.setenv("MS_GAPS_T1_SILENT_MINUTES", "5")

    # Act
    rules = {
        (t, i): settings.rule(t, i).max_silent_windows
        for t in ("T0", "T1", "T2")
        for i in (M1, M5, M15, H1)
    }

    # Assert
    assert [rules["T0", i] for i in (M1, M5, M15, H1)] == [0, 0, 0, 0]
    assert [rules["T1", i] for i in (M1, M5, M15, H1)] == [15, 3, 1, 0]
    assert [rules["T2", i] for i in (M1, M5, M15, H1)] == [60, 12, 4, 1]
    assert GapSettings().rule("T1", M1) == MissingRule(5)


def test_missing_spans_ten_minute_hole_is_a_gap_for_t0_not_for_t1() -> None:
    # Arrange: a T0 feed on 2025-03-12 that drops 14:02-14:12 UTC
    expected = day(NASDAQ, "2025-03-12")
    hole = (expected >= utc_us("2025-03-12 14:02")) & (expected < utc_us("2025-03-12 14:12"))
    seen = expected[~hole][::-1].copy()  # any order

    # Act
    t0 = missing_spans(expected, seen, M1, GapSettings().rule("T0", M1))
    t1 = missing_spans(expected, seen, M1, GapSettings().rule("T1", M1))

    # Assert
    assert t0 == [(utc_us("2025-03-12 14:02"), utc_us("2025-03-12 14:12"))]
    assert t1 == []


def test_missing_spans_sixteen_minute_hole_is_a_gap_for_t1() -> None:
    # Arrange
    expected = day(NASDAQ, "2025-03-12")
    seen = np.delete(expected, np.arange(60, 76))  # 14:30-14:46

    # Act
    spans = missing_spans(expected, seen, M1, GapSettings().rule("T1", M1))

    # Assert
    assert spans == [(utc_us("2025-03-12 14:30"), utc_us("2025-03-12 14:46"))]


def test_missing_spans_sparse_thin_name_is_no_gap_for_t2() -> None:
    # Arrange: a thin name printing every 13 to 49 minutes on 2025-03-12
    expected = day(NASDAQ, "2025-03-12")
    minutes = [0, 22, 61, 110, 155, 203, 250, 288, 331, 375, 389]
    seen = expected[minutes]

    # Act
    t2 = missing_spans(expected, seen, M1, GapSettings().rule("T2", M1))
    t1 = missing_spans(expected, seen, M1, GapSettings().rule("T1", M1))
    t0 = missing_spans(expected, seen, M1, GapSettings().rule("T0", M1))

    # Assert
    assert t2 == []
    assert len(t1) == 9  # every silence but the last one (13 minutes)
    assert t1[0] == (utc_us("2025-03-12 13:31"), utc_us("2025-03-12 13:52"))
    assert len(t0) == 10
    assert sum(end - start for start, end in t0) == (390 - 11) * M1


def test_missing_spans_silence_across_the_close_counts_but_splits_at_the_night() -> None:
    # Arrange: a T1 name silent for the last 10 minutes of one session and the first 10 of the next
    start = utc_us("2025-03-12 00:00")
    expected = expected_windows(NASDAQ, M1, start, start + 2 * DAY_US)
    seen = np.concatenate([expected[:380], expected[400:]])

    # Act
    spans = missing_spans(expected, seen, M1, GapSettings().rule("T1", M1))

    # Assert
    assert spans == [
        (utc_us("2025-03-12 19:50"), utc_us("2025-03-12 20:00")),
        (utc_us("2025-03-13 13:30"), utc_us("2025-03-13 13:40")),
    ]


def test_missing_spans_merges_runs_ignores_unexpected_seen_and_handles_empty() -> None:
    # Arrange: 5m windows; seen has an extended-hours bar the regular session does not expect
    expected = day(NASDAQ, "2025-03-12", M5)
    pre_market = utc_us("2025-03-12 12:00")
    seen = np.concatenate([[pre_market], expected[:10], expected[12:20], expected[23:]])

    # Act
    spans = missing_spans(expected, seen, M5, MissingRule(0))

    # Assert
    assert spans == [
        (utc_us("2025-03-12 14:20"), utc_us("2025-03-12 14:30")),
        (utc_us("2025-03-12 15:10"), utc_us("2025-03-12 15:25")),
    ]
    everything = [(utc_us("2025-03-12 13:30"), utc_us("2025-03-12 20:00"))]
    assert missing_spans(expected, np.empty(0, np.int64), M5, MissingRule(0)) == everything
    assert missing_spans(expected[:0], seen, M5, MissingRule(0)) == []
    with pytest.raises(ValueError, match="negative"):
        MissingRule(-1)
