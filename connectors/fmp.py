"""Financial Modeling Prep: company fundamentals over its REST API, in a resumable refresh.

For each symbol, a refresh asks for the profile (/api/v3/profile/S), the income statement,
balance sheet and cash flow (/api/v3/income-statement/S?period=annual|quarter&limit=N, ...),
the ratios and the key metrics, and optionally the daily prices (/api/v3/historical-price-full/S),
one request at a time, each through the provider's RequestBudget (Priority.LISTINGS). It yields
one FundamentalStatement per statement and fiscal period (see connectors.fmp_statements).

Progress is kept in PostgreSQL (`fundamentals_refresh`), per run (`run_id`, by default the UTC
day): a (symbol, statement, period) is marked done once Kafka acknowledged every record it
yielded (the runner calls `delivered`); a restart skips what is done. A crash may repeat the
requests whose records were in flight, and publish those again, which the fundamentals
table's primary key (symbol, statement, period, fiscal_date, provider) makes harmless; it
never skips a request whose records were lost.

HTTP 429 (or FMP's "Limit Reach" body) defers the whole budget by Retry-After (else one window)
and asks again; nothing is skipped. A refused key (401, 403, "Invalid API KEY") is a FatalError
on one line that never shows the key (it travels as `apikey=`, FMP's documented way, and is
masked in every URL shown). An HTML page or an undecodable body is Rejected and the refresh goes
on (that unit stays undone, so the next run asks again); an empty list is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import quote, urlencode

import aiohttp
import psycopg
from prometheus_client import Counter, Gauge
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from connectors import fmp_statements as fs
from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.budget import Limit, Priority, RequestBudget
from connectors.retry_after import retry_after_s
from connectors.urls import http_url
from shared.errors import FatalError, TransientError
from shared.settings import DatabaseSettings

log = logging.getLogger(__name__)

BASE_URL: Final = "https://financialmodelingprep.com"
REFRESH_DONE: Final = Gauge("fmp_refresh_done", "Requests of the current FMP refresh run done.")
REFRESH_TOTAL: Final = Gauge("fmp_refresh_total", "Requests the current FMP refresh run makes.")
REQUESTS: Final = Counter(
    "fmp_requests",
    "Requests sent to FMP, by outcome (ok, empty, rejected, rate_limited, refused, transient).",
    ["outcome"],
)
CREATE_PROGRESS: Final = """
create table if not exists fundamentals_refresh (
    run_id    text        not null,
    symbol    text        not null,
    statement text        not null,
    period    text        not null,
    done_at   timestamptz not null default now(),
    primary key (run_id, symbol, statement, period)
)
"""
DONE_SQL: Final = "select symbol, statement, period from fundamentals_refresh where run_id = %s"
MARK_SQL: Final = """
insert into fundamentals_refresh (run_id, symbol, statement, period) values (%s, %s, %s, %s)
on conflict do nothing
"""


class FmpConfig(ConnectorConfig):
    model_config = SettingsConfigDict(
        env_prefix="MS_FMP_", extra="forbid", populate_by_name=True, loc_by_alias=False
    )

    base_url: str = Field(default=BASE_URL, description="FMP's base URL, without /api/v3")
    # FMP_API_KEY is the name operators (and FMP's own examples) already use.
    api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("MS_FMP_API_KEY", "FMP_API_KEY"),
        validate_default=True,
        description="the FMP API key (FMP_API_KEY or MS_FMP_API_KEY)",
    )
    symbols: str = Field(default="", description="comma-separated tickers, e.g. AAPL,MSFT")
    symbols_file: Path | None = Field(default=None, description="tickers, one a line (# comments)")
    statements: str = Field(default=",".join(fs.STATEMENTS), description="which statements")
    periods: str = Field(default=",".join(fs.PERIODS), description="annual, quarter or both")
    annual_limit: int = Field(default=10, ge=1, le=1000, description="years per request")
    quarter_limit: int = Field(default=40, ge=1, le=1000, description="quarters per request")
    prices: bool = Field(default=False, description="also the daily prices, as 1d bars")
    price_days: int = Field(default=365, ge=1, description="days of prices (timeseries=)")
    rate_limit: int = Field(default=120, gt=0, description="requests per rate window (the plan's)")
    rate_window_s: float = Field(default=60.0, gt=0, description="the plan's window, in seconds")
    daily_limit: int | None = Field(default=None, gt=0, description="requests a day (free: 250)")
    run_id: str = Field(
        default_factory=lambda: datetime.now(UTC).date().isoformat(),
        min_length=1,
        description="names a refresh; a restart with the same id resumes it (default: UTC day)",
    )
    database_url: SecretStr = Field(
        default=DatabaseSettings.model_fields["url"].default,
        validation_alias=AliasChoices("MS_FMP_DATABASE_URL", "MS_DATABASE_URL"),
        description="where the refresh's progress is kept",
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline for one request")
    progress_interval_s: float = Field(default=30.0, gt=0, description="progress log period")

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, key: SecretStr) -> SecretStr:
        if not key.get_secret_value().strip():
            raise ValueError("no FMP API key: set FMP_API_KEY (or MS_FMP_API_KEY)")
        return SecretStr(key.get_secret_value().strip())

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url, "apikey", "FMP_API_KEY")

    @field_validator("statements", "periods")
    @classmethod
    def _known(cls, text: str, info: ValidationInfo) -> str:
        known = fs.STATEMENTS if info.field_name == "statements" else fs.PERIODS
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or set(names) - set(known):
            raise ValueError(f"{text!r}: choose from {', '.join(known)}")
        return ",".join(dict.fromkeys(names))

    @model_validator(mode="after")
    def _some_symbols(self) -> FmpConfig:
        self.tickers()
        return self

    def tickers(self) -> list[str]:
        """`symbols` then the lines of `symbols_file`, upper-cased, each once."""
        lines: list[str] = []
        if self.symbols_file is not None:
            try:
                lines = self.symbols_file.read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"cannot read symbols_file {self.symbols_file}: {exc}") from exc
        return fs.parse_tickers(self.symbols, lines)


class RefreshProgress:
    """The units of a refresh run already done, in PostgreSQL; psycopg errors become
    TransientError, so the runner reconnects and the refresh resumes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def open(self, run_id: str) -> set[fs.Unit]:
        """Connect, create the table if need be, and return the units `run_id` has done."""
        try:
            self._connection = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=10
            )
            await self._connection.execute(CREATE_PROGRESS)
            cursor = await self._connection.execute(DONE_SQL, (run_id,))
            return {fs.Unit(*row) for row in await cursor.fetchall()}
        except psycopg.Error as exc:
            raise TransientError(f"fmp: cannot read the refresh progress: {exc}") from exc

    async def mark(self, run_id: str, unit: fs.Unit) -> None:
        assert self._connection is not None, "not open"
        try:
            await self._connection.execute(
                MARK_SQL, (run_id, unit.symbol, unit.statement, unit.period)
            )
        except psycopg.Error as exc:
            raise TransientError(f"fmp: cannot record {unit} as done: {exc}") from exc

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


