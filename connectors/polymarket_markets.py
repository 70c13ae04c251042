"""Polymarket's Gamma and CLOB market data to domain values: pure parsing, no HTTP here.

Gamma (`https://gamma-api.polymarket.com`): `GET /markets?limit=N&offset=K&active=true&
closed=false` answers a JSON list of markets, a page ending the listing when it is shorter
than the limit. A market has `id` (a decimal string), `question`, `conditionId`, `slug`,
`description` (the resolution rules), `endDate` (ISO 8601), `category`, `active`, `closed`,
`updatedAt`, `bestBid` and `bestAsk` (of the first outcome, as numbers in [0, 1]), and three
lists that are JSON-encoded strings: `outcomes` ('["Yes", "No"]'), `outcomePrices`
('["0.55", "0.45"]') and `clobTokenIds` (one CLOB token id per outcome, in the same order).
`GET /markets/{id}` answers one market object. The CLOB (`https://clob.polymarket.com`):
`GET /book?token_id=T` answers `{"market", "asset_id", "timestamp" (ms), "hash", "bids":
[{"price": "0.48", "size": "120.5"}], "asks": [...]}`, and `POST /books` with `[{"token_id":
T}, ...]` (at most 500) a list of those; no side is sorted best first for certain, so the best
bid is the highest and the best ask the lowest. Public, no key. Documented at
https://docs.polymarket.com/market-data/prices-order-books and
https://docs.polymarket.com/api-reference/rate-limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

from connectors.base import Rejected
from connectors.pm_parsing import (
    BadInput,
    Page,
    iso_us,
    json_body,
    optional_str,
    rejected_entry,
    required_str,
)
from shared.models import Listing, ListingStatus, PmPrice

VENUE: Final = "polymarket"
GAMMA_URL: Final = "https://gamma-api.polymarket.com"
CLOB_URL: Final = "https://clob.polymarket.com"
BOOKS_MAX: Final = 500  # token ids per POST /books


def _json_list(market: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A field holding a JSON-encoded list of strings (Gamma's `outcomes`, `clobTokenIds`)."""
    raw = market.get(name)
    if raw is None:
        raise BadInput("missing_field", f"no {name}")
    value = raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadInput("bad_outcomes", f"{name} is {raw!r}, not a JSON list") from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput("bad_outcomes", f"{name} is {raw!r}, not a JSON list of strings")
    return tuple(value)


def _flag(market: Mapping[str, Any], name: str) -> bool:
    value = market.get(name, False)
    if not isinstance(value, bool):
        raise BadInput("bad_type", f"{name} is {value!r}, not a boolean")
    return value


def _probability(market: Mapping[str, Any], name: str) -> float:
    value = market.get(name)
    if value is None or value == "":
        return math.nan
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise BadInput("bad_price", f"{name} is {value!r}") from None
    if not 0 <= p <= 1:
        raise BadInput("bad_price", f"{name} is {p!r}, outside [0, 1]")
    return p


def _id(market: Mapping[str, Any]) -> str:
    value = market.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return required_str(market, "id")


def parse_market(market: Any, ts_recv_us: int) -> tuple[Listing, tuple[str, ...], list[PmPrice]]:
    """One Gamma market to its Listing, its outcome token ids (empty if it has none) and the
    price rows of its Gamma best bid and ask (a binary market's two outcomes, the second as
    the first's complement; sizes unknown); raise BadInput."""
    if not isinstance(market, dict):
        raise BadInput("bad_shape", f"a market is {type(market).__name__}, not an object")
    market_id = _id(market)
    outcomes = _json_list(market, "outcomes")
    tokens = _json_list(market, "clobTokenIds") if market.get("clobTokenIds") else ()
    if tokens and len(tokens) != len(outcomes):
        raise BadInput("bad_outcomes", f"{len(tokens)} clobTokenIds for {len(outcomes)} outcomes")
    active, closed = _flag(market, "active"), _flag(market, "closed")
    if closed:
        settled = market.get("umaResolutionStatus") == "resolved"
        status, word = (ListingStatus.SETTLED if settled else ListingStatus.CLOSED), "closed"
    else:
        status = ListingStatus.OPEN if active else ListingStatus.PAUSED
        word = "active" if active else "inactive"
    slug = optional_str(market, "slug")
    updated_us = iso_us(market, "updatedAt")
    listing = Listing(
        venue=VENUE,
        market_id=market_id,
        event_id=optional_str(market, "conditionId"),
        title=required_str(market, "question"),
        subtitle="",
        rules=optional_str(market, "description") or "",
        category=optional_str(market, "category") or "",
        close_time_us=iso_us(market, "endDate"),
        outcomes=outcomes,
        status=status,
        venue_status=word,
        url=f"https://polymarket.com/market/{slug}" if slug else None,
        ts_event_us=updated_us if updated_us is not None else ts_recv_us,
        ts_recv_us=ts_recv_us,
    )
    prices: list[PmPrice] = []
    if len(outcomes) == 2:
        bid, ask = _probability(market, "bestBid"), _probability(market, "bestAsk")
        nan = math.nan
        prices = [
            PmPrice(market_id, outcomes[0], bid, nan, ask, nan, ts_recv_us, ts_recv_us),
            PmPrice(market_id, outcomes[1], 1 - ask, nan, 1 - bid, nan, ts_recv_us, ts_recv_us),
        ]
    return listing, tokens, prices


