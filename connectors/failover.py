"""One feed from several providers: each instrument served by the first healthy one in its list.

Every provider runs its own session (reconnect with backoff, the stale watchdog) for all the
instruments that list it, so a backup is warm and a recovering primary is seen recovering.
Per provider, a health score over a sliding window and a circuit breaker (connectors.health):
a fatal error (a refused key) opens the breaker at once, repeated transient ones after the
threshold; an open breaker is retried by one probe session after `open_s`, never in a loop.

An instrument is served by the first provider of its list whose breaker is closed and whose
score is at least `min_score`, re-judged as data arrives and every `RESELECT_S`. The overlap
is deduplicated deterministically: once an instrument moves, the new provider's trades of it
count only after the last event time forwarded from the old one. A provider's trades of
instruments it does not serve are kept for `overlap_s`, so that what the new provider sent
while the old one was failing (before the move) is forwarded from there: no gap, no repeat.

The batches carry the failover's `source` (one event-time clock, so an instrument moved in a
minute gets one bar of that minute) and the `provider` that served them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.batching import take_rows
from connectors.health import BreakerState, CircuitBreaker, ProviderHealth
from connectors.runner import backoff_s
from connectors.universe import Universe, active, latest_universe, read_universe_file
from connectors.watchdog import StaleFeedError, watched
from shared.errors import ConfigError, FatalError, TransientError
from shared.metrics import (
    PROVIDER_CIRCUIT_STATE,
    PROVIDER_HEALTH_SCORE,
    PROVIDER_LATENCY,
    PROVIDER_REQUESTS,
    PROVIDER_SELECTED,
)
from shared.models import QuoteBatch, TradeBatch
from shared.settings import DatabaseSettings

log = logging.getLogger(__name__)

RESELECT_S: Final = 0.2
SEAM_US: Final = 1000  # the seam's precision: a millisecond, the coarsest providers stamp
MAX_UNSERVED_TRADES: Final = 500_000  # per provider, kept to resume from
NEVER_US: Final = np.iinfo(np.int64).min


class FailoverConfig(ConnectorConfig):
    model_config = SettingsConfigDict(
        env_prefix="MS_FAILOVER_", extra="forbid", populate_by_name=True
    )

    providers: str = Field("finnhub,alpaca", description="providers, in order of preference")
    symbols: str = Field("AAPL,MSFT", description="instruments, each served by `providers`")
    universe_file: Path | None = Field(
        None,
        description="CSV with columns symbol and providers (in order, separated by |), and "
        "optionally exchange, asset_type, tier, active; replaces --symbols and --providers",
    )
    universe_from_db: bool = Field(
        False, description="the latest universe loaded into the database (connectors universe)"
    )
    database_url: SecretStr = Field(
        DatabaseSettings.model_fields["url"].default,
        validation_alias=AliasChoices("MS_FAILOVER_DATABASE_URL", "MS_DATABASE_URL"),
        description="where the universe is, with --universe-from-db",
    )
    source: str = Field("failover", min_length=1, description="the feed's event-time clock")
    secrets_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("MS_FAILOVER_SECRETS_DIR", "MS_CONNECTOR_SECRETS_DIR"),
        description="a mounted Secret: the providers' keys as files named like their variables",
    )
    failure_threshold: int = Field(3, ge=1, description="transient failures in a row: open")
    open_s: float = Field(30.0, gt=0, description="an open breaker's wait before its probe")
    max_open_s: float = Field(600.0, gt=0, description="the longest wait after failed probes")
    window_s: float = Field(60.0, gt=0, description="the health score's window")
    latency_budget_s: float = Field(2.0, gt=0, description="feed delay that still scores 1")
    stale_after_s: float = Field(30.0, gt=0, description="no data this long lowers the score")
    min_score: float = Field(0.5, ge=0, le=1, description="the least score that serves")
    return_after_s: float = Field(
        10.0, ge=0, description="how long a recovered provider must stay usable to take back"
    )
    overlap_s: float = Field(
        120.0,
        ge=0,
        description="how long unserved trades are kept: at least how long a failing provider "
        "takes to be judged unusable (a silent one: 1.5 x stale_after_s; a dead socket: the "
        "watchdog and the backoff)",
    )


def load_universe(config: FailoverConfig) -> Universe:
    """Each active instrument and its providers in order: from the latest version in the
    database, the file, or the symbols and providers settings; raise ConfigError if unusable."""
    if config.universe_from_db:
        version, universe = latest_universe(config.database_url.get_secret_value())
        log.info("universe version %d: %d instruments", version, len(universe))
        return universe
    if config.universe_file is not None:
        return active(read_universe_file(config.universe_file, "MS_FAILOVER_UNIVERSE_FILE"))
    providers = [p.strip() for p in config.providers.split(",") if p.strip()]
    return {s.strip(): providers for s in config.symbols.split(",") if s.strip()}


@dataclass
class _Provider:
    name: str
    connector: Connector
    health: ProviderHealth
    breaker: CircuitBreaker
    unserved: deque[tuple[float, TradeBatch]] = field(default_factory=deque)  # (arrived, batch)
    unserved_trades: int = 0


class FailoverConnector(Connector):
    name: ClassVar[str] = "failover"
    Config: ClassVar[type[ConnectorConfig]] = FailoverConfig

    def __init__(
        self, config: ConnectorConfig, providers: Mapping[str, Connector] | None = None
    ) -> None:
        """`providers` by name; by default each is built from its settings (MS_<NAME>_*),
        with the symbols of the instruments that list it."""
        super().__init__(config)
        assert isinstance(config, FailoverConfig)
        self.cfg = config
        self.universe = load_universe(config)
        names = list(dict.fromkeys(p for order in self.universe.values() for p in order))
        built = dict(providers) if providers is not None else self._build(names)
        self.providers = {
            name: _Provider(
                name,
                built[name],
                ProviderHealth(config.window_s, config.latency_budget_s, config.stale_after_s),
                CircuitBreaker(config.failure_threshold, config.open_s, config.max_open_s),
            )
            for name in names
        }
        self.selected: dict[str, str] = {}
        self.resume_after_us: dict[str, int] = {}  # per instrument: its last move's seam
        self.last_us: dict[str, int] = {}  # per instrument: the last event time forwarded
        self._usable_since: dict[str, float] = {}  # per provider: usable without a break since

    def _build(self, names: list[str]) -> dict[str, Connector]:
        from connectors import connector_class

        built = {}
        for name in names:
            cls = connector_class(name)
            mine = [s for s, order in self.universe.items() if name in order]
            try:
                config = cls.Config(  # type: ignore[call-arg]
                    symbols=",".join(mine), _secrets_dir=self.cfg.secrets_dir
                )
            except ValidationError as exc:
                problems = "; ".join(str(e["msg"]) for e in exc.errors())
                raise ConfigError(f"failover: invalid {name} settings: {problems}") from exc
            built[name] = cls(config)
        return built

    @property
    def source(self) -> str:
        return self.cfg.source

    @property
    def synthetic(self) -> bool:
        return any(p.connector.synthetic for p in self.providers.values())

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        queue: asyncio.Queue[tuple[str, Record | Rejected]] = asyncio.Queue(maxsize=1024)
        feeds = [asyncio.create_task(self._feed(p, queue)) for p in self.providers.values()]
        try:
            for out in self._reselect():
                yield out
            next_reselect = time.monotonic() + RESELECT_S
            while True:
                try:
                    async with asyncio.timeout(RESELECT_S):
                        name, item = await queue.get()
                except TimeoutError:
                    name, item = "", None
                if time.monotonic() >= next_reselect or item is None:
                    next_reselect = time.monotonic() + RESELECT_S
                    for out in self._reselect():
                        yield out
                if item is not None:
                    for routed in self._route(self.providers[name], item):
                        yield routed
        finally:
            for task in feeds:
                task.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        served: dict[str, int] = {}
        for provider in self.selected.values():
            served[provider] = served.get(provider, 0) + 1
        return {
            p.name: {
                "state": p.breaker.state.name.lower(),
                "health_score": round(p.health.score, 3),
                "error_rate": round(p.health.error_rate, 3),
                "staleness_s": p.health.staleness_s,
                "instruments_served": served.get(p.name, 0),
                "errors": dict(p.health.errors),
                "last_error": p.breaker.reason,
            }
            for p in self.providers.values()
        }

    async def _feed(
        self, provider: _Provider, queue: asyncio.Queue[tuple[str, Record | Rejected]]
    ) -> None:
        """Run the provider's sessions for as long as the failover runs."""
        rng, attempt = random.Random(), 0
        while True:
            while not provider.breaker.may_try():
                await asyncio.sleep(0.05)
            provider.health.session_started()  # freshness counts from here, data or not
            try:
                async for item in watched(provider.connector):
                    attempt = 0
                    if isinstance(item, TradeBatch) and len(item):
                        delay_s = max(0.0, float(np.mean(item.ts_recv_us - item.ts_event_us)) / 1e6)
                        provider.health.data()
                        provider.health.success(delay_s)
                        PROVIDER_LATENCY.labels(provider.name).observe(delay_s)
                        if provider.breaker.state is not BreakerState.CLOSED:
                            log.info("%s recovered: its circuit is closed", provider.name)
                        provider.breaker.success()  # failures count in a row
                        PROVIDER_REQUESTS.labels(provider.name, "ok").inc()
                    await queue.put((provider.name, item))
                raise TransientError(f"{provider.name} ended its stream")
            except FatalError as exc:
                self._failed(provider, "fatal", str(exc), fatal=True)
                log.error(
                    "%s is down: %s; its instruments fail over, one probe in %.0f s",
                    provider.name,
                    exc,
                    provider.breaker.open_s,
                )
            except Exception as exc:  # transient, or a defect of ours: failing either way
                unexpected = not isinstance(exc, TransientError)
                kind = "stale" if isinstance(exc, StaleFeedError) else "transient"
                if unexpected:
                    self._failed(provider, "error", repr(exc))
                else:
                    self._failed(provider, kind, str(exc))
                delay = backoff_s(attempt, rng)
                attempt += 1
                log.log(
                    logging.ERROR if unexpected else logging.WARNING,
                    "%s failed (%s); reconnecting in %.2f s",
                    provider.name,
                    exc,
                    delay,
                    exc_info=unexpected,
                )
                await asyncio.sleep(delay)

    @staticmethod
    def _failed(provider: _Provider, kind: str, reason: str, *, fatal: bool = False) -> None:
        """Count a failure of `kind` in the provider's health, breaker and metrics."""
        provider.health.failure(kind)
        provider.breaker.failure(reason, fatal=fatal)
        PROVIDER_REQUESTS.labels(provider.name, kind).inc()

    def _reselect(self) -> list[TradeBatch]:
        """Move instruments whose provider should change; return what the new providers sent
        of them after the seam while they were not serving them.

        An instrument leaves its provider as soon as that is unusable, for the first usable one
        of its list; it returns to a provider higher in its list only once that has been usable
        for `return_after_s` (no flapping on a score that hovers at the threshold)."""
        now = time.monotonic()
        settled: dict[str, bool] = {}
        usable: dict[str, bool] = {}
        for name, provider in self.providers.items():
            score, state = provider.health.score, provider.breaker.state  # one pass each
            PROVIDER_HEALTH_SCORE.labels(name).set(score)
            PROVIDER_CIRCUIT_STATE.labels(name).set(int(state))
            usable[name] = state is BreakerState.CLOSED and score >= self.cfg.min_score
            if not usable[name]:
                self._usable_since.pop(name, None)
            since = self._usable_since.setdefault(name, now) if usable[name] else now
            settled[name] = usable[name] and now - since >= self.cfg.return_after_s
        moved: dict[tuple[str | None, str], set[str]] = {}
        for instrument, order in self.universe.items():
            current = self.selected.get(instrument)
            best: str | None
            if current is not None and usable[current]:
                ahead = order[: order.index(current)]
                best = next((n for n in ahead if settled[n]), current)
            else:
                best = next((n for n in order if usable[n]), current)
            if best is None or best == current:
                continue
            self.selected[instrument] = best
            self.resume_after_us[instrument] = self.last_us.get(instrument, NEVER_US)
            moved.setdefault((current, best), set()).add(instrument)
        catch_up = []
        for (current, best), instruments in moved.items():
            PROVIDER_SELECTED.labels(best).inc(len(instruments))
            if current is not None:
                log.warning("%d instruments: %s -> %s", len(instruments), current, best)
            provider = self.providers[best]
            for _, batch in provider.unserved:
                catch_up += self._forward(provider, batch, only=instruments)
        return catch_up

    def _route(self, provider: _Provider, item: Record | Rejected) -> list[Record | Rejected]:
        if isinstance(item, Rejected):
            return [dataclasses.replace(item, detail=f"{provider.name}: {item.detail}")]
        if isinstance(item, QuoteBatch):  # the serving provider's quotes, like its trades
            serving = np.array(
                [self.selected.get(s) == provider.name for s in item.instruments], dtype=bool
            )
            rows = np.flatnonzero(serving[item.instrument_index])
            if not len(rows):
                return []
            quotes = item.select(rows)
            return [dataclasses.replace(quotes, source=self.source, provider=provider.name)]
        if not isinstance(item, TradeBatch):
            return [item]  # provider bars, statements: the provider's own, whoever serves
        if not len(item):
            return []  # heartbeats: the runner keeps this feed's own clock
        now = time.monotonic()
        provider.unserved.append((now, item))
        provider.unserved_trades += len(item)
        while provider.unserved and (
            provider.unserved[0][0] < now - self.cfg.overlap_s
            or provider.unserved_trades > MAX_UNSERVED_TRADES
        ):
            provider.unserved_trades -= len(provider.unserved.popleft()[1])
        return list(self._forward(provider, item))

    def _forward(
        self, provider: _Provider, batch: TradeBatch, only: set[str] | None = None
    ) -> list[TradeBatch]:
        """The trades of `batch` this provider serves, after each instrument's seam, as this
        feed's batch; `only` narrows them to some instruments. (Only the seam filters: a
        provider's late trades after it are kept, as its bars expect.)"""
        serving = np.array(
            [
                self.selected.get(s) == provider.name and (only is None or s in only)
                for s in batch.instruments
            ]
        )
        seam = np.array(
            [self.resume_after_us.get(s, NEVER_US) for s in batch.instruments], dtype=np.int64
        )
        index = batch.instrument_index
        # providers stamp to the ms (Finnhub) or finer: the seam is judged at the coarsest
        after = batch.ts_event_us // SEAM_US > seam[index] // SEAM_US
        rows = np.flatnonzero(serving[index] & after)
        if not len(rows):
            return []
        out = take_rows(batch, rows)
        latest = np.full(len(out.instruments), NEVER_US, dtype=np.int64)
        np.maximum.at(latest, out.instrument_index, out.ts_event_us)
        for instrument, ts in zip(out.instruments, latest.tolist(), strict=True):
            if ts > self.last_us.get(instrument, NEVER_US):
                self.last_us[instrument] = ts
        return [dataclasses.replace(out, source=self.source, provider=provider.name)]
