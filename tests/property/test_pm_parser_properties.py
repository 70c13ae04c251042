"""Property tests of the prediction-market parsers (Kalshi, Polymarket, pm_parsing): any body
gives Listings, price rows and Rejected (BadInput inside), never another exception.

Inputs per run (derandomized): kalshi random bodies 250, mutated market pages 250, events
pages 200; polymarket random bodies 250, mutated market pages 250, books 300; pm_parsing
json_body/iso_us 300. Total: EXAMPLES_TRIED = 1,800 bodies.
"""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors import kalshi_markets, polymarket_markets
from connectors.base import Rejected
from connectors.kalshi_markets import Event
from connectors.pm_parsing import BadInput, Page, iso_us, json_body
from shared.models import Listing, PmPrice

RANDOM_BODIES: Final = 250
MARKET_PAGES: Final = 250
EVENT_PAGES: Final = 200
BOOKS: Final = 300
PM_PARSING: Final = 300
EXAMPLES_TRIED: Final = 2 * (RANDOM_BODIES + MARKET_PAGES) + EVENT_PAGES + BOOKS + PM_PARSING

PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)
RECV_US: Final = 1_767_000_000_000_000
EVENTS: Final = {"KXBTCD-25DEC3117": Event("Bitcoin", "Crypto")}
TOKEN: Final = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
OUTCOME_OF: Final = {TOKEN: ("516710", "Yes")}
CONTENT_TYPES: Final = st.sampled_from(["application/json", "text/html", "", "application/json; x"])

