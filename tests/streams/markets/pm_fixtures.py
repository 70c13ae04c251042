"""Listings and prices of both venues as their connectors publish them, for the agents' tests."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import psycopg

from shared.codec import Codec
from shared.models import Listing, ListingStatus, PmPrice, PmPriceBatch
from shared.publisher import Publisher
from shared.topics import LISTINGS, PM_PRICES

RECEIVED_US = time.time_ns() // 1000


def close_us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


def kalshi(
    ticker: str, title: str, close: str, rules: str = "", at_us: int = RECEIVED_US
) -> Listing:
    return Listing(
        venue="kalshi", market_id=ticker, event_id=ticker.rsplit("-", 1)[0], title=title,
        subtitle="", rules=rules, category="Crypto", close_time_us=close_us(close),
        outcomes=("Yes", "No"), status=ListingStatus.OPEN, venue_status="active",
        url=f"https://kalshi.com/markets/{ticker.split('-')[0].lower()}",
        ts_event_us=at_us, ts_recv_us=at_us,
    )  # fmt: skip


def polymarket(market_id: str, title: str, close: str, outcomes: tuple[str, ...] = ("Yes", "No"),
               at_us: int = RECEIVED_US) -> Listing:  # fmt: skip
    return Listing(
        venue="polymarket", market_id=market_id, event_id=f"0x{int(market_id):064x}", title=title,
        subtitle="", rules="Resolves by the Binance BTC/USDT close.", category="Crypto",
        close_time_us=close_us(close), outcomes=outcomes, status=ListingStatus.OPEN,
        venue_status="active", url=f"https://polymarket.com/market/m-{market_id}",
        ts_event_us=at_us, ts_recv_us=at_us,
    )  # fmt: skip


BTC_K = kalshi("KXBTCD-26DEC31-T100000", "Will BTC close above $100k on Dec 31, 2026?",
               "2026-12-31T21:00:00")  # fmt: skip
TEMP_K = kalshi("KXHIGHNY-26DEC01-T45", "Will the high temp in NYC be >45° on Dec 1 2026?",
                "2026-12-01T23:00:00")  # fmt: skip
BTC_P = polymarket("516710", "Bitcoin above 100,000 on December 31, 2026?", "2027-01-01T00:00:00")
BTC_105_P = polymarket("516711", "Bitcoin above 105,000 on December 31, 2026?",
                       "2027-01-01T00:00:00")  # fmt: skip
TEMP_P = polymarket("516712", "NYC weather: warmer than 45°F on December 1?", "2026-12-02T05:00:00")

BTC_PAIR = f"{BTC_K.key}|{BTC_P.key}"
TEMP_PAIR = f"{TEMP_K.key}|{TEMP_P.key}"


def publish_listings(publisher: Publisher, codec: Codec, *listings: Listing) -> None:
    for listing in listings:
        publisher.produce(LISTINGS, codec.encode_listing(listing), key=listing.key.encode())
    publisher.flush()


def publish_prices(
    publisher: Publisher, codec: Codec, venue: str, market_id: str,
    asks: dict[str, tuple[float, float]], at_us: int,
) -> None:  # fmt: skip
    """One market's asks, {outcome: (price, size)} (NaN size: unknown), bids a cent below."""
    rows = [
        PmPrice(market_id, outcome, price - 0.01, size, price, size, at_us, at_us + 1_500)
        for outcome, (price, size) in asks.items()
    ]
    batch = PmPriceBatch.from_rows(venue, rows)
    publisher.produce(
        PM_PRICES, codec.encode_pm_price_batch(batch), key=f"{venue}:{market_id}".encode()
    )
    publisher.flush()


def pairs(url: str) -> dict[str, tuple[object, ...]]:
    """a|b -> (id, decision, auto_decision, decided_by, score, evidence)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select a_key || '|' || b_key, id, decision, auto_decision, decided_by, score, evidence"
            " from market_matches"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


NAN = math.nan
