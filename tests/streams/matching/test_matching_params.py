"""Parameter extraction on listing titles worded the way Kalshi and Polymarket word them."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.matching.params import DateKind, Direction, Quantity, Unit, extract_params

D = dt.date

# title, close date, (date kind, first day, last day), (direction, low, high, unit), entities, quantity
CASES = [
    ("Will the high temp in NYC be >45° on Dec 1, 2024?", D(2024, 12, 1),
     (DateKind.ON, D(2024, 12, 1), D(2024, 12, 1)), (Direction.ABOVE, 45, 45, Unit.DEG),
     {"new_york"}, Quantity.TEMP_HIGH),
    ("Will BTC close above $100k on Dec 31?", D(2024, 12, 31),
     (DateKind.ON, D(2024, 12, 31), D(2024, 12, 31)), (Direction.ABOVE, 100_000, 100_000, Unit.USD),
     {"bitcoin"}, Quantity.PRICE),
    ("Bitcoin above 100,000 by end of year?", D(2024, 12, 31),
     (DateKind.BY, D(2024, 12, 31), D(2024, 12, 31)), (Direction.ABOVE, 100_000, 100_000, Unit.NONE),
     {"bitcoin"}, Quantity.PRICE),
    ("Highest temperature in New York City between 45°F and 46°F on December 1?", D(2024, 12, 2),
     (DateKind.ON, D(2024, 12, 1), D(2024, 12, 1)), (Direction.BETWEEN, 45, 46, Unit.DEG_F),
     {"new_york"}, Quantity.TEMP_HIGH),
    ("Will the Fed cut rates by 25bps in March 2025?", D(2025, 3, 19),
     (DateKind.IN, D(2025, 3, 1), D(2025, 3, 31)), (Direction.BELOW, 0.25, 0.25, Unit.PERCENT),
     {"fed"}, Quantity.RATE),
    ("Fed increases interest rates by 25+ bps after June 2025 meeting?", D(2025, 6, 18),
     (DateKind.ON, D(2025, 6, 1), D(2025, 6, 30)), (Direction.ABOVE, 0.25, 0.25, Unit.PERCENT),
     {"fed"}, Quantity.RATE),
    ("Will Democrats win at least 50 Senate seats in 2026?", D(2026, 11, 10),
     (DateKind.IN, D(2026, 1, 1), D(2026, 12, 31)), (Direction.ABOVE, 50, 50, Unit.NONE),
     {"democrats", "senate"}, Quantity.SEATS),
    ("ETH below $3,500 before Jan 1, 2025?", D(2024, 12, 31),
     (DateKind.BY, D(2024, 12, 31), D(2024, 12, 31)), (Direction.BELOW, 3500, 3500, Unit.USD),
     {"ethereum"}, Quantity.PRICE),
    ("Will GDP growth exceed 2.5% in Q3 2025?", D(2025, 10, 30),
     (DateKind.IN, D(2025, 7, 1), D(2025, 9, 30)), (Direction.ABOVE, 2.5, 2.5, Unit.PERCENT),
     set(), Quantity.GDP),
    ("Will Tesla reach a $1.5T market cap by 6/30/2025?", D(2025, 6, 30),
     (DateKind.BY, D(2025, 6, 30), D(2025, 6, 30)), (Direction.ABOVE, 1.5e12, 1.5e12, Unit.USD),
     {"tesla"}, Quantity.PRICE),
    ("Lowest temperature in Chicago 20°C or lower on 5 January?", D(2025, 1, 6),
     (DateKind.ON, D(2025, 1, 5), D(2025, 1, 5)), (Direction.BELOW, 20, 20, Unit.DEG_C),
     {"chicago"}, Quantity.TEMP_LOW),
    ("Super Bowl Champion 2026: Kansas City Chiefs?", D(2026, 2, 9),
     (DateKind.IN, D(2026, 1, 1), D(2026, 12, 31)), None, {"chiefs", "super_bowl"}, Quantity.WIN),
]  # fmt: skip


@pytest.mark.parametrize(("title", "close", "date", "strike", "entities", "quantity"), CASES)
def test_extract_params_title_finds_each_parameter(
    title: str,
    close: dt.date,
    date: tuple[DateKind, dt.date, dt.date],
    strike: tuple[Direction, float, float, Unit] | None,
    entities: set[str],
    quantity: Quantity,
) -> None:
    # Act
    params = extract_params(title, close_date=close)

    # Assert
    assert params.date is not None
    assert (params.date.kind, params.date.start, params.date.end) == date
    if strike is None:
        assert params.strike is None
    else:
        assert params.strike is not None
        got = (params.strike.direction, params.strike.low, params.strike.high, params.strike.unit)
        assert got == pytest.approx(strike)
    assert params.entity_names == entities
    assert params.quantity is quantity


def test_extract_params_without_a_date_in_the_text_falls_back_to_the_close_date() -> None:
    # Act
    params = extract_params("Will the Lakers win tonight?", close_date=D(2025, 1, 3))

    # Assert
    assert params.date is not None and params.date.from_close_date
    assert params.date.end == D(2025, 1, 3) and params.dates == ()


def test_extract_params_bare_may_is_a_verb_unless_it_follows_a_date_word() -> None:
    # Act
    verb = extract_params("Trump may resign?", close_date=D(2025, 3, 1))
    month = extract_params("Will Trump resign in May?", close_date=D(2025, 3, 1))

    # Assert
    assert verb.dates == ()
    assert month.date is not None and (month.date.start, month.date.end) == (
        D(2025, 5, 1),
        D(2025, 5, 31),
    )


def test_extract_params_announcement_wording_is_flagged_and_canonical_text_uses_names() -> None:
    # Act
    params = extract_params("Will Elon Musk announce a BTC purchase by Dec 31, 2025?")

    # Assert
    assert params.announcement
    assert params.entity_names == {"musk", "bitcoin"}
    assert params.text == "musk announce bitcoin purchase by 2025-12-31"
