"""Alpha Vantage: intraday bars polled from TIME_SERIES_INTRADAY, one batch per symbol and poll.

Every `poll_s` the connector asks `GET {base_url}?function=TIME_SERIES_INTRADAY&symbol=..
&interval=1min|5min|15min|30min|60min&outputsize=compact&extended_hours=true&apikey=KEY` for
each symbol, through a RequestBudget of the free plan's limits by default (5 a minute, 25 a
day), and yields one ProviderBarBatch per answer holding only the bars that are new or whose
values changed since the last poll (see connectors.polled_bars). The series' local times
("6. Time Zone", US/Eastern) become UTC with zoneinfo; the parsing is in
connectors.alphavantage_series.

Alpha Vantage answers its rate limits with HTTP 200 and a Note or Information body: they are
counted, never taken for data and never fatal; the budget is deferred to the start of the next
minute (or second, for its per-second burst limit), or to the next UTC midnight when the note
speaks of the daily limit, and the same symbol is asked again. "Error Message" (a bad symbol
or parameter) and a body that is not JSON are a Rejected for that symbol. A refused key (its
documented answer: "the parameter apikey is invalid or missing") is a FatalError. The key
goes in the query, as Alpha Vantage requires, so every URL logged or raised shows
`apikey=***`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.alphavantage_series import (
    INTERVALS,
    ApiMessageError,
    KeyRefusedError,
    LimitNote,
    MalformedResponseError,
    limit_wait_s,
    parse_intraday,
)
from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.budget import GUARD_S, Limit, Priority, RequestBudget
from connectors.polled_bars import BarRevisions, provider_batch
from connectors.retry_after import retry_after_s
from connectors.urls import http_url
from shared.errors import FatalError, TransientError
from shared.symbols import well_formed_symbols

log = logging.getLogger(__name__)

BASE_URL: Final = "https://www.alphavantage.co/query"
SOURCE: Final = "alphavantage"
Interval = Literal["1m", "5m", "15m", "30m", "1h"]
MAX_PAYLOAD: Final = 1 << 16  # bytes of a rejected body kept in its dead letter
KEY_VARIABLES: Final = "ALPHA_VANTAGE_API_KEY or MS_ALPHAVANTAGE_API_KEY"


class RateLimitedError(TransientError):
    """HTTP 429 (not Alpha Vantage's documented way, but a proxy's): the budget waits."""


class AlphaVantageConfig(ConnectorConfig):
    model_config = SettingsConfigDict(
        env_prefix="MS_ALPHAVANTAGE_", extra="forbid", populate_by_name=True, loc_by_alias=False
    )

    base_url: str = Field(default=BASE_URL, description="the query endpoint, without parameters")
    symbols: str = Field(default="AAPL,MSFT,SPY", min_length=1, description="comma-separated")
    interval: Interval = Field(default="1m", description="bar interval, as we name it (1h: 60min)")
    outputsize: Literal["compact", "full"] = Field(
        default="compact", description="compact: the latest 100 points; full: the whole month"
    )
    extended_hours: bool = Field(default=True, description="pre- and post-market bars too")
    # ALPHA_VANTAGE_API_KEY is the name operators already use.
    api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("MS_ALPHAVANTAGE_API_KEY", "ALPHA_VANTAGE_API_KEY"),
        validate_default=True,
        description=f"the Alpha Vantage API key ({KEY_VARIABLES})",
    )
    poll_s: float = Field(default=60.0, gt=0, description="seconds from one poll to the next")
    minute_requests: int = Field(default=5, gt=0, description="requests allowed per minute")
    minute_window_s: float = Field(default=60.0, gt=0, description="the minute limit's window")
    day_requests: int = Field(default=25, gt=0, description="requests allowed per day")
    day_window_s: float = Field(default=86_400.0, gt=0, description="the daily limit's window")
    rate_limit_wait_s: float = Field(default=60.0, ge=0, description="after a bare HTTP 429")
    request_timeout_s: float = Field(default=10.0, gt=0, description="deadline for one request")

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, key: SecretStr) -> SecretStr:
        if not key.get_secret_value().strip():
            raise ValueError(f"no Alpha Vantage API key: set {KEY_VARIABLES}")
        return SecretStr(key.get_secret_value().strip())

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url, "apikey", KEY_VARIABLES)

    @field_validator("symbols")
    @classmethod
    def _well_formed(cls, text: str) -> str:
        return well_formed_symbols(text)


class AlphaVantageConnector(Connector):
    name: ClassVar[str] = "alphavantage"
    Config: ClassVar[type[ConnectorConfig]] = AlphaVantageConfig

    def __init__(self, config: ConnectorConfig, *, budget: RequestBudget | None = None) -> None:
        """`budget`: the one Alpha Vantage budget of the process, if others call it too."""
        super().__init__(config)
        assert isinstance(config, AlphaVantageConfig)
        self.cfg = config
        self.symbols = tuple(config.symbols.split(","))
        self.budget = budget or RequestBudget(
            SOURCE,
            [
                Limit(config.minute_requests, config.minute_window_s),
                Limit(config.day_requests, config.day_window_s),
            ],
        )
        self.revisions = BarRevisions()
        self.counts: Counter[str] = Counter()  # polls, limit_notes, limit_notes_day, rejected ..
        self._errors_logged: set[tuple[str, str]] = set()

    def _params(self, symbol: str, key: str) -> dict[str, str]:
        return {
            "function": "TIME_SERIES_INTRADAY",
            "symbol": symbol,
            "interval": INTERVALS[self.cfg.interval],
            "outputsize": self.cfg.outputsize,
            "extended_hours": "true" if self.cfg.extended_hours else "false",
            "apikey": key,
        }

    def shown_url(self, symbol: str) -> str:
        """The request URL for `symbol` with the key masked: the only form ever logged."""
        return f"{self.cfg.base_url}?{urlencode(self._params(symbol, '***'), safe='*')}"

    def _redact(self, text: str) -> str:
        key = self.cfg.api_key.get_secret_value()
        return text.replace(key, "***").replace(quote(key, safe=""), "***")

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        return {
            SOURCE: {
                "state": "polling",
                "requests": self.budget.granted,
                "budget_used_minute": self.budget.used(0),
                "budget_used_day": self.budget.used(1),
                **dict(self.counts),
            }
        }

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        headers = {"Accept": "application/json"}
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            log.info(
                "alphavantage: polling %s every %g s at %s",
                ",".join(self.symbols),
                self.cfg.poll_s,
                self.shown_url(self.symbols[0]),
            )
            while True:
                started = time.monotonic()
                for symbol in self.symbols:
                    for item in await self._poll(session, symbol):
                        yield item
                await asyncio.sleep(max(0.0, started + self.cfg.poll_s - time.monotonic()))

    async def _poll(self, session: aiohttp.ClientSession, symbol: str) -> list[Record | Rejected]:
        """Ask for one symbol's series until it is not a rate-limit note: its new or changed
        bars as one batch, and what was rejected. Raise FatalError for a refused key,
        TransientError when Alpha Vantage cannot answer."""
        key = self.cfg.api_key.get_secret_value()
        while True:
            await self.budget.acquire(Priority.LIVE)
            try:
                params = self._params(symbol, key)
                async with session.get(self.cfg.base_url, params=params) as response:
                    status, body = response.status, await response.read()
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                cause = str(exc) or type(exc).__name__
                message = f"cannot reach Alpha Vantage at {self.shown_url(symbol)}: "
                if key in cause:  # the key stays out of the chain of causes too
                    raise TransientError(message + self._redact(cause)) from None
                raise TransientError(message + cause) from exc
            ts_recv_us = time.time_ns() // 1000
            self.heard_at_s = time.monotonic()
            self.counts["polls"] += 1
            if status == 429:
                said = retry_after_s(retry_after)
                self.budget.defer(self.cfg.rate_limit_wait_s if said is None else said)
                self.counts["rate_limited"] += 1
                raise RateLimitedError(f"Alpha Vantage answered HTTP 429 for {symbol}")
            if status >= 500 or status == 408:
                raise TransientError(f"Alpha Vantage answered HTTP {status} for {symbol}")
            try:
                parsed = parse_intraday(body, symbol, self.cfg.interval)
            except KeyRefusedError as exc:
                raise FatalError(
                    f"Alpha Vantage refused the API key at {self.shown_url(symbol)} "
                    f"({self._redact(str(exc))}): set a valid {KEY_VARIABLES}"
                ) from None
            except ApiMessageError as exc:
                reason = "provider_error" if exc.kind == "Error Message" else "provider_message"
                return [self._reject(symbol, reason, self._redact(str(exc)), body)]
            except MalformedResponseError as exc:
                return [self._reject(symbol, exc.reason, f"HTTP {status}: {exc}", body)]
            if isinstance(parsed, LimitNote):
                self._on_limit_note(symbol, parsed)
                continue
            if status != 200:
                return [self._reject(symbol, "http_error", f"HTTP {status} with a series", body)]
            self.counts["rejected"] += len(parsed.rejected)
            rows, revisions = self.revisions.update(symbol, parsed.bars)
            batch = provider_batch(
                source=self.source,
                provider=SOURCE,
                interval=self.cfg.interval,
                instrument=symbol,
                bars=parsed.bars,
                rows=rows,
                revisions=revisions,
                ts_recv_us=ts_recv_us,
            )
            return [*parsed.rejected, batch]

    def _on_limit_note(self, symbol: str, note: LimitNote) -> None:
        """Hold every request back until the limit the note speaks of opens again, and a little
        longer (GUARD_S), as Alpha Vantage's clock reads the arrival, not our send."""
        wait_s = GUARD_S + limit_wait_s(
            note.scope, time.time(), self.cfg.minute_window_s, self.cfg.day_window_s
        )
        self.budget.defer(wait_s)
        self.counts["limit_notes"] += 1
        self.counts[f"limit_notes_{note.scope}"] += 1
        log.warning(
            "alphavantage: rate limit note (per %s) for %s: no request for %.1f s: %s",
            note.scope,
            symbol,
            wait_s,
            self._redact(note.text),
        )

    def _reject(self, symbol: str, reason: str, detail: str, body: bytes) -> Rejected:
        """A Rejected for a whole answer; its kind is logged once per symbol."""
        self.counts["rejected"] += 1
        if (symbol, reason) not in self._errors_logged:
            self._errors_logged.add((symbol, reason))
            log.warning("alphavantage: %s rejected (%s): %s", symbol, reason, detail)
        return Rejected(reason, f"{symbol}: {detail}", body[:MAX_PAYLOAD])
