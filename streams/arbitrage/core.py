"""Arbitrage on a matched pair, from the latest asks: pure, no Kafka or database.

Buying YES on one listing and NO on the other pays exactly 1 whichever way the question
resolves, so the pair is an arbitrage when the two asks and both taker fees cost less than 1.
Which outcome is YES comes from the listings' outcome names: only a binary listing whose two
outcomes are named Yes and No (any case) is used, and a pair a person marked `inverted` has the
second listing's Yes and No swapped. A Polymarket market whose outcomes are named otherwise
("Trump"/"Harris", "Over"/"Under") cannot be mapped to the Kalshi question from the text alone,
so its pairs are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from shared.models import Arbitrage, ArbitrageDirection, ArbitrageLeg
from streams.arbitrage.fees import FeeModels

OutcomeKey = tuple[str, str, str]  # venue, market_id, outcome


@dataclass(frozen=True, slots=True)
class Ask:
    """An outcome's best ask: price (a probability; NaN: none), size (NaN: unknown), time."""

    price: float
    size: float
    ts_event_us: int


@dataclass(frozen=True, slots=True)
class PairLegs:
    """A matched pair with each listing's YES and NO outcome named."""

    pair: str
    a_venue: str
    a_market: str
    a_yes: str
    a_no: str
    b_venue: str
    b_market: str
    b_yes: str
    b_no: str

    def sides(self, direction: ArbitrageDirection) -> tuple[OutcomeKey, OutcomeKey]:
        """(the YES outcome bought, the NO outcome bought) for `direction`."""
        if direction is ArbitrageDirection.YES_A_NO_B:
            return (self.a_venue, self.a_market, self.a_yes), (
                self.b_venue,
                self.b_market,
                self.b_no,
            )
        return (self.b_venue, self.b_market, self.b_yes), (self.a_venue, self.a_market, self.a_no)


def yes_no(outcomes: tuple[str, ...]) -> tuple[str, str] | None:
    """The (YES, NO) outcome names of a binary listing named Yes/No; None for any other."""
    if len(outcomes) != 2:
        return None
    named = {o.strip().casefold(): o for o in outcomes}
    if set(named) != {"yes", "no"}:
        return None
    return named["yes"], named["no"]


def pair_legs(
    pair: str,
    a_key: str,
    a_outcomes: tuple[str, ...],
    b_key: str,
    b_outcomes: tuple[str, ...],
    *,
    inverted: bool = False,
) -> PairLegs | None:
    """The legs of a matched pair, or None if either listing's outcomes are not Yes/No."""
    a, b = yes_no(a_outcomes), yes_no(b_outcomes)
    if a is None or b is None:
        return None
    b_yes, b_no = (b[1], b[0]) if inverted else b
    a_venue, _, a_market = a_key.partition(":")
    b_venue, _, b_market = b_key.partition(":")
    return PairLegs(pair, a_venue, a_market, a[0], a[1], b_venue, b_market, b_yes, b_no)


def contracts_for(yes_size: float, no_size: float) -> float:
    """The contracts an opportunity is reckoned for: the smaller size offered in whole
    contracts, at least 1; 1 where neither size is known."""
    known = [s for s in (yes_size, no_size) if math.isfinite(s)]
    return float(max(1, math.floor(min(known)))) if known else 1.0


def edge_after_fees(
    yes_price: float, no_price: float, contracts: float, yes_fee: float, no_fee: float
) -> float:
    """What one YES and one NO contract earn after fees: 1 - prices - fees per contract."""
    return 1.0 - yes_price - no_price - (yes_fee + no_fee) / contracts


def _tradable(ask: Ask | None) -> bool:
    return ask is not None and math.isfinite(ask.price) and 0.0 < ask.price < 1.0


def opportunity(
    legs: PairLegs,
    direction: ArbitrageDirection,
    asks: Mapping[OutcomeKey, Ask],
    fees: FeeModels,
    min_edge: float,
) -> Arbitrage | None:
    """The arbitrage of `direction` on the pair now (opened and received at its observation
    time; the caller keeps the first opening), or None if it has no edge above `min_edge`."""
    yes_key, no_key = legs.sides(direction)
    yes, no = asks.get(yes_key), asks.get(no_key)
    if not _tradable(yes) or not _tradable(no):
        return None
    assert yes is not None and no is not None
    contracts = contracts_for(yes.size, no.size)
    yes_fee = fees.fee(yes_key[0], contracts, yes.price)
    no_fee = fees.fee(no_key[0], contracts, no.price)
    edge = edge_after_fees(yes.price, no.price, contracts, yes_fee, no_fee)
    if not edge > min_edge:
        return None
    observed = max(yes.ts_event_us, no.ts_event_us)
    return Arbitrage(
        pair=legs.pair,
        direction=direction,
        yes_leg=_leg(yes_key, yes, yes_fee),
        no_leg=_leg(no_key, no, no_fee),
        contracts=contracts,
        cost=1.0 - edge,
        edge=edge,
        opened_at_us=observed,
        closed_at_us=None,
        observed_at_us=observed,
        ts_recv_us=observed,
    )


def _leg(key: OutcomeKey, ask: Ask, fee: float) -> ArbitrageLeg:
    size = ask.size if math.isfinite(ask.size) else None
    return ArbitrageLeg(
        venue=key[0], market_id=key[1], outcome=key[2], price=ask.price, size=size, fee=fee
    )


class Change(StrEnum):
    OPENED = "opened"
    CHANGED = "changed"
    CLOSED = "closed"


def _same_terms(a: Arbitrage, b: Arbitrage) -> bool:
    return (a.yes_leg, a.no_leg, a.contracts) == (b.yes_leg, b.no_leg, b.contracts)


class OpenArbitrage:
    """The arbitrage open now, by key (`pair|direction`); `judge` says what changed."""

    def __init__(self) -> None:
        self.open: dict[str, Arbitrage] = {}

    def judge(
        self, key: str, now: Arbitrage | None, at_us: int, recv_us: int
    ) -> tuple[Change, Arbitrage] | None:
        """Fold the latest view of one pair and direction: opened, changed (other prices or
        sizes), closed (at `at_us`) or nothing."""
        held = self.open.get(key)
        if now is None:
            if held is None:
                return None
            closed = replace(held, closed_at_us=max(at_us, held.opened_at_us), ts_recv_us=recv_us)
            del self.open[key]
            return Change.CLOSED, closed
        if held is None:
            opened = replace(now, ts_recv_us=recv_us)
            self.open[key] = opened
            return Change.OPENED, opened
        if _same_terms(held, now):
            return None
        changed = replace(now, opened_at_us=held.opened_at_us, ts_recv_us=recv_us)
        self.open[key] = changed
        return Change.CHANGED, changed
