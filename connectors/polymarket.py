"""Polymarket: prediction-market listings from its Gamma API, prices from its CLOB.

A refresh pages Gamma's `GET /markets?active=true&closed=false` by `limit` and `offset` and
yields a Listing per market that is new or changed (see connectors.pm_polling); a prices poll
asks the CLOB for the books of the open markets' outcome tokens (`POST /books`, up to 500 a
request) and yields each answer's best bids and asks, with their sizes, as one PmPriceBatch.
With `--price-source gamma` it pages Gamma instead and takes its `bestBid`/`bestAsk` (the first
outcome's; the second's is their complement, sizes unknown). Polymarket documents 300 Gamma
/markets and 500 CLOB /books requests per 10 s and throttles past them; both budgets stay under.
Public, no key. Formats: connectors.polymarket_markets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

import aiohttp
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from connectors import polymarket_markets as pm
from connectors.base import ConnectorConfig, Rejected
from connectors.budget import Limit, Priority, RequestBudget
from connectors.pm_parsing import Page
from connectors.pm_polling import PmPollingConfig, PmPollingConnector
from connectors.urls import http_url
from shared.models import Listing, ListingStatus, PmPriceBatch

log = logging.getLogger(__name__)


class PolymarketConfig(PmPollingConfig):
    model_config = SettingsConfigDict(env_prefix="MS_POLYMARKET_", extra="forbid")

    gamma_url: str = Field(default=pm.GAMMA_URL, description="the Gamma API's base URL")
    clob_url: str = Field(default=pm.CLOB_URL, description="the CLOB API's base URL")
    price_source: Literal["clob", "gamma"] = Field(
        default="clob", description="books from the CLOB (with sizes), or Gamma's best bid/ask"
    )
    page_limit: int = Field(default=500, ge=1, le=500, description="markets per Gamma page")
    books_per_request: int = Field(
        default=500, ge=1, le=pm.BOOKS_MAX, description="tokens per POST /books"
    )
    gamma_rate_limit: int = Field(default=250, gt=0, description="Gamma requests per rate window")
    clob_rate_limit: int = Field(default=400, gt=0, description="CLOB requests per rate window")
    rate_window_s: float = Field(default=10.0, gt=0, description="the rate window, in seconds")

    @field_validator("gamma_url", "clob_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)


class PolymarketConnector(PmPollingConnector):
    name: ClassVar[str] = "polymarket"
    Config: ClassVar[type[ConnectorConfig]] = PolymarketConfig
    venue: ClassVar[str] = pm.VENUE

    def __init__(self, config: ConnectorConfig) -> None:
        assert isinstance(config, PolymarketConfig)
        super().__init__(
            config,
            [Limit(config.gamma_rate_limit, config.rate_window_s)],
            listing_carries_prices=config.price_source == "gamma",
        )
        self.cfg = config
        self.clob_budget = RequestBudget(
            f"{pm.VENUE}-clob", [Limit(config.clob_rate_limit, config.rate_window_s)]
        )
        self.tokens: dict[str, tuple[str, ...]] = {}  # market id -> a token per outcome

    async def _pages(self, http: aiohttp.ClientSession, priority: Priority) -> AsyncIterator[Page]:
        url, offset = f"{self.cfg.gamma_url}/markets", 0
        while True:
            params = {
                "limit": str(self.cfg.page_limit), "offset": str(offset),
                "active": "true", "closed": "false",
            }  # fmt: skip
            response = await self.fetch(http, url, params=params, priority=priority)
            if response[0] != 200:
                raise self.refused(url, response)
            page = pm.parse_markets_page(response[1], response[2], time.time_ns() // 1000)
            yield page
            if not page.complete or page.entries < self.cfg.page_limit:
                return
            offset += page.entries

    def listing_pages(self, http: aiohttp.ClientSession) -> AsyncIterator[Page]:
        return self._pages(http, Priority.LISTINGS)

    def remember_page(self, page: Page) -> None:
        self.tokens.update(page.tokens)

    async def fetch_listing(
        self, http: aiohttp.ClientSession, market_id: str
    ) -> Listing | Rejected | None:
        url = f"{self.cfg.gamma_url}/markets/{market_id}"
        response = await self.fetch(http, url)
        if response[0] == 404:
            return None
        if response[0] != 200:
            raise self.refused(url, response)
        return pm.parse_market_body(response[1], response[2], time.time_ns() // 1000)

    async def price_batches(
        self, http: aiohttp.ClientSession
    ) -> AsyncIterator[PmPriceBatch | Rejected]:
        if self.cfg.price_source == "gamma":
            async for page in self._pages(http, Priority.LIVE):
                for item in page.items:
                    if isinstance(item, Rejected):
                        yield item
                if page.prices:
                    yield self.batch(page.prices)
            return
        outcome_of: dict[str, tuple[str, str]] = {}
        for listing in self.memory.live():
            if listing.status is ListingStatus.OPEN:
                for token, outcome in zip(
                    self.tokens.get(listing.market_id, ()), listing.outcomes, strict=False
                ):
                    outcome_of[token] = (listing.market_id, outcome)
        tokens, url = list(outcome_of), f"{self.cfg.clob_url}/books"
        for start in range(0, len(tokens), self.cfg.books_per_request):
            chunk = tokens[start : start + self.cfg.books_per_request]
            response = await self.fetch(
                http, url, json=[{"token_id": t} for t in chunk], priority=Priority.LIVE,
                budget=self.clob_budget,
            )  # fmt: skip
            if response[0] != 200:
                yield Rejected(
                    f"http_{response[0]}", f"POST /books answered {response[0]}", response[1]
                )
                continue
            rows, rejected = pm.parse_books(
                response[1], response[2], outcome_of, time.time_ns() // 1000
            )
            for item in rejected:
                yield item
            if rows:
                yield self.batch(rows)
