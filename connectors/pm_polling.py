"""What the prediction-market connectors (Kalshi, Polymarket) share: a REST poll on two clocks.

Every `refresh_s` the connector pages through the venue's whole listing and yields a Listing
for each market that is new or changed since it last yielded one (kept in memory: a restart
yields every market again, which the compacted md.listings.v1 absorbs). A market it knew as
live that a complete listing no longer names is asked for on its own, so that its closing or
settlement is published too. Every `prices_s` it yields the open markets' best bids and asks
as PmPriceBatch. Every request goes through the venue's RequestBudget; an HTTP 429 defers the
whole budget by its Retry-After (else one window) and asks again. 5xx, 408, timeouts and
network errors are TransientError (the runner reconnects; the memory of what was published
survives); any other refusal of a listing is a FatalError. Bad bodies and entries are Rejected.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
from pydantic import Field

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.budget import Limit, Priority, RequestBudget
from connectors.pm_parsing import Page
from connectors.retry_after import retry_after_s
from shared.errors import FatalError, TransientError
from shared.models import Listing, ListingStatus, PmPrice, PmPriceBatch

log = logging.getLogger(__name__)

Response = tuple[int, bytes, str]  # status, body, content type


class PmPollingConfig(ConnectorConfig):
    """Settings every prediction-market connector has (each adds its own prefix and URLs)."""

    refresh_s: float = Field(default=300.0, gt=0, description="a full listings refresh this often")
    prices_s: float = Field(default=10.0, gt=0, description="open markets' prices this often")
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline for one request")


class ListingMemory:
    """The last Listing yielded per market, to yield only what is new or changed."""

    def __init__(self) -> None:
        self._last: dict[str, Listing] = {}

    def __len__(self) -> int:
        return len(self._last)

    def changed(self, listing: Listing) -> bool:
        """True if `listing` is new or differs from the last one remembered; remember it."""
        last = self._last.get(listing.market_id)
        self._last[listing.market_id] = listing
        return last is None or not last.same_content(listing)

    def get(self, market_id: str) -> Listing | None:
        return self._last.get(market_id)

    def vanished(self, seen: set[str]) -> list[str]:
        """Markets remembered as live that `seen` (a complete listing's ids) does not name."""
        return [m for m, listing in self._last.items() if listing.status.live and m not in seen]

    def live(self) -> list[Listing]:
        return [listing for listing in self._last.values() if listing.status.live]

    def forget(self, market_id: str) -> None:
        self._last.pop(market_id, None)


class PmPollingConnector(Connector):
    """Poll one venue's listings and prices; subclasses say how its pages are fetched."""

    venue: ClassVar[str]

    def __init__(
        self, config: ConnectorConfig, limits: list[Limit], *, listing_carries_prices: bool
    ) -> None:
        """`listing_carries_prices`: a listing page has the prices (Kalshi's, Gamma's), so a
        refresh is a prices poll too."""
        super().__init__(config)
        self.listing_carries_prices = listing_carries_prices
        assert isinstance(config, PmPollingConfig)
        self.poll_cfg = config
        self.budget = RequestBudget(self.venue, limits)
        self.memory = ListingMemory()
        self.outcomes: Tally[str] = Tally()
        self.counts: Tally[str] = Tally()  # refreshes, listings, price_rows, rejected, vanished
        self.state = "idle"
        self.last_refresh_s: float | None = None

    @property
    def source(self) -> str:
        return self.venue

    @abc.abstractmethod
    def listing_pages(self, http: aiohttp.ClientSession) -> AsyncIterator[Page]:
        """Every page of the venue's current listing, in order (an unreadable one ends it)."""

    @abc.abstractmethod
    async def fetch_listing(
        self, http: aiohttp.ClientSession, market_id: str
    ) -> Listing | Rejected | None:
        """One market on its own (None: the venue no longer has it)."""

    @abc.abstractmethod
    def price_batches(self, http: aiohttp.ClientSession) -> AsyncIterator[PmPriceBatch | Rejected]:
        """The open markets' prices, a batch per response."""

    def remember_page(self, page: Page) -> None:
        """Keep what a subclass needs of a listing page for its price polls (tokens...)."""
        return None

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        timeout = aiohttp.ClientTimeout(total=self.poll_cfg.request_timeout_s)
        next_refresh_s = next_prices_s = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                while True:
                    now = time.monotonic()
                    if now >= next_refresh_s:
                        next_refresh_s = now + self.poll_cfg.refresh_s
                        async for item in self.refresh(http):
                            yield item
                        if self.listing_carries_prices:
                            next_prices_s = time.monotonic() + self.poll_cfg.prices_s
                    elif now >= next_prices_s:
                        next_prices_s = now + self.poll_cfg.prices_s
                        self.state = "polling prices"
                        async for priced in self.price_batches(http):
                            yield self._counted(priced)
                    else:
                        self.state = "waiting"
                        await asyncio.sleep(min(next_refresh_s, next_prices_s) - now)
        except (GeneratorExit, asyncio.CancelledError):
            self.state = "stopped"
            raise
        except BaseException:
            self.state = "failed"
            raise

    def _counted(self, item: PmPriceBatch | Rejected) -> PmPriceBatch | Rejected:
        if isinstance(item, Rejected):
            self.counts["rejected"] += 1
        else:
            self.counts["price_rows"] += len(item)
        return item

    async def refresh(self, http: aiohttp.ClientSession) -> AsyncIterator[Record | Rejected]:
        """One full listings refresh: changed listings, the pages' prices, vanished markets."""
        self.state = "refreshing"
        started_s, seen, complete, published = time.monotonic(), set[str](), True, 0
        async for page in self.listing_pages(http):
            seen |= page.seen
            complete &= page.complete
            self.remember_page(page)
            for item in page.items:
                if isinstance(item, Rejected):
                    self.counts["rejected"] += 1
                    yield item
                elif self.memory.changed(item):
                    published += 1
                    yield item
            if page.prices and self.listing_carries_prices:
                open_ids = {
                    item.market_id
                    for item in page.items
                    if isinstance(item, Listing) and item.status is ListingStatus.OPEN
                }
                if rows := [row for row in page.prices if row.market_id in open_ids]:
                    yield self._counted(self.batch(rows))
        vanished = self.memory.vanished(seen) if complete else []
        for market_id in vanished:
            found = await self.fetch_listing(http, market_id)
            if found is None:
                log.info("%s: %s is no longer listed; forgotten", self.venue, market_id)
                self.memory.forget(market_id)
            elif isinstance(found, Rejected):
                self.counts["rejected"] += 1
                yield found
            elif self.memory.changed(found):
                published += 1
                yield found
        self.counts["refreshes"] += 1
        self.counts["listings"] += published
        self.counts["vanished"] += len(vanished)
        self.last_refresh_s = time.monotonic() - started_s
        log.info(
            "%s: refresh %s in %.1f s: %d markets listed, %d published, %d vanished, budget %s",
            self.venue, "complete" if complete else "INCOMPLETE (a page was unreadable)",
            self.last_refresh_s, len(seen), published, len(vanished), self.budget.limits[0],
        )  # fmt: skip

    def batch(self, rows: list[PmPrice]) -> PmPriceBatch:
        return PmPriceBatch.from_rows(self.venue, rows)

    async def fetch(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        priority: Priority = Priority.LISTINGS,
        budget: RequestBudget | None = None,
    ) -> Response:
        """GET (or POST `json`) through the budget (the venue's, or `budget` for another of
        its hosts) until the venue answers other than 429; raise TransientError for 5xx, 408,
        timeouts and network errors."""
        budget = budget or self.budget
        while True:
            await budget.acquire(priority)
            try:
                request = (
                    http.get(url, params=params) if json is None else http.post(url, json=json)
                )
                async with request as response:
                    status, body = response.status, await response.read()
                    content_type = response.headers.get("Content-Type", "")
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.outcomes["transient"] += 1
                raise TransientError(
                    f"{self.venue}: cannot reach {url}: {exc or type(exc).__name__}"
                ) from exc
            self.heard_at_s = time.monotonic()
            if status == 429:
                wait_s = retry_after_s(retry_after)
                wait_s = budget.limits[0].window_s if wait_s is None else wait_s
                self.outcomes["rate_limited"] += 1
                log.warning(
                    "%s: rate limited on %s; asking again in %.2f s", self.venue, url, wait_s
                )
                budget.defer(wait_s)
                continue
            if status >= 500 or status == 408:
                self.outcomes["transient"] += 1
                raise TransientError(f"{self.venue}: {url} answered HTTP {status}")
            self.outcomes["ok" if status == 200 else f"http_{status}"] += 1
            return status, body, content_type

    def refused(self, url: str, response: Response) -> FatalError:
        """The error for a listing request the venue refused (400, 401, 403, 404...)."""
        status, body, _ = response
        return FatalError(f"{self.venue}: {url} answered HTTP {status}: {body[:200]!r}")

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        return {
            self.venue: {
                "state": self.state,
                "markets_known": len(self.memory),
                "refreshes": self.counts["refreshes"],
                "listings_published": self.counts["listings"],
                "price_rows": self.counts["price_rows"],
                "rejected": self.counts["rejected"],
                "vanished": self.counts["vanished"],
                "last_refresh_s": None
                if self.last_refresh_s is None
                else round(self.last_refresh_s, 2),
                "requests": dict(self.outcomes),
                "budget": ", ".join(str(limit) for limit in self.budget.limits),
                "budget_used": self.budget.used(),
            }
        }
