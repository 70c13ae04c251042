"""Daily bars with known weekly values, shared by the plain-PostgreSQL and TimescaleDB tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from shared.models import Bar

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DAILY = [
    ("A", date(2023, 12, 31), 10.0, 12.0, 9.0, 11.0, 2.0, 10.5, 4),
    ("A", date(2024, 1, 5), 13.0, 15.0, 12.5, 14.0, 1.0, 14.0, 2),
    ("A", date(2024, 1, 1), 11.0, 13.0, 10.0, 12.0, 4.0, 11.5, 8),
    ("A", date(2024, 1, 7), 14.0, 14.5, 11.0, 13.5, 3.0, 13.0, 6),
    ("A", date(2024, 1, 3), 12.0, 16.0, 11.5, 13.0, 0.5, 14.5, 1),
    ("A", date(2024, 1, 8), 13.5, 14.0, 13.0, 13.75, 2.0, 13.5, 3),
    ("B", date(2024, 1, 2), 100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0),
]


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def day_us(day: date) -> int:
    return micros(datetime(day.year, day.month, day.day, tzinfo=UTC))


def bar(
    instrument: str = "A",
    interval: str = "1m",
    ts_us: int = 0,
    revision: int = 0,
    **values: float,
) -> Bar:
    fields = dict(open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0, vwap=1.25, trade_count=3)
    fields |= values
    return Bar(
        instrument,
        interval,
        ts_us,
        revision,
        buy_volume=0.0,
        sell_volume=0.0,
        source="test",
        ts_event_us=ts_us,
        ts_recv_us=ts_us,
        **fields,  # type: ignore[arg-type]
    )


def daily_bars() -> list[Bar]:
    return [
        bar(i, "1d", day_us(d), open=o, high=h, low=lo, close=c, volume=v, vwap=w, trade_count=n)
        for i, d, o, h, lo, c, v, w, n in DAILY
    ]
