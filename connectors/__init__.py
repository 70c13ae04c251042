"""Provider connectors; each module turns one feed into domain records."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from connectors.base import Connector

CONNECTORS: Final[dict[str, str]] = {
    "alpaca": "connectors.alpaca:AlpacaConnector",
    "alphavantage": "connectors.alphavantage:AlphaVantageConnector",
    "failover": "connectors.failover:FailoverConnector",
    "finnhub": "connectors.finnhub:FinnhubConnector",
    "fmp": "connectors.fmp:FmpConnector",
    "kalshi": "connectors.kalshi:KalshiConnector",
    "polymarket": "connectors.polymarket:PolymarketConnector",
    "replay": "connectors.replay:ReplayConnector",
    "simulator": "connectors.simulator:SimulatorConnector",
    "yahoo": "connectors.yahoo:YahooConnector",
}


def connector_class(name: str) -> type[Connector]:
    """Import the connector registered as `name`; raise KeyError listing the valid names."""
    try:
        path = CONNECTORS[name]
    except KeyError:
        raise KeyError(
            f"unknown connector {name!r}; valid names: {', '.join(sorted(CONNECTORS))}"
        ) from None
    module, _, attr = path.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module), attr)
    return cls
