"""The Kalshi connector against the fake Kalshi on 127.0.0.1: every market of a paged listing
exactly once, only changed markets again, a settled market published, 429s waited out, bad
bodies dead-lettered while the refresh goes on, prices as probabilities per outcome; the
parsers on their own; and `python -m connectors run kalshi` publishing to a real broker."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import Started, at_least, read_topic

from connectors.base import Rejected
from connectors.fakes.kalshi import FakeKalshi
from connectors.kalshi import KalshiConfig, KalshiConnector
from connectors.kalshi_markets import Event, parse_market, parse_markets_page
from connectors.pm_parsing import BadInput
from shared.codec import Codec
from shared.models import Listing, ListingStatus, PmPriceBatch
from shared.topics import LISTINGS, PM_PRICES
from streams.embedded.ports import free_port

Item = Listing | PmPriceBatch | Rejected


def _connector(fake: FakeKalshi, **overrides: Any) -> KalshiConnector:
    return KalshiConnector(
        KalshiConfig(**({"base_url": fake.api_url, "page_limit": 100} | overrides))
    )


async def _refresh(connector: KalshiConnector) -> list[Item]:
    """One full refresh's items (fail after 20 s)."""
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:
        return [item async for item in connector.refresh(http)]  # type: ignore[misc]


def _listings(items: list[Item]) -> list[Listing]:
    return [i for i in items if isinstance(i, Listing)]


def _prices(items: list[Item]) -> list[PmPriceBatch]:
    return [i for i in items if isinstance(i, PmPriceBatch)]


async def test_kalshi_refresh_of_three_pages_yields_every_listed_market_exactly_once() -> None:
    # Arrange: 250 markets, 100 a page; every 20th is unopened
    async with FakeKalshi(kalshi_markets=250) as fake:
        connector = _connector(fake)

        # Act
        items = await _refresh(connector)

    # Assert
    listings = _listings(items)
    assert (
        [x.market_id for x in listings]
        == [m["ticker"] for m in fake.listed()]
        == list(fake.markets)
    )
    assert len(listings) == 250 and not [i for i in items if isinstance(i, Rejected)]
    pages = [r for r in fake.requests if r.path.endswith("/markets")]
    assert len(pages) == 3 and "cursor" not in pages[0].query
    assert [r.query["limit"] for r in pages] == ["100"] * 3
    assert all(r.query["status"] == "unopened,open" for r in pages)
    assert {x.status for x in listings} == {ListingStatus.OPEN, ListingStatus.UPCOMING}
    assert sum(x.status is ListingStatus.UPCOMING for x in listings) == 12
    first = listings[0]
    market = fake.markets[first.market_id]
    assert (first.title, first.event_id, first.outcomes) == (
        market["title"],
        market["event_ticker"],
        ("Yes", "No"),
    )
    assert first.category == fake.events[market["event_ticker"]]["category"] != ""
    assert (
        first.rules.startswith(market["rules_primary"]) and first.key == f"kalshi:{first.market_id}"
    )
    rows = [row for batch in _prices(items) for row in batch.rows()]
    assert len(rows) == 2 * 238  # the open markets' Yes and No


async def test_kalshi_second_refresh_yields_only_the_changed_and_the_settled_market() -> None:
    # Arrange
    async with FakeKalshi(kalshi_markets=120) as fake:
        connector = _connector(fake)
        await _refresh(connector)
        changed, settled = list(fake.markets)[3], list(fake.markets)[7]
        fake.change(changed, title="Will the high temp in NYC be >46° on Dec 1, 2025?")
        fake.close(settled)

        # Act
        again = await _refresh(connector)

    # Assert: the settled one is asked for on its own, as it left the open listing
    listings = {x.market_id: x for x in _listings(again)}
    assert set(listings) == {changed, settled}
    assert listings[changed].title.endswith(">46° on Dec 1, 2025?")
    assert (listings[settled].status, listings[settled].venue_status) == (
        ListingStatus.SETTLED,
        "finalized",
    )
    assert [r.path for r in fake.requests][-1].endswith(f"/markets/{settled}")
    assert connector.provider_stats()["kalshi"]["vanished"] == 1


async def test_kalshi_429_is_waited_out_and_nothing_comes_before_retry_after() -> None:
    # Arrange: the second page request gets a 429 asking for 1 s
    async with FakeKalshi(kalshi_markets=150) as fake:
        connector = _connector(fake)
        fake.throttle(0)
        original = fake.refused
        calls = [0]

        def refused_second(request):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 3:  # events, first page, then this
                fake.throttle(1, 1.0)
            return original(request)

        fake.refused = refused_second  # type: ignore[method-assign]

        # Act
        items = await _refresh(connector)

    # Assert
    assert len(_listings(items)) == 150
    statuses = [r.status for r in fake.requests]
    assert statuses.count(429) == 1 and fake.early == 0
    i = statuses.index(429)
    assert fake.requests[i + 1].at_s - fake.requests[i].at_s >= 1.0
    assert fake.requests[i + 1].query == fake.requests[i].query  # the same page asked again
    assert connector.provider_stats()["kalshi"]["requests"]["rate_limited"] == 1


