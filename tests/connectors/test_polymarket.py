"""The Polymarket connector against the fake Polymarket on 127.0.0.1 (Gamma and the CLOB):
offset pages exactly, changed and resolved markets again, CLOB books as best bid and ask per
named outcome, 429s on /books waited out, bad outcomes dead-lettered; the parsers on their own;
and the shared market generator's ground truth."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

import aiohttp
import pytest

from connectors.base import Rejected
from connectors.fakes.pm_data import TEAMS, generate
from connectors.fakes.polymarket import FakePolymarket, token_of
from connectors.pm_parsing import BadInput
from connectors.polymarket import PolymarketConfig, PolymarketConnector
from connectors.polymarket_markets import parse_books, parse_market
from shared.models import Listing, ListingStatus, PmPriceBatch

Item = Listing | PmPriceBatch | Rejected


def _connector(fake: FakePolymarket, **overrides: Any) -> PolymarketConnector:
    settings = {
        "gamma_url": fake.base_url,
        "clob_url": fake.base_url,
        "page_limit": 100,
    } | overrides
    return PolymarketConnector(PolymarketConfig(**settings))


async def _refresh(connector: PolymarketConnector) -> list[Item]:
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:
        return [item async for item in connector.refresh(http)]  # type: ignore[misc]


async def _prices(connector: PolymarketConnector) -> list[PmPriceBatch | Rejected]:
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:
        return [item async for item in connector.price_batches(http)]


def _listings(items: list[Any]) -> list[Listing]:
    return [i for i in items if isinstance(i, Listing)]


async def test_polymarket_refresh_of_offset_pages_yields_every_market_exactly_once() -> None:
    # Arrange: 250 markets, 100 a page: pages of 100, 100 and 50
    async with FakePolymarket(polymarket_markets=250) as fake:
        connector = _connector(fake)

        # Act
        items = await _refresh(connector)

    # Assert
    listings = _listings(items)
    assert [x.market_id for x in listings] == list(fake.markets) and len(listings) == 250
    assert [(r.query["offset"], r.query["active"], r.query["closed"]) for r in fake.requests] == [
        ("0", "true", "false"), ("100", "true", "false"), ("200", "true", "false"),
    ]  # fmt: skip
    first, raw = listings[0], fake.markets[listings[0].market_id]
    assert (first.title, first.rules, first.event_id) == (
        raw["question"],
        raw["description"],
        raw["conditionId"],
    )
    assert (
        first.status is ListingStatus.OPEN
        and first.url == f"https://polymarket.com/market/{raw['slug']}"
    )
    assert not [i for i in items if isinstance(i, PmPriceBatch)]  # prices come from the CLOB


async def test_polymarket_changed_and_resolved_markets_are_published_again() -> None:
    # Arrange
    async with FakePolymarket(polymarket_markets=80) as fake:
        connector = _connector(fake)
        await _refresh(connector)
        changed, resolved = list(fake.markets)[5], list(fake.markets)[9]
        fake.change(changed, endDate="2026-03-01T12:00:00Z")
        fake.close(resolved)

        # Act
        again = {x.market_id: x for x in _listings(await _refresh(connector))}

    # Assert
    assert set(again) == {changed, resolved}
    assert again[changed].close_time_us == 1_772_366_400_000_000
    assert again[resolved].status is ListingStatus.SETTLED
    assert fake.requests[-1].path == f"/markets/{resolved}"


async def test_polymarket_clob_prices_name_each_outcome_with_the_best_bid_and_ask() -> None:
    # Arrange
    async with FakePolymarket(polymarket_markets=120) as fake:
        connector = _connector(fake, books_per_request=100)
        await _refresh(connector)
        game = next(m for m in fake.universe.polymarket if m.question.kind == "game")
        fake.set_mid(token_of(game.market_id, game.outcomes[0]), 0.30)
        fake.set_mid(token_of(game.market_id, game.outcomes[1]), 0.70)

        # Act
        batches = await _prices(connector)

    # Assert: 120 markets x 2 outcomes in 3 requests of up to 100 tokens
    rows = [row for b in batches if isinstance(b, PmPriceBatch) for row in b.rows()]
    assert len(rows) == 240 and len([r for r in fake.requests if r.path == "/books"]) == 3
    assert all(
        0 <= r.bid_price < r.ask_price <= 1 and r.bid_size > 0 and r.ask_size > 0 for r in rows
    )
    mine = {r.outcome: r for r in rows if r.market_id == game.market_id}
    assert set(mine) == set(game.outcomes) and set(game.outcomes) <= {t[1] for t in TEAMS.values()}
    assert (mine[game.outcomes[0]].bid_price, mine[game.outcomes[0]].ask_price) == (0.29, 0.31)
    assert (mine[game.outcomes[1]].bid_price, mine[game.outcomes[1]].ask_price) == (0.69, 0.71)


async def test_polymarket_429_on_books_is_waited_out_before_asking_again() -> None:
    # Arrange
    async with FakePolymarket(polymarket_markets=40) as fake:
        connector = _connector(fake)
        await _refresh(connector)
        fake.throttle(1, 1.0)

        # Act
        batches = await _prices(connector)

    # Assert
    books = [r for r in fake.requests if r.path == "/books"]
    assert [r.status for r in books] == [429, 200] and fake.early == 0
    assert books[1].at_s - books[0].at_s >= 1.0
    assert sum(len(b) for b in batches if isinstance(b, PmPriceBatch)) == 80


async def test_polymarket_outcomes_not_a_json_list_are_rejected_and_the_rest_listed() -> None:
    # Arrange
    async with FakePolymarket(polymarket_markets=50) as fake:
        connector = _connector(fake)
        ids = list(fake.markets)
        fake.corrupt(ids[0], outcomes="Yes, No")
        fake.corrupt(ids[1], outcomes='{"Yes": 1}')
        fake.corrupt(ids[2], question=123)

        # Act
        items = await _refresh(connector)

    # Assert
    assert [r.reason for r in items if isinstance(r, Rejected)] == [
        "bad_outcomes",
        "bad_outcomes",
        "bad_type",
    ]
    assert len(_listings(items)) == 47


async def test_polymarket_gamma_price_source_takes_best_bid_and_ask_from_the_listing() -> None:
    # Arrange
    async with FakePolymarket(polymarket_markets=30) as fake:
        connector = _connector(fake, price_source="gamma")
        market_id = next(iter(fake.markets))
        fake.change(market_id, bestBid=0.61, bestAsk=0.64)

        # Act
        items = await _refresh(connector)

    # Assert
    rows = {
        (r.market_id, r.outcome): r for b in items if isinstance(b, PmPriceBatch) for r in b.rows()
    }
    first, second = fake.universe.polymarket[0].outcomes
    yes, no = rows[(market_id, first)], rows[(market_id, second)]
    assert (yes.bid_price, yes.ask_price) == (0.61, 0.64)
    assert (no.bid_price, no.ask_price) == pytest.approx((0.36, 0.39))
    assert math.isnan(yes.bid_size) and len(rows) == 60


def test_polymarket_parse_books_takes_the_highest_bid_and_lowest_ask_in_any_order() -> None:
    # Arrange
    body = (
        b'[{"asset_id": "71321", "timestamp": "1767000000123", "bids": [{"price": "0.40", "size": "5"},'
        b' {"price": "0.45", "size": "9"}, {"price": "0.41", "size": "2"}], "asks": [{"price": "0.52",'
        b' "size": "7"}, {"price": "0.47", "size": "3"}]}, {"asset_id": "99", "bids": [], "asks": []}]'
    )

    # Act
    rows, rejected = parse_books(
        body, "application/json", {"71321": ("516710", "Yes")}, 1_767_000_000_200_000
    )

    # Assert
    (row,) = rows
    assert (row.bid_price, row.bid_size, row.ask_price, row.ask_size) == (0.45, 9.0, 0.47, 3.0)
    assert row.ts_event_us == 1_767_000_000_123_000
    assert [r.reason for r in rejected] == ["unknown_token"]


def test_polymarket_parse_market_token_count_not_matching_outcomes_raises_bad_input() -> None:
    market = {"id": "1", "question": "q?", "outcomes": '["Yes", "No"]', "clobTokenIds": '["1"]'}
    with pytest.raises(BadInput, match="clobTokenIds"):
        parse_market(market, 0)


def test_pm_data_same_seed_same_universe_and_the_ground_truth_holds() -> None:
    # Act
    one, two = generate(11, kalshi=400, polymarket=200), generate(11, kalshi=400, polymarket=200)

    # Assert
    assert one == two and len(one.kalshi) == 400 and len(one.polymarket) == 200
    kalshi = {m.market_id: m for m in one.kalshi}
    poly = {m.market_id: m for m in one.polymarket}
    assert len(kalshi) == 400 and len(poly) == 200 and len(one.pairs) == 60
    for pair in one.pairs:
        assert kalshi[pair.kalshi_id].question == poly[pair.polymarket_id].question
        assert pair.polymarket_yes_outcome in poly[pair.polymarket_id].outcomes
    for k, p in one.negatives:
        a, b = kalshi[k].question, poly[p].question
        differ = [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
        assert len(differ) == 1, (a, b)
    assert len({m.question for m in one.kalshi}) == 400  # no question twice on a venue
    paired = {(p.kalshi_id, p.polymarket_id) for p in one.pairs}
    assert not paired & set(one.negatives)
