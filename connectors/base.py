"""The connector interface: turn one provider's feed into domain records; no Kafka here."""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Final

from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import FatalError, TransientError
from streams.models import Trade, TradeBatch

__all__ = ["Connector", "ConnectorConfig", "FatalError", "Record", "Rejected", "TransientError"]

MAX_SYMBOL_LENGTH: Final = 64
_SYMBOL: Final = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_SYMBOL_LENGTH}}}")

Record = Trade | TradeBatch


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that did not parse: becomes a dead letter with this reason code and detail."""

    reason: str
    detail: str
    payload: bytes
    line_number: int | None = None


def symbol_problem(symbol: str) -> str | None:
    """Return why `symbol` is not a well-formed instrument symbol, or None if it is.

    Well formed: 1 to 64 characters, none of them whitespace or control characters. Any such
    symbol is accepted (BRK.B, BTC-USD, ES=F, ^GSPC, EUR/USD, KXHIGHNY-24DEC01-B45).
    """
    if not symbol:
        return "empty symbol"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"symbol longer than {MAX_SYMBOL_LENGTH} characters"
    if not _SYMBOL.fullmatch(symbol):
        return f"symbol {symbol[:MAX_SYMBOL_LENGTH]!r} contains whitespace or control characters"
    return None


class ConnectorConfig(BaseSettings):
    """Base of every connector's settings: unknown keys are errors, never silently dropped."""

    model_config = SettingsConfigDict(extra="forbid")


class Connector(abc.ABC):
    """Turn one provider's feed into domain records; knows nothing about Kafka."""

    name: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]]

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config  # no sockets, tasks or event loop here

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

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[Record | Rejected]:
        """Yield records until the feed ends; raise TransientError to be reconnected."""