async def test_kalshi_bad_entries_and_an_html_page_are_rejected_and_the_connector_goes_on() -> None:
    # Arrange
    async with FakeKalshi(kalshi_markets=120) as fake:
        connector = _connector(fake)
        tickers = list(fake.markets)
        fake.corrupt(tickers[0], yes_bid="lots", yes_bid_dollars=None)
        fake.corrupt(tickers[1], title=None)
        fake.corrupt(tickers[2], close_time="next Tuesday")
        fake.serve_html(1)

        # Act: the first refresh meets the HTML page; the second lists the rest
        first = await _refresh(connector)
        second = await _refresh(connector)

    # Assert
    assert [(r.reason, r.detail.split(",")[0]) for r in first if isinstance(r, Rejected)] == [
        ("not_json", "an HTML page (502 Bad Gateway)")
    ]
    assert _listings(first) == [] and connector.provider_stats()["kalshi"]["vanished"] == 0
    rejected = [r for r in second if isinstance(r, Rejected)]
    assert [r.reason for r in rejected] == ["bad_price", "missing_field", "bad_time"]
    assert orjson.loads(rejected[1].payload)["ticker"] == tickers[1]
    assert len(_listings(second)) == 117


async def test_kalshi_prices_are_probabilities_with_no_as_the_complement_of_yes() -> None:
    # Arrange
    async with FakeKalshi(kalshi_markets=60) as fake:
        connector = _connector(fake)
        ticker = next(t for t, m in fake.markets.items() if m["status"] == "active")
        fake.change(ticker, yes_bid=37, yes_ask=40, no_bid=60, no_ask=63, yes_bid_dollars="0.3700",
                    yes_ask_dollars="0.4000", no_bid_dollars="0.6000", no_ask_dollars="0.6300")  # fmt: skip

        # Act
        async with asyncio.timeout(10), aiohttp.ClientSession() as http:
            batches = [b async for b in connector.price_batches(http)]

    # Assert
    rows = [row for b in batches if isinstance(b, PmPriceBatch) for row in b.rows()]
    assert len(rows) == 2 * sum(m["status"] == "active" for m in fake.markets.values())
    for row in rows:
        assert 0 <= row.bid_price <= 1 and 0 <= row.ask_price <= 1 and row.bid_price < row.ask_price
    mine = {row.outcome: row for row in rows if row.market_id == ticker}
    assert (mine["Yes"].bid_price, mine["Yes"].ask_price) == (0.37, 0.40)
    assert (mine["No"].bid_price, mine["No"].ask_price) == (0.60, 0.63)
    assert [r.query["status"] for r in fake.requests] == ["open"]


def test_kalshi_parse_market_cents_only_no_bid_and_no_ask_become_nan() -> None:
    # Arrange: an older answer without the dollar fields
    market = {"ticker": "KXBTCD-25DEC3117-T100000", "event_ticker": "KXBTCD-25DEC3117",
              "title": "Will the Bitcoin price be above $100,000 on Dec 31, 2025 at 5pm EST?",
              "status": "active", "close_time": "2025-12-31T22:00:00Z",
              "yes_bid": 0, "yes_ask": 100, "no_bid": 0, "no_ask": 100}  # fmt: skip

    # Act
    listing, rows = parse_market(
        market, {"KXBTCD-25DEC3117": Event("Bitcoin", "Crypto")}, 1_767_000_000_000_000
    )

    # Assert
    assert listing.close_time_us == 1_767_218_400_000_000 and listing.category == "Crypto"
    assert all(math.isnan(r.bid_price) and math.isnan(r.ask_price) for r in rows)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head></html>",
            "not_json",
        ),
        (b'[{"ticker": "A"}]', "bad_shape"),
        (b'{"markets": [], "cursor": 7}', "bad_type"),
    ],
)
def test_kalshi_parse_markets_page_bad_body_is_one_rejected_and_incomplete(
    body: bytes, reason: str
) -> None:
    # Act
    page = parse_markets_page(body, "application/json", {}, 1_767_000_000_000_000)

    # Assert
    assert [(type(i), i.reason) for i in page.items] == [(Rejected, reason)]  # type: ignore[union-attr]
    assert not page.complete and page.cursor is None


def test_kalshi_parse_market_price_outside_a_dollar_raises_bad_input() -> None:
    with pytest.raises(BadInput, match="bad_price"):
        parse_market({"ticker": "T", "title": "t", "status": "active", "yes_bid": 150}, {}, 0)


def test_kalshi_run_against_the_fake_publishes_listings_and_prices_to_kafka(
    bootstrap: str, codec: Codec, start_process: Callable[[list[str], dict[str, str]], Started]
) -> None:
    # Arrange
    port = free_port()
    fake = start_process(["connectors.fakes.kalshi", "--port", str(port), "--markets", "140"], {})
    env = {
        "MS_KAFKA_BOOTSTRAP": bootstrap,
        "MS_CONNECTOR_HTTP_PORT": "0",
        "MS_KALSHI_BASE_URL": f"http://127.0.0.1:{port}/trade-api/v2",
    }

    # Act
    started = start_process(
        ["connectors", "run", "kalshi", "--page-limit", "50", "--prices-s", "1"], env
    )
    listings = read_topic(bootstrap, LISTINGS, at_least(140), timeout_s=30)
    prices = read_topic(bootstrap, PM_PRICES, at_least(6), timeout_s=30)

    # Assert
    assert fake.process.poll() is None and started.process.poll() is None, started.output()
    decoded = [codec.decode_listing(m.value()) for m in listings]
    assert len(decoded) == 140 and len({x.market_id for x in decoded}) == 140
    assert all(
        m.key().decode() == f"kalshi:{x.market_id}" for m, x in zip(listings, decoded, strict=True)
    )
    assert {m.partition() for m in listings} <= {0, 1, 2}
    rows = [row for m in prices for row in codec.decode_pm_price_batch(m.value()).rows()]
    assert rows and all(0 <= r.bid_price <= 1 and 0 <= r.ask_price <= 1 for r in rows)
    assert {r.outcome for r in rows} == {"Yes", "No"}
