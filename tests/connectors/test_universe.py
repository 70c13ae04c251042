"""The symbol universe: a CSV loaded into PostgreSQL as versions; the failover serves the latest."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
from conftest import run_module

from connectors.alpaca import AlpacaConfig, AlpacaConnector
from connectors.failover import FailoverConfig, FailoverConnector
from connectors.finnhub import FinnhubConfig, FinnhubConnector

HEADER = "symbol,exchange,asset_type,tier,active,providers\n"
FIRST = HEADER + (
    "AAPL,NASDAQ,stock,T0,true,finnhub|alpaca\n"
    "BRK.B,NYSE,stock,T1,true,alpaca|finnhub\n"
    "GME,NYSE,stock,T2,false,finnhub\n"
)


def _load(path: Path, database_url: str) -> dict[str, object]:
    done = run_module(
        ["connectors", "universe", "load", str(path)], {"MS_DATABASE_URL": database_url}
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, object] = orjson.loads(done.stdout.splitlines()[-1])
    return loaded


def test_universe_load_adds_a_version_only_when_the_content_changes(
    tmp_path: Path, database_url: str
) -> None:
    # Arrange
    path = tmp_path / "universe.csv"
    path.write_text(FIRST)

    # Act: the same file twice, then with MSFT added
    first, again = _load(path, database_url), _load(path, database_url)
    path.write_text(FIRST + "MSFT,NASDAQ,stock,T0,true,finnhub|alpaca\n")
    second = _load(path, database_url)

    # Assert
    assert (first["version"], first["new"], again["version"], again["new"]) == (1, True, 1, False)
    assert second == {
        "version": 2,
        "new": True,
        "instruments": 4,
        "active_by_tier": {"T0": 2, "T1": 1},
    }
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select symbol, tier, active, providers from symbol_universe where version = 2"
            " order by symbol"
        ).fetchall()
    assert rows[0] == ("AAPL", "T0", True, ["finnhub", "alpaca"])
    assert ("GME", "T2", False, ["finnhub"]) in rows and len(rows) == 4


def test_universe_load_bad_tier_names_the_line_and_exits_2(
    tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "universe.csv"
    path.write_text(
        HEADER + "AAPL,NASDAQ,stock,T0,true,finnhub\nTSLA,NASDAQ,stock,T9,true,alpaca\n"
    )

    done = run_module(
        ["connectors", "universe", "load", str(path)], {"MS_DATABASE_URL": database_url}
    )

    assert done.returncode == 2 and "line 3: tier 'T9' is not one of T0, T1, T2" in done.stderr
    assert "Traceback" not in done.stderr


def test_failover_from_the_database_serves_the_latest_versions_active_instruments(
    tmp_path: Path, database_url: str
) -> None:
    # Arrange: two versions loaded
    path = tmp_path / "universe.csv"
    path.write_text(FIRST)
    _load(path, database_url)
    path.write_text(
        HEADER + "MSFT,NASDAQ,stock,T0,true,alpaca|finnhub\nGME,NYSE,stock,T2,false,finnhub\n"
    )
    _load(path, database_url)
    providers = {
        "finnhub": FinnhubConnector(FinnhubConfig(api_key="unused", symbols="MSFT")),
        "alpaca": AlpacaConnector(AlpacaConfig(symbols="MSFT")),
    }

    # Act
    failover = FailoverConnector(
        FailoverConfig(universe_from_db=True, database_url=database_url), providers
    )

    # Assert: the second version's active instrument only, in its order
    assert failover.universe == {"MSFT": ["alpaca", "finnhub"]}
