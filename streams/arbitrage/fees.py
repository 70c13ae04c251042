"""The venues' taker fees for buying prediction-market contracts, in dollars: pure arithmetic.

- Kalshi (fee schedule, https://kalshi.com/docs/kalshi-fee-schedule.pdf): a taker's trading fee
  is `ceil(0.07 x C x P x (1 - P))`, rounded up to the next cent, for C contracts at price P
  dollars; some series (the S&P 500 and Nasdaq-100 ones) use 0.035, hence the rate parameter.
- Polymarket (https://docs.polymarket.com/trading/fees): no fee on most markets; where a market
  charges one, a taker pays `C x rate x P x (1 - P)`, rounded down to 5 decimals (USDC). The
  rate is a parameter, 0 by default.

Makers pay nothing on either venue; arbitrage takes liquidity, so these are the fees it pays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

KALSHI: Final = "kalshi"
POLYMARKET: Final = "polymarket"
KALSHI_TAKER_RATE: Final = 0.07
POLYMARKET_TAKER_RATE: Final = 0.0
_EPSILON: Final = 1e-9  # 0.07 x 100 x 0.25 is 1.7500000000000002 in floating point


def kalshi_fee(contracts: float, price: float, rate: float = KALSHI_TAKER_RATE) -> float:
    """Kalshi's taker fee for `contracts` at `price` (a probability), in dollars, up to a cent."""
    cents = rate * contracts * price * (1 - price) * 100
    return math.ceil(cents - _EPSILON) / 100


def polymarket_fee(contracts: float, price: float, rate: float = POLYMARKET_TAKER_RATE) -> float:
    """Polymarket's taker fee for `contracts` at `price`, in dollars, down to 5 decimals."""
    fee = contracts * rate * price * (1 - price)
    return math.floor(fee * 1e5 + _EPSILON) / 1e5


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeModels:
    """Each venue's taker rate; `fee` prices a purchase on either venue."""

    kalshi_rate: float = KALSHI_TAKER_RATE
    polymarket_rate: float = POLYMARKET_TAKER_RATE

    def fee(self, venue: str, contracts: float, price: float) -> float:
        """The taker fee in dollars; raise ValueError for a venue without a fee model."""
        if venue == KALSHI:
            return kalshi_fee(contracts, price, self.kalshi_rate)
        if venue == POLYMARKET:
            return polymarket_fee(contracts, price, self.polymarket_rate)
        raise ValueError(f"no fee model for venue {venue!r}")
