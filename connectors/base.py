"""The connector interface: turn one provider's feed into domain records; no Kafka here."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import FatalError, TransientError
from shared.models import (
    FundamentalStatement,
    InstrumentStatus,
    Listing,
    PmPriceBatch,
    ProviderBarBatch,
    QuoteBatch,
    Trade,
    TradeBatch,
)
from shared.settings import SYNTHETIC_SOURCES

__all__ = ["Connector", "ConnectorConfig", "FatalError", "Record", "Rejected", "TransientError"]

Record = (
    Trade
    | TradeBatch
    | QuoteBatch
    | ProviderBarBatch
    | FundamentalStatement
    | InstrumentStatus
    | Listing
    | PmPriceBatch
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that did not parse: becomes a dead letter with this reason code and detail."""

    reason: str
    detail: str
    payload: bytes
    line_number: int | None = None


class ConnectorConfig(BaseSettings):
    """Base of every connector's settings: unknown keys are errors, never silently dropped."""

    model_config = SettingsConfigDict(extra="forbid")


class Connector(abc.ABC):
    """Turn one provider's feed into domain records; knows nothing about Kafka."""

    name: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]]

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config  # no sockets, tasks or event loop here
        # time.monotonic() of the last frame heard, of any kind: the stale watchdog counts
        # silence from it too (0: the connector does not say)
        self.heard_at_s = 0.0

    @property
    def source(self) -> str:
        """The source stamped on every batch: the name of its event-time clock in the bars.

        Bars keep a clock per source, so two feeds (or two replays) never judge each other's
        trades late.
        """
        return self.name

    @property
    def origin(self) -> str:
        """Where the input comes from, as named in dead letters (a provider, a file)."""
        return self.name

    @property
    def live(self) -> bool:
        """True if event time follows the wall clock (see connectors.event_clock)."""
        return True

    @property
    def synthetic(self) -> bool:
        """True if it makes its data up (refused under MS_REAL_DATA_ONLY=true)."""
        return self.source in SYNTHETIC_SOURCES

    @property
    def stale_after_s(self) -> float | None:
        """Silence for this long while `expects_data` means a dead feed (None: never judged)."""
        return None

    def expects_data(self, now: datetime) -> bool:
        """Whether the feed should be sending at `now` (its market trades), so that silence
        means a dead socket rather than a quiet market."""
        return True

    def delivered(self, item: Record) -> None:
        """Kafka acknowledged every message of `item` (a statement or provider bars the
        runner published; not trades, which are batched). May be called from the thread
        that flushes at shutdown. Most connectors need not know."""
        return None

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        """Per provider it uses: state, health and errors, for `GET /stats/providers`."""
        return {}

    def closes_clock(self, finished: bool) -> bool:
        """Whether the runner, as the run ends, advances its source's clock past every window
        (closing every bar it opened): for a feed on its own data clock, once it has finished."""
        return finished and not self.live

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[Record | Rejected]:
        """Yield records until the feed ends; raise TransientError to be reconnected."""
