"""Yahoo Finance: bars polled from the chart API, one batch per symbol and poll.

Every `poll_s` the connector asks `GET {base_url}/v8/finance/chart/{symbol}?interval=..&range=..
&includePrePost=true|false` for each symbol (no key), through a RequestBudget (60 requests a
minute by default), and yields one ProviderBarBatch per answer holding only the bars that are
new or whose values changed since the last poll: the still-forming current bar comes again
with revision 1, 2 ... (see connectors.polled_bars). The parsing is in connectors.yahoo_chart.

What Yahoo answers besides data: HTTP 429 "Too Many Requests" when it throttles (yfinance's
YFRateLimitError; it also throttles clients without a browser-like User-Agent, see
https://github.com/karlwancl/YahooFinanceApi/issues/73): the budget is deferred by its
Retry-After (else `rate_limit_wait_s`) and the poll raises TransientError. An unknown symbol
gets HTTP 404 with `chart.error` "Not Found": a Rejected on every poll, logged once. A
maintenance page ("Will be right back", HTML; yfinance checks for it) is rejected too. HTTP
5xx, timeouts and network errors are TransientError. The bars seen so far live on the
connector, so a reconnect neither loses nor repeats any.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.budget import Limit, Priority, RequestBudget
from connectors.polled_bars import BarRevisions, provider_batch
from connectors.retry_after import retry_after_s
from connectors.urls import http_url
from connectors.yahoo_chart import INTERVALS, ChartError, MalformedChartError, parse_chart
from shared.errors import TransientError
from shared.symbols import well_formed_symbols

log = logging.getLogger(__name__)

BASE_URL: Final = "https://query1.finance.yahoo.com"
SOURCE: Final = "yahoo"
Interval = Literal["1m", "5m", "15m", "1h", "1d"]
ChartRange = Literal["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
USER_AGENT: Final = "Mozilla/5.0 (X11; Linux x86_64) marketstream/0.1"
MAX_PAYLOAD: Final = 1 << 16  # bytes of a rejected body kept in its dead letter


class RateLimitedError(TransientError):
    """HTTP 429: the budget waits `retry_after_s` seconds before the next request."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class YahooConfig(ConnectorConfig):
    model_config = SettingsConfigDict(env_prefix="MS_YAHOO_", extra="forbid")

    base_url: str = Field(default=BASE_URL, description="the chart API's host, without a path")
    symbols: str = Field(
        default="AAPL,MSFT,SPY",
        min_length=1,
        description="comma-separated symbols as Yahoo names them, e.g. AAPL,^GSPC,BRK-B",
    )
    interval: Interval = Field(default="1m", description="bar interval, as we name it (1h: 60m)")
    range: ChartRange = Field(default="1d", description="how far back each poll asks (Yahoo's)")
    include_pre_post: bool = Field(default=True, description="pre- and post-market bars too")
    poll_s: float = Field(default=60.0, gt=0, description="seconds from one poll to the next")
    budget_requests: int = Field(default=60, gt=0, description="requests allowed per window")
    budget_window_s: float = Field(default=60.0, gt=0, description="the budget's window")
    rate_limit_wait_s: float = Field(
        default=60.0, ge=0, description="wait after a 429 that names no Retry-After"
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="deadline for one request")
    user_agent: str = Field(default=USER_AGENT, min_length=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)

    @field_validator("symbols")
    @classmethod
    def _well_formed(cls, text: str) -> str:
        return well_formed_symbols(text)