TIMES: Final = st.sampled_from(
    [
        "2025-12-31T17:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00-14:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59+14:00",
        "2025-02-30T00:00:00Z",
        "2025-12-31",
        "yesterday",
        "",
    ]
)
NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 100, 56, 0.56, -1, 1e308]),
)
NUMBER_TEXT: Final = st.sampled_from(["0.5600", "1", "0", "-0.1", "NaN", "inf", "1e999", "x", ""])
LEAVES: Final = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.text(max_size=8), TIMES, NUMBER_TEXT
)
JSON_VALUES: Final = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `values`, sometimes any JSON value in their place."""
    return st.one_of(values, values, values, JSON_VALUES)


def as_body(document: object) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


RANDOM: Final = st.one_of(
    st.binary(max_size=120),
    JSON_VALUES.map(as_body),
    st.just(b"<!DOCTYPE html><title>\xff\xfe Cloudflare</title>"),
)

KALSHI_MARKET: Final = st.fixed_dictionaries(
    {},
    optional={
        "ticker": maybe(st.sampled_from(["KXBTCD-25DEC3117-T100000", ""])),
        "event_ticker": maybe(st.sampled_from(["KXBTCD-25DEC3117", "OTHER"])),
        "title": maybe(st.text(max_size=20)),
        "subtitle": maybe(st.text(max_size=8)),
        "yes_sub_title": maybe(st.text(max_size=8)),
        "rules_primary": maybe(st.text(max_size=20)),
        "rules_secondary": maybe(st.text(max_size=8)),
        "close_time": maybe(TIMES),
        "status": maybe(st.sampled_from(["active", "initialized", "finalized", "weird"])),
        **{side: maybe(NUMBERS) for side in ("yes_bid", "yes_ask", "no_bid", "no_ask")},
        **{f"{side}_dollars": maybe(NUMBER_TEXT) for side in ("yes_bid", "no_ask")},
        "volume": maybe(NUMBERS),
    },
)
POLYMARKET_MARKET: Final = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(st.sampled_from(["516710", 516710, ""])),
        "question": maybe(st.text(max_size=20)),
        "slug": maybe(st.text(max_size=8)),
        "conditionId": maybe(st.text(max_size=8)),
        "description": maybe(st.text(max_size=20)),
        "category": maybe(st.text(max_size=8)),
        "endDate": maybe(TIMES),
        "updatedAt": maybe(TIMES),
        "outcomes": maybe(
            st.sampled_from(['["Yes", "No"]', '["Yes"]', "[1, 2]", "not json", "{}"])
        ),
        "clobTokenIds": maybe(st.sampled_from([f'["{TOKEN}", "2"]', "[]", "[", '[1, "x"]'])),
        "active": maybe(st.booleans()),
        "closed": maybe(st.booleans()),
        "bestBid": maybe(NUMBERS | NUMBER_TEXT),
        "bestAsk": maybe(NUMBERS | NUMBER_TEXT),
        "umaResolutionStatus": maybe(st.sampled_from(["resolved", "proposed"])),
    },
)
LEVELS: Final = maybe(
    st.lists(
        maybe(
            st.fixed_dictionaries(
                {"price": maybe(NUMBER_TEXT | NUMBERS), "size": maybe(NUMBER_TEXT)}
            )
        ),
        max_size=3,
    )
)
BOOK: Final = st.fixed_dictionaries(
    {},
    optional={
        "asset_id": maybe(st.sampled_from([TOKEN, "1"])),
        "timestamp": maybe(st.sampled_from(["1767000000000", "1e3", "x"]) | NUMBERS),
        "bids": LEVELS,
        "asks": LEVELS,
    },
)


def assert_page(page: Page) -> None:
    assert all(isinstance(item, Listing | Rejected) for item in page.items)


@settings(PROPERTY, max_examples=RANDOM_BODIES)
@given(body=RANDOM, content_type=CONTENT_TYPES)
def test_kalshi_parsers_random_body_never_raise(body: bytes, content_type: str) -> None:
    assert_page(kalshi_markets.parse_markets_page(body, content_type, EVENTS, RECV_US))
    found = kalshi_markets.parse_market_body(body, content_type, EVENTS, RECV_US)
    assert isinstance(found, Listing | Rejected)
    kalshi_markets.parse_events_page(body, content_type)


@settings(PROPERTY, max_examples=MARKET_PAGES)
@given(
    markets=st.lists(maybe(KALSHI_MARKET), max_size=4),
    cursor=maybe(st.text(max_size=4) | st.none()),
)
def test_kalshi_parse_markets_page_mutated_markets_never_raise(
    markets: list[Any], cursor: Any
) -> None:
    body = as_body({"markets": markets, "cursor": cursor})
    assert_page(kalshi_markets.parse_markets_page(body, "application/json", EVENTS, RECV_US))
    for market in markets:
        found = kalshi_markets.parse_market_body(as_body({"market": market}), "", EVENTS, RECV_US)
        assert isinstance(found, Listing | Rejected)


@settings(PROPERTY, max_examples=EVENT_PAGES)
@given(
    events=st.lists(
        maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "event_ticker": maybe(st.text(max_size=6)),
                    "title": maybe(st.text(max_size=6)),
                    "category": maybe(st.text(max_size=6)),
                },
            )
        ),
        max_size=4,
    ),
    cursor=maybe(st.text(max_size=4)),
)
def test_kalshi_parse_events_page_mutated_events_never_raise(
    events: list[Any], cursor: Any
) -> None:
    kalshi_markets.parse_events_page(as_body({"events": events, "cursor": cursor}), "")


@settings(PROPERTY, max_examples=RANDOM_BODIES)
@given(body=RANDOM, content_type=CONTENT_TYPES)
def test_polymarket_parsers_random_body_never_raise(body: bytes, content_type: str) -> None:
    assert_page(polymarket_markets.parse_markets_page(body, content_type, RECV_US))
    found = polymarket_markets.parse_market_body(body, content_type, RECV_US)
    assert isinstance(found, Listing | Rejected)
    polymarket_markets.parse_books(body, content_type, OUTCOME_OF, RECV_US)


@settings(PROPERTY, max_examples=MARKET_PAGES)
@given(markets=st.lists(maybe(POLYMARKET_MARKET), max_size=4))
def test_polymarket_parse_markets_page_mutated_markets_never_raise(markets: list[Any]) -> None:
    assert_page(polymarket_markets.parse_markets_page(as_body(markets), "", RECV_US))
    for market in markets:
        found = polymarket_markets.parse_market_body(as_body(market), "", RECV_US)
        assert isinstance(found, Listing | Rejected)


@settings(PROPERTY, max_examples=BOOKS)
@given(books=st.one_of(maybe(BOOK), st.lists(maybe(BOOK), max_size=3)))
@example(books={"asset_id": TOKEN, "timestamp": 1e308})
def test_polymarket_parse_books_mutated_books_never_raise(books: Any) -> None:
    rows, rejected = polymarket_markets.parse_books(as_body(books), "", OUTCOME_OF, RECV_US)
    assert all(isinstance(r, PmPrice) for r in rows)
    assert all(isinstance(r, Rejected) for r in rejected)


@settings(PROPERTY, max_examples=PM_PARSING)
@given(body=RANDOM, content_type=CONTENT_TYPES, when=st.one_of(TIMES, st.text(max_size=30)))
@example(body=b"<html><title>" + b"\xff" * 10, content_type="", when="0001-01-01T00:00:00+01:00")
def test_pm_parsing_json_body_and_iso_us_raise_only_bad_input(
    body: bytes, content_type: str, when: str
) -> None:
    for call in (lambda: json_body(body, content_type), lambda: iso_us({"t": when}, "t")):
        try:
            call()
        except BadInput:
            pass
