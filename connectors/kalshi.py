"""Kalshi: prediction-market listings and top-of-book prices from its public Trade API v2.

A refresh pages `GET /events` (for each event's category) and then `GET /markets?status=...`
with `cursor` and `limit`, and yields a Listing per market that is new or changed (see
connectors.pm_polling); a prices poll pages `GET /markets?status=open` and yields each page's
yes/no bids and asks (cents, as probabilities) as one PmPriceBatch. Kalshi's basic tier allows
20 reads a second; the budget defaults to 10. Public market data needs no key, so none is
read. Formats: connectors.kalshi_markets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import ClassVar
from urllib.parse import quote

import aiohttp
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from connectors import kalshi_markets as km
from connectors.base import ConnectorConfig, Rejected
from connectors.budget import Limit, Priority
from connectors.pm_parsing import Page
from connectors.pm_polling import PmPollingConfig, PmPollingConnector
from connectors.urls import http_url
from shared.models import Listing, PmPriceBatch

log = logging.getLogger(__name__)

STATUS_FILTERS = ("unopened", "open", "closed", "settled")


class KalshiConfig(PmPollingConfig):
    model_config = SettingsConfigDict(env_prefix="MS_KALSHI_", extra="forbid")

    base_url: str = Field(
        default=km.BASE_URL, description="the Trade API's base, with /trade-api/v2"
    )
    statuses: str = Field(
        default="unopened,open",
        description="which markets a refresh lists (Kalshi's status filter)",
    )
    page_limit: int = Field(default=1000, ge=1, le=1000, description="markets per page")
    events_page_limit: int = Field(default=200, ge=1, le=200, description="events per page")
    rate_limit: int = Field(default=10, gt=0, description="requests per rate window")
    rate_window_s: float = Field(default=1.0, gt=0, description="the rate window, in seconds")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)

    @field_validator("statuses")
    @classmethod
    def _known(cls, text: str) -> str:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or set(names) - set(STATUS_FILTERS):
            raise ValueError(f"{text!r}: choose from {', '.join(STATUS_FILTERS)}")
        return ",".join(dict.fromkeys(names))


class KalshiConnector(PmPollingConnector):
    name: ClassVar[str] = "kalshi"
    Config: ClassVar[type[ConnectorConfig]] = KalshiConfig
    venue: ClassVar[str] = km.VENUE

    def __init__(self, config: ConnectorConfig) -> None:
        assert isinstance(config, KalshiConfig)
        super().__init__(
            config, [Limit(config.rate_limit, config.rate_window_s)], listing_carries_prices=True
        )
        self.cfg = config
        self.events: dict[str, km.Event] = {}

    async def _events(self, http: aiohttp.ClientSession) -> AsyncIterator[Rejected]:
        """Page through the events, keeping each one's title and category."""
        url, cursor = f"{self.cfg.base_url}/events", None
        while True:
            params = {"limit": str(self.cfg.events_page_limit)}
            if cursor:
                params["cursor"] = cursor
            response = await self.fetch(http, url, params=params)
            if response[0] != 200:
                raise self.refused(url, response)
            page = km.parse_events_page(response[1], response[2])
            self.events.update(page.events)
            for rejected in page.rejected:
                yield rejected
            if not page.complete or page.cursor is None:
                return
            cursor = page.cursor

    async def _markets(
        self, http: aiohttp.ClientSession, statuses: str, priority: Priority
    ) -> AsyncIterator[Page]:
        url, cursor = f"{self.cfg.base_url}/markets", None
        while True:
            params = {"limit": str(self.cfg.page_limit), "status": statuses}
            if cursor:
                params["cursor"] = cursor
            response = await self.fetch(http, url, params=params, priority=priority)
            if response[0] != 200:
                raise self.refused(url, response)
            page = km.parse_markets_page(
                response[1], response[2], self.events, time.time_ns() // 1000
            )
            yield page
            if not page.complete or page.cursor is None:
                return
            cursor = page.cursor

    async def listing_pages(self, http: aiohttp.ClientSession) -> AsyncIterator[Page]:
        rejected = [r async for r in self._events(http)]
        if rejected:
            yield Page(items=list(rejected))
        async for page in self._markets(http, self.cfg.statuses, Priority.LISTINGS):
            yield page

    async def fetch_listing(
        self, http: aiohttp.ClientSession, market_id: str
    ) -> Listing | Rejected | None:
        url = f"{self.cfg.base_url}/markets/{quote(market_id, safe='')}"
        response = await self.fetch(http, url)
        if response[0] == 404:
            return None
        if response[0] != 200:
            raise self.refused(url, response)
        return km.parse_market_body(response[1], response[2], self.events, time.time_ns() // 1000)

    async def price_batches(
        self, http: aiohttp.ClientSession
    ) -> AsyncIterator[PmPriceBatch | Rejected]:
        async for page in self._markets(http, "open", Priority.LIVE):
            for item in page.items:
                if isinstance(item, Rejected):
                    yield item
            if page.prices:
                yield self.batch(page.prices)