class YahooConnector(Connector):
    name: ClassVar[str] = "yahoo"
    Config: ClassVar[type[ConnectorConfig]] = YahooConfig

    def __init__(self, config: ConnectorConfig, *, budget: RequestBudget | None = None) -> None:
        """`budget`: the one Yahoo budget of the process, if others call Yahoo too."""
        super().__init__(config)
        assert isinstance(config, YahooConfig)
        self.cfg = config
        self.symbols = tuple(config.symbols.split(","))
        self.budget = budget or RequestBudget(
            SOURCE, [Limit(config.budget_requests, config.budget_window_s)]
        )
        self.revisions = BarRevisions()
        self.counts: Counter[str] = Counter()  # polls, rate_limited, rejected, nulls, ...
        self._errors_logged: set[tuple[str, str]] = set()

    def chart_url(self, symbol: str) -> str:
        return f"{self.cfg.base_url}/v8/finance/chart/{quote(symbol, safe='')}"

    def _params(self) -> dict[str, str]:
        return {
            "interval": INTERVALS[self.cfg.interval],
            "range": self.cfg.range,
            "includePrePost": "true" if self.cfg.include_pre_post else "false",
        }

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        return {
            SOURCE: {
                "state": "polling",
                "requests": self.budget.granted,
                "budget_used": self.budget.used(),
                **dict(self.counts),
            }
        }

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        headers = {"User-Agent": self.cfg.user_agent, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            log.info(
                "yahoo: polling %s every %g s (%s bars, range %s, pre/post %s) at %s",
                ",".join(self.symbols),
                self.cfg.poll_s,
                self.cfg.interval,
                self.cfg.range,
                self.cfg.include_pre_post,
                self.cfg.base_url,
            )
            while True:
                started = time.monotonic()
                for symbol in self.symbols:
                    for item in await self._poll(session, symbol):
                        yield item
                await asyncio.sleep(max(0.0, started + self.cfg.poll_s - time.monotonic()))

    async def _poll(self, session: aiohttp.ClientSession, symbol: str) -> list[Record | Rejected]:
        """Ask for one symbol's chart: its new or changed bars as one batch, and what was
        rejected. Raise RateLimitedError on 429, TransientError when Yahoo cannot answer."""
        url = self.chart_url(symbol)
        await self.budget.acquire(Priority.LIVE)
        try:
            async with session.get(url, params=self._params()) as response:
                status, body = response.status, await response.read()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            cause = str(exc) or type(exc).__name__
            raise TransientError(f"cannot reach Yahoo at {url}: {cause}") from exc
        ts_recv_us = time.time_ns() // 1000
        self.heard_at_s = time.monotonic()
        self.counts["polls"] += 1
        if status == 429:
            said = retry_after_s(retry_after)
            wait_s = self.cfg.rate_limit_wait_s if said is None else said
            self.budget.defer(wait_s)
            self.counts["rate_limited"] += 1
            raise RateLimitedError(
                f"Yahoo rate limit reached (HTTP 429 for {symbol}); no request for {wait_s:g} s",
                wait_s,
            )
        if status >= 500 or status in (401, 403, 408):
            # 401/403: Yahoo refuses this client for now (no key to blame); 5xx: Yahoo is down
            raise TransientError(f"Yahoo answered HTTP {status} for {symbol} at {url}")
        try:
            chart = parse_chart(
                body, symbol, self.cfg.interval, include_pre_post=self.cfg.include_pre_post
            )
        except ChartError as exc:
            reason = "unknown_symbol" if exc.code == "Not Found" else "provider_error"
            return [self._reject(symbol, reason, f"HTTP {status}: {exc}", body)]
        except MalformedChartError as exc:
            return [self._reject(symbol, exc.reason, f"HTTP {status}: {exc}", body)]
        if status != 200:
            return [self._reject(symbol, "http_error", f"HTTP {status} with a chart", body)]
        self.counts["nulls_skipped"] += chart.nulls
        self.counts["outside_regular"] += chart.outside_regular
        self.counts["rejected"] += len(chart.rejected)
        rows, revisions = self.revisions.update(symbol, chart.bars)
        batch = provider_batch(
            source=self.source,
            provider=SOURCE,
            interval=self.cfg.interval,
            instrument=symbol,
            bars=chart.bars,
            rows=rows,
            revisions=revisions,
            ts_recv_us=ts_recv_us,
        )
        return [*chart.rejected, batch]

    def _reject(self, symbol: str, reason: str, detail: str, body: bytes) -> Rejected:
        """A Rejected for a whole answer; its kind is logged once per symbol."""
        self.counts["rejected"] += 1
        if (symbol, reason) not in self._errors_logged:
            self._errors_logged.add((symbol, reason))
            log.warning("yahoo: %s rejected (%s): %s", symbol, reason, detail)
        return Rejected(reason, f"{symbol}: {detail}", body[:MAX_PAYLOAD])
