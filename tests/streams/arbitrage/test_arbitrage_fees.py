"""The venues' fee models and the edge arithmetic, on the fee schedules' own examples."""

from __future__ import annotations

import math

import pytest

from shared.models import ArbitrageDirection
from streams.arbitrage.core import (
    Ask,
    Change,
    OpenArbitrage,
    contracts_for,
    edge_after_fees,
    opportunity,
    pair_legs,
    yes_no,
)
from streams.arbitrage.fees import FeeModels, kalshi_fee, polymarket_fee

AT_US = 1_767_225_600_000_000
LEGS = pair_legs("kalshi:K|polymarket:1", "kalshi:K", ("Yes", "No"), "polymarket:1", ("Yes", "No"))


@pytest.mark.parametrize(
    ("contracts", "price", "dollars"),
    [
        (1, 0.50, 0.02),  # 0.0175 rounds up to the next cent
        (100, 0.50, 1.75),  # exactly 175 cents: no extra cent from floating point
        (100, 0.40, 1.68),
        (10, 0.30, 0.15),  # 14.7 cents
        (1, 0.01, 0.01),  # the smallest fee is a cent
        (1, 1.00, 0.00),
    ],
)
def test_kalshi_fee_any_rounds_up_to_the_cent(contracts: int, price: float, dollars: float) -> None:
    assert kalshi_fee(contracts, price) == dollars


def test_kalshi_fee_index_series_rate_is_half() -> None:
    assert kalshi_fee(100, 0.5, rate=0.035) == 0.88  # 87.5 cents


def test_polymarket_fee_default_is_zero_and_a_rate_floors_to_5_decimals() -> None:
    assert polymarket_fee(100, 0.5) == 0.0
    assert polymarket_fee(3, 0.37, rate=0.02) == 0.01398  # 0.013986
    assert FeeModels(polymarket_rate=0.02).fee("polymarket", 3, 0.37) == 0.01398


def test_fee_models_unknown_venue_raises() -> None:
    with pytest.raises(ValueError, match="no fee model"):
        FeeModels().fee("predictit", 1, 0.5)


def test_edge_after_fees_subtracts_prices_and_fees_per_contract() -> None:
    assert math.isclose(edge_after_fees(0.40, 0.52, 100, 1.68, 0.0), 0.0632)


def test_contracts_for_takes_the_smaller_whole_size_or_one() -> None:
    assert contracts_for(100.0, 250.5) == 100
    assert contracts_for(math.nan, 12.9) == 12
    assert contracts_for(math.nan, math.nan) == 1
    assert contracts_for(0.4, 3.0) == 1


def asks(k_yes: float, k_no: float, p_yes: float, p_no: float) -> dict[tuple[str, str, str], Ask]:
    return {
        ("kalshi", "K", "Yes"): Ask(k_yes, 100.0, AT_US),
        ("kalshi", "K", "No"): Ask(k_no, 100.0, AT_US),
        ("polymarket", "1", "Yes"): Ask(p_yes, math.nan, AT_US + 7),
        ("polymarket", "1", "No"): Ask(p_no, math.nan, AT_US + 7),
    }


def test_opportunity_equal_prices_have_no_edge() -> None:
    assert LEGS is not None
    prices = asks(0.5, 0.5, 0.5, 0.5)
    for direction in ArbitrageDirection:
        assert opportunity(LEGS, direction, prices, FeeModels(), 0.0) is None


def test_opportunity_fees_eat_a_raw_edge() -> None:
    assert LEGS is not None
    # 0.47 + 0.52 = 0.99 < 1, but Kalshi takes $1.75 on 100 contracts
    assert opportunity(LEGS, ArbitrageDirection.YES_A_NO_B, asks(0.47, 0.6, 0.6, 0.52),
                       FeeModels(), 0.0) is None  # fmt: skip


def test_opportunity_no_a_yes_b_buys_kalshi_no_and_polymarket_yes() -> None:
    assert LEGS is not None
    found = opportunity(
        LEGS, ArbitrageDirection.NO_A_YES_B, asks(0.7, 0.40, 0.50, 0.6), FeeModels(), 0.01
    )
    assert found is not None
    assert (found.yes_leg.venue, found.no_leg.venue) == ("polymarket", "kalshi")
    assert found.observed_at_us == AT_US + 7 and found.contracts == 100
    assert math.isclose(found.edge, 1 - 0.9 - 0.0168)


def test_opportunity_missing_ask_is_none() -> None:
    assert LEGS is not None
    prices = asks(0.40, math.nan, 0.5, 0.52)
    assert opportunity(LEGS, ArbitrageDirection.NO_A_YES_B, prices, FeeModels(), 0.0) is None


def test_yes_no_named_outcomes_only() -> None:
    assert yes_no(("YES", "no")) == ("YES", "no")
    assert yes_no(("Trump", "Harris")) is None
    assert yes_no(("Yes", "No", "Maybe")) is None
    assert pair_legs("p", "kalshi:K", ("Yes", "No"), "polymarket:1", ("Over", "Under")) is None


def test_pair_legs_inverted_swaps_the_second_listings_outcomes() -> None:
    legs = pair_legs("p", "kalshi:K", ("Yes", "No"), "polymarket:1", ("Yes", "No"), inverted=True)
    assert legs is not None and (legs.b_yes, legs.b_no) == ("No", "Yes")


def test_open_arbitrage_opens_changes_and_closes_once() -> None:
    assert LEGS is not None
    book = OpenArbitrage()
    first = opportunity(
        LEGS, ArbitrageDirection.YES_A_NO_B, asks(0.4, 0.7, 0.7, 0.52), FeeModels(), 0.01
    )
    moved = opportunity(
        LEGS, ArbitrageDirection.YES_A_NO_B, asks(0.41, 0.7, 0.7, 0.52), FeeModels(), 0.01
    )
    assert first is not None and moved is not None

    opened = book.judge("k", first, AT_US, AT_US)
    same = book.judge("k", first, AT_US, AT_US)
    changed = book.judge("k", moved, AT_US, AT_US)
    closed = book.judge("k", None, AT_US + 7 + 2_500_000, AT_US)
    again = book.judge("k", None, AT_US + 3_000_000, AT_US)

    assert opened is not None and opened[0] is Change.OPENED
    assert same is None and again is None
    assert changed is not None and changed[0] is Change.CHANGED
    assert closed is not None and closed[0] is Change.CLOSED and closed[1].lifetime_s == 2.5
