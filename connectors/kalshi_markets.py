"""Kalshi's Trade API v2 market data to domain values: pure parsing, no HTTP here.

`GET /trade-api/v2/markets?limit=N&cursor=C&status=unopened,open` answers
`{"markets": [...], "cursor": "..."}`; an empty or absent cursor ends the listing (limit: 100 by
default, at most 1000). Each market has `ticker`, `event_ticker`, `title`, `subtitle`,
`yes_sub_title`, `no_sub_title`, `rules_primary`, `rules_secondary`, `close_time` (ISO 8601),
`status` (initialized, active, inactive, closed, determined, settled, finalized; the filter
speaks unopened, open, closed, settled), and the top of the book in cents, `yes_bid`,
`yes_ask`, `no_bid`, `no_ask` (newer answers add the same as dollar strings, `yes_bid_dollars`:
"0.5600", which win where present), with `volume` and `open_interest`. The category lives on
the event: `GET /events?limit=N&cursor=C` answers `{"events": [{"event_ticker", "title",
"category", ...}], "cursor"}` (limit at most 200); `GET /markets/{ticker}` answers
`{"market": {...}}`. A bid of 0 means no bid, an ask of 100 cents no ask. Public market data
needs no key. Documented at https://docs.kalshi.com/api-reference/market/get-markets,
https://docs.kalshi.com/api-reference/market/get-events and
https://docs.kalshi.com/getting_started/pagination.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

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

VENUE: Final = "kalshi"
BASE_URL: Final = "https://api.elections.kalshi.com/trade-api/v2"
OUTCOMES: Final = ("Yes", "No")
STATUS_OF: Final[Mapping[str, ListingStatus]] = {
    "initialized": ListingStatus.UPCOMING,
    "unopened": ListingStatus.UPCOMING,
    "active": ListingStatus.OPEN,
    "open": ListingStatus.OPEN,
    "inactive": ListingStatus.PAUSED,
    "paused": ListingStatus.PAUSED,
    "closed": ListingStatus.CLOSED,
    "determined": ListingStatus.CLOSED,
    "disputed": ListingStatus.CLOSED,
    "amended": ListingStatus.CLOSED,
    "settled": ListingStatus.SETTLED,
    "finalized": ListingStatus.SETTLED,
}


@dataclass(frozen=True, slots=True)
class Event:
    title: str
    category: str


@dataclass(slots=True)
class EventsPage:
    events: dict[str, Event] = field(default_factory=dict)
    cursor: str | None = None
    rejected: list[Rejected] = field(default_factory=list)
    complete: bool = True


def _price(market: Mapping[str, Any], name: str) -> float:
    """The probability of a top-of-book field (`yes_bid`: cents, `yes_bid_dollars`: a dollar
    string); NaN where there is none (a bid of 0, an ask of 100 cents)."""
    dollars = market.get(f"{name}_dollars")
    if dollars is not None:
        try:
            value = float(dollars)
        except (TypeError, ValueError):
            raise BadInput("bad_price", f"{name}_dollars is {dollars!r}") from None
    else:
        cents = market.get(name)
        if cents is None:
            return math.nan
        if isinstance(cents, bool) or not isinstance(cents, int | float):
            raise BadInput("bad_price", f"{name} is {cents!r}, not cents")
        value = cents / 100
    if not 0 <= value <= 1:
        raise BadInput("bad_price", f"{name} is {value!r}, outside [0, 1] dollars")
    if (name.endswith("_bid") and value == 0) or (name.endswith("_ask") and value == 1):
        return math.nan
    return value


def _size(market: Mapping[str, Any], name: str) -> float:
    value = market.get(name)
    if value is None:
        return math.nan  # the listing does not say
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadInput("bad_price", f"{name} is {value!r}") from None


def parse_market(
    market: Any, events: Mapping[str, Event], ts_recv_us: int
) -> tuple[Listing, list[PmPrice]]:
    """One market object to its Listing and its two price rows (Yes, No); raise BadInput."""
    if not isinstance(market, dict):
        raise BadInput("bad_shape", f"a market is {type(market).__name__}, not an object")
    ticker = required_str(market, "ticker")
    status_word = required_str(market, "status")
    if (status := STATUS_OF.get(status_word)) is None:
        raise BadInput("unknown_status", f"{ticker}: status {status_word!r}")
    event_ticker = optional_str(market, "event_ticker")
    event = events.get(event_ticker or "")
    rules = "\n\n".join(
        text
        for text in (optional_str(market, "rules_primary"), optional_str(market, "rules_secondary"))
        if text
    )
    series = (event_ticker or ticker).split("-")[0].lower()
    listing = Listing(
        venue=VENUE,
        market_id=ticker,
        event_id=event_ticker or None,
        title=required_str(market, "title"),
        subtitle=optional_str(market, "yes_sub_title") or optional_str(market, "subtitle") or "",
        rules=rules,
        category=(event.category if event else "") or optional_str(market, "category") or "",
        close_time_us=iso_us(market, "close_time"),
        outcomes=OUTCOMES,
        status=status,
        venue_status=status_word,
        url=f"https://kalshi.com/markets/{series}",
        ts_event_us=ts_recv_us,
        ts_recv_us=ts_recv_us,
    )
    prices = [
        PmPrice(ticker, outcome, _price(market, f"{side}_bid"), _size(market, f"{side}_bid_size"),
                _price(market, f"{side}_ask"), _size(market, f"{side}_ask_size"),
                ts_recv_us, ts_recv_us)
        for outcome, side in (("Yes", "yes"), ("No", "no"))
    ]  # fmt: skip
    return listing, prices


def parse_markets_page(
    body: bytes, content_type: str, events: Mapping[str, Event], ts_recv_us: int
) -> Page:
    """A `GET /markets` answer: each market's Listing and prices, or its Rejected; the cursor.

    A body that is not the documented object (an HTML error page, a list) is one Rejected and
    an incomplete page: the listing cannot go on past it."""
    page = Page()
    try:
        doc = json_body(body, content_type)
        if not isinstance(doc, dict) or not isinstance(doc.get("markets"), list):
            raise BadInput("bad_shape", "a markets page is not an object with a markets list")
        cursor = doc.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise BadInput("bad_type", f"cursor is {cursor!r}")
    except BadInput as exc:
        page.items.append(exc.rejected(body))
        page.complete = False
        return page
    page.cursor = cursor or None
    for market in doc["markets"]:
        if isinstance(market, dict) and isinstance(market.get("ticker"), str):
            page.seen.add(market["ticker"])
        try:
            listing, prices = parse_market(market, events, ts_recv_us)
        except BadInput as exc:
            page.items.append(rejected_entry(exc, market))
            continue
        page.items.append(listing)
        page.prices.extend(prices)
    return page


def parse_market_body(
    body: bytes, content_type: str, events: Mapping[str, Event], ts_recv_us: int
) -> Listing | Rejected:
    """A `GET /markets/{ticker}` answer, `{"market": {...}}`, to its Listing."""
    try:
        doc = json_body(body, content_type)
        if not isinstance(doc, dict) or "market" not in doc:
            raise BadInput("bad_shape", "not an object with a market")
        listing, _ = parse_market(doc["market"], events, ts_recv_us)
    except BadInput as exc:
        return exc.rejected(body)
    return listing


def parse_events_page(body: bytes, content_type: str) -> EventsPage:
    """A `GET /events` answer: each event's title and category by event ticker, the cursor."""
    page = EventsPage()
    try:
        doc = json_body(body, content_type)
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            raise BadInput("bad_shape", "an events page is not an object with an events list")
    except BadInput as exc:
        page.rejected.append(exc.rejected(body))
        page.complete = False
        return page
    cursor = doc.get("cursor")
    page.cursor = cursor if isinstance(cursor, str) and cursor else None
    for event in doc["events"]:
        try:
            if not isinstance(event, dict):
                raise BadInput("bad_shape", "an event is not an object")
            ticker = required_str(event, "event_ticker")
            page.events[ticker] = Event(
                optional_str(event, "title") or "", optional_str(event, "category") or ""
            )
        except BadInput as exc:
            page.rejected.append(rejected_entry(exc, event))
    return page