class RefreshStats:
    """Counts of one connector's refreshes, for logs, metrics and `provider_stats`."""

    def __init__(self) -> None:
        self.state = "idle"
        self.run_id = ""
        self.total = self.done = self.skipped = self.records = 0
        self.outcomes: Tally[str] = Tally()
        self.units: Tally[str] = Tally()  # units answered empty or rejected
        self.started_s = 0.0
        self._sent_s: deque[float] = deque()

    def start(self, run_id: str, total: int, done: int) -> None:
        self.state, self.run_id, self.total = "refreshing", run_id, total
        self.done = self.skipped = done
        self.started_s = time.monotonic()
        REFRESH_TOTAL.set(total)
        REFRESH_DONE.set(done)

    def sent(self) -> None:
        self._sent_s.append(time.monotonic())

    def answered(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        REQUESTS.labels(outcome).inc()

    def mark_done(self) -> None:
        self.done += 1
        REFRESH_DONE.set(self.done)

    def per_minute(self) -> int:
        """Requests sent in the last 60 s."""
        while self._sent_s and self._sent_s[0] < time.monotonic() - 60:
            self._sent_s.popleft()
        return len(self._sent_s)

    def eta_s(self) -> float | None:
        """Seconds until done at this run's pace so far (None before its first unit)."""
        finished = self.done - self.skipped
        if finished <= 0:
            return None
        return (time.monotonic() - self.started_s) / finished * (self.total - self.done)


class FmpConnector(Connector):
    name: ClassVar[str] = "fmp"
    Config: ClassVar[type[ConnectorConfig]] = FmpConfig

    def __init__(self, config: ConnectorConfig, *, budget: RequestBudget | None = None) -> None:
        """`budget`: the provider's shared one, if others call FMP too; else one from settings."""
        super().__init__(config)
        assert isinstance(config, FmpConfig)
        self.cfg = config
        limits = [Limit(config.rate_limit, config.rate_window_s)]
        if config.daily_limit is not None:
            limits.append(Limit(config.daily_limit, 86_400.0))
        self.budget = budget or RequestBudget(fs.SOURCE, limits)
        self.stats = RefreshStats()
        self._logged_s = 0.0
        # units whose records are yielded, by record, until Kafka acknowledged them all
        self._unit_of: dict[int, fs.Unit] = {}
        self._unacknowledged: dict[fs.Unit, int] = {}
        self._acknowledged: list[fs.Unit] = []  # complete, to mark done

    def delivered(self, item: Record) -> None:
        unit = self._unit_of.pop(id(item), None)
        if unit is None:
            return
        self._unacknowledged[unit] -= 1
        if not self._unacknowledged[unit]:
            del self._unacknowledged[unit]
            self._acknowledged.append(unit)

    async def _mark_acknowledged(self, progress: RefreshProgress, run_id: str) -> None:
        """Mark done the units whose records Kafka acknowledged."""
        while self._acknowledged:
            unit = self._acknowledged.pop(0)
            await progress.mark(run_id, unit)
            self.stats.mark_done()

    def units(self) -> list[fs.Unit]:
        return fs.units(
            self.cfg.tickers(),
            self.cfg.statements.split(","),
            self.cfg.periods.split(","),
            prices=self.cfg.prices,
        )

    async def stream(self) -> AsyncIterator[fs.Item]:
        run_id = self.cfg.run_id
        progress = RefreshProgress(self.cfg.database_url.get_secret_value())
        try:
            done = await progress.open(run_id)
            every = self.units()
            pending = [unit for unit in every if unit not in done]
            self.stats.start(run_id, len(every), len(every) - len(pending))
            log.info(
                "fmp: refresh %s: %d requests of %d to go (%d symbols), budget %s",
                run_id, len(pending), len(every), len(self.cfg.tickers()), self.budget.limits[0],
            )  # fmt: skip
            timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                for unit in pending:
                    parsed = await self._fetch(http, unit)
                    if parsed.complete:
                        if parsed.items:
                            self._unacknowledged[unit] = len(parsed.items)
                            self._unit_of |= {id(item): unit for item in parsed.items}
                        else:
                            self._acknowledged.append(unit)  # nothing to wait for
                    for item in parsed.items:
                        yield item
                    await self._mark_acknowledged(progress, run_id)
                    self._log_progress()
                await self._mark_acknowledged(progress, run_id)
            self.stats.state = "finished"
            self._log_progress(final=True)
        except (GeneratorExit, asyncio.CancelledError):
            self.stats.state = "stopped"
            raise
        except BaseException:
            self.stats.state = "failed"
            raise
        finally:
            await progress.close()

    async def _fetch(self, http: aiohttp.ClientSession, unit: fs.Unit) -> fs.Parsed:
        """Ask FMP for `unit` until it answers other than 429; raise FatalError if the key or
        the request is refused, TransientError for 5xx, timeouts and network errors."""
        path, query = fs.request_of(
            unit,
            annual_limit=self.cfg.annual_limit,
            quarter_limit=self.cfg.quarter_limit,
            price_days=self.cfg.price_days,
        )
        url = f"{self.cfg.base_url}{path}"
        shown = f"{url}?{urlencode({**query, 'apikey': '***'}, safe='*')}"
        params = {**query, "apikey": self.cfg.api_key.get_secret_value()}
        while True:
            await self.budget.acquire(Priority.LISTINGS)
            self.stats.sent()
            try:
                async with http.get(url, params=params) as response:
                    status, body = response.status, await response.read()
                    content_type = response.headers.get("Content-Type", "")
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.answered("transient")
                cause = self._redact(str(exc) or type(exc).__name__)
                message = f"fmp {unit}: cannot reach {shown}: {cause}"
                raise TransientError(message) from self._chained(exc)
            self.heard_at_s = time.monotonic()
            parsed = fs.Parsed()
            if status == 200:
                parsed = fs.parse_unit(body, unit, time.time_ns() // 1000, content_type)
            said = self._redact(parsed.error or ("" if status == 200 else fs.error_text(body)))
            if status in (401, 403) or (parsed.error and fs.KEY_REFUSED.search(parsed.error)):
                self.stats.answered("refused")
                raise FatalError(
                    f"FMP refused the API key (HTTP {status}: {said}) for {shown}: "
                    "set a valid FMP_API_KEY or MS_FMP_API_KEY"
                )
            if status == 429 or (parsed.error and fs.LIMIT_REACHED.search(parsed.error)):
                wait_s = retry_after_s(retry_after)
                wait_s = self.budget.limits[0].window_s if wait_s is None else wait_s
                self.stats.answered("rate_limited")
                log.warning(
                    "fmp: rate limited on %s (%s); asking again in %.1f s", unit, said, wait_s
                )
                self.budget.defer(wait_s)
                continue
            if status >= 500 or status == 408:
                self.stats.answered("transient")
                raise TransientError(f"fmp {unit}: FMP answered HTTP {status}: {said}")
            if status == 402:  # FMP: "Premium Query Parameter", not in the plan
                parsed = fs.Parsed((Rejected("not_in_plan", f"HTTP 402: {said}", body),))
            elif status != 200:
                self.stats.answered("refused")
                raise FatalError(f"fmp: {shown} answered HTTP {status}: {said}")
            return self._counted(unit, parsed)

    def _counted(self, unit: fs.Unit, parsed: fs.Parsed) -> fs.Parsed:
        if not parsed.complete:
            self.stats.answered("rejected")
            self.stats.units["rejected"] += 1
            reasons = ", ".join(sorted({i.reason for i in parsed.items if isinstance(i, Rejected)}))
            log.warning("fmp: %s rejected (%s); the next run asks again", unit, reasons)
        elif not parsed.items:
            self.stats.answered("empty")
            self.stats.units["empty"] += 1
            log.info("fmp: %s: FMP has none", unit)
        else:
            self.stats.answered("ok")
            self.stats.records += parsed.records
        return parsed

    def _chained(self, exc: BaseException) -> BaseException | None:
        """`exc` as the cause to chain, unless its text shows the key (one naming the URL)."""
        return None if self.cfg.api_key.get_secret_value() in f"{exc!s}{exc!r}" else exc

    def _redact(self, text: str) -> str:
        key = self.cfg.api_key.get_secret_value()
        return text.replace(key, "***").replace(quote(key, safe=""), "***")

    def _log_progress(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._logged_s < self.cfg.progress_interval_s:
            return
        self._logged_s = now
        eta = self.stats.eta_s()
        log.info(
            "fmp: refresh %s %s: %d/%d requests done, %d requests in the last minute (budget %s)%s",
            self.stats.run_id, self.stats.state, self.stats.done, self.stats.total,
            self.stats.per_minute(), self.budget.limits[0],
            "" if eta is None or final else f", ETA {eta:.0f} s",
        )  # fmt: skip

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        s = self.stats
        eta = s.eta_s()
        return {
            fs.SOURCE: {
                "state": s.state,
                "run_id": s.run_id,
                "done": s.done,
                "total": s.total,
                "skipped": s.skipped,
                "records": s.records,
                "requests": sum(s.outcomes.values()),
                "outcomes": dict(s.outcomes),
                "empty_units": s.units["empty"],
                "rejected_units": s.units["rejected"],
                "requests_last_minute": s.per_minute(),
                "budget": ", ".join(str(limit) for limit in self.budget.limits),
                "budget_used": self.budget.used(),
                "eta_s": None if eta is None else round(eta, 1),
            }
        }