def parse_markets_page(body: bytes, content_type: str, ts_recv_us: int) -> Page:
    """A Gamma `GET /markets` answer: each market's Listing, tokens and prices, or its
    Rejected. A body that is not a JSON list is one Rejected and an incomplete page."""
    page = Page()
    try:
        doc = json_body(body, content_type)
        if not isinstance(doc, list):
            raise BadInput("bad_shape", f"a markets page is {type(doc).__name__}, not a list")
    except BadInput as exc:
        page.items.append(exc.rejected(body))
        page.complete = False
        return page
    page.entries = len(doc)
    for market in doc:
        if isinstance(market, dict) and isinstance(market.get("id"), str | int):
            page.seen.add(str(market["id"]))
        try:
            listing, tokens, prices = parse_market(market, ts_recv_us)
        except BadInput as exc:
            page.items.append(rejected_entry(exc, market))
            continue
        page.items.append(listing)
        page.prices.extend(prices)
        if tokens:
            page.tokens[listing.market_id] = tokens
    return page


def parse_market_body(body: bytes, content_type: str, ts_recv_us: int) -> Listing | Rejected:
    """A Gamma `GET /markets/{id}` answer (one market object) to its Listing."""
    try:
        listing, _, _ = parse_market(json_body(body, content_type), ts_recv_us)
    except BadInput as exc:
        return exc.rejected(body)
    return listing


def _best(levels: Any, side: str, highest: bool) -> tuple[float, float]:
    """The best (price, size) of a side's [{"price", "size"}] levels; (NaN, 0) if empty."""
    if not isinstance(levels, list):
        raise BadInput("bad_shape", f"{side} is not a list")
    best = (math.nan, 0.0)
    for level in levels:
        try:
            price, size = float(level["price"]), float(level["size"])
        except (TypeError, KeyError, ValueError):
            raise BadInput("bad_price", f"a {side} level is {level!r}") from None
        if not 0 <= price <= 1:
            raise BadInput("bad_price", f"a {side} price is {price!r}, outside [0, 1]")
        if math.isnan(best[0]) or (price > best[0] if highest else price < best[0]):
            best = (price, size)
    return best


def parse_books(
    body: bytes, content_type: str, outcome_of: Mapping[str, tuple[str, str]], ts_recv_us: int
) -> tuple[list[PmPrice], list[Rejected]]:
    """A CLOB `POST /books` answer (or one `GET /book`) to a price row per book, by the
    (market id, outcome) `outcome_of` gives its token; books of unknown tokens are Rejected."""
    try:
        doc = json_body(body, content_type)
    except BadInput as exc:
        return [], [exc.rejected(body)]
    books = doc if isinstance(doc, list) else [doc]
    rows: list[PmPrice] = []
    rejected: list[Rejected] = []
    for book in books:
        try:
            if not isinstance(book, dict):
                raise BadInput("bad_shape", "a book is not an object")
            token = required_str(book, "asset_id")
            if token not in outcome_of:
                raise BadInput("unknown_token", f"a book of token {token[:20]}..., not asked for")
            stamp = book.get("timestamp")
            try:
                ts_event_us = int(stamp) * 1000 if stamp is not None else ts_recv_us
            except (TypeError, ValueError):
                raise BadInput("bad_time", f"timestamp is {stamp!r}, not milliseconds") from None
            bid, bid_size = _best(book.get("bids", []), "bids", highest=True)
            ask, ask_size = _best(book.get("asks", []), "asks", highest=False)
        except BadInput as exc:
            rejected.append(rejected_entry(exc, book))
            continue
        market_id, outcome = outcome_of[token]
        rows.append(
            PmPrice(market_id, outcome, bid, bid_size, ask, ask_size, ts_event_us, ts_recv_us)
        )
    return rows, rejected
