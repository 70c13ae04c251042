"""Statements a connector publishes reach the `fundamentals` table through `sink_fundamentals`;
a restatement replaces the stored one, an older report never does."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import ClassVar

import orjson
import psycopg
from conftest import at_least, read_topic

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from connectors.runner import ConnectorRunner
from shared.codec import Codec
from shared.models import FundamentalStatement
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.topics import DLQ, TRADES

RECEIVED_US = 1_764_547_200_000_000  # 2025-12-01T00:00:00Z


def _statement(symbol: str, fiscal_date: str, revenue: int, filed_us: int) -> FundamentalStatement:
    body = {"date": fiscal_date, "symbol": symbol, "revenue": revenue, "period": "FY"}
    return FundamentalStatement(
        symbol=symbol,
        statement="income_statement",
        period="annual",
        fiscal_date=fiscal_date,
        provider="fmp",
        body=orjson.dumps(body),
        ts_event_us=filed_us,
        ts_recv_us=RECEIVED_US,
    )


STATEMENTS = [
    _statement("AAPL", "2024-09-28", 391_035_000_000, 1_730_419_200_000_000),
    _statement("AAPL", "2023-09-30", 383_285_000_000, 1_698_969_600_000_000),
    _statement("MSFT", "2024-06-30", 245_122_000_000, 1_722_470_400_000_000),
    # a restatement of AAPL 2023, filed later, then a stale copy of the first report
    _statement("AAPL", "2023-09-30", 383_300_000_000, 1_730_419_200_000_000),
    _statement("AAPL", "2023-09-30", 383_285_000_000, 1_698_969_600_000_000),
]
# jsonb refuses a NUL character: a row the database refuses for good, sent last
REFUSED = dataclasses.replace(
    _statement("MSFT", "2023-06-30", 211_915_000_000, 1_690_848_000_000_000),
    body=b'{"date": "2023-06-30", "note": "\\u0000"}',
)


class _Statements(Connector):
    name: ClassVar[str] = "statements"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        for statement in [*STATEMENTS, REFUSED]:
            yield statement


async def test_sink_fundamentals_upserts_by_key_keeping_the_latest_filing(
    bootstrap: str,
    codec: Codec,
    database_url: str,
    start_worker,  # type: ignore[no-untyped-def]
) -> None:
    # Arrange: the sink worker; the statements through the connector runner
    start_worker(MS_WORKER_AGENTS="sink_fundamentals")
    publisher = Publisher(KafkaSettings(bootstrap=bootstrap).producer_config("statements"))
    runner = ConnectorRunner(
        _Statements(ConnectorConfig()),
        publisher,
        codec,
        partitions=publisher.partitions(TRADES),
        batch_max_trades=100,
        linger_ms=5,
    )

    # Act
    summary = await runner.run()

    # Assert: the refused row is a dead letter, published once every row before it is written
    assert summary.statements == len(STATEMENTS) + 1
    (message,) = read_topic(bootstrap, DLQ, at_least(1), timeout_s=60)
    letter = codec.decode_dead_letter(message.value())
    assert (letter.component, letter.reason) == ("worker.sink_fundamentals", "refused_by_database")
    assert codec.decode_fundamental(letter.payload).fiscal_date == "2023-06-30"
    # three rows, AAPL 2023 as restated, never rolled back by the older copy sent after it
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select symbol, fiscal_date::text, (body->>'revenue')::bigint, ts_event"
            " from fundamentals order by symbol, fiscal_date"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("AAPL", "2023-09-30", 383_300_000_000),
        ("AAPL", "2024-09-28", 391_035_000_000),
        ("MSFT", "2024-06-30", 245_122_000_000),
    ]
