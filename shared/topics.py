"""Every Kafka topic of marketstream, declared once: name, partitions, retention, contract.

Names follow `md.<entity>[.<qualifier>].v<major>`. A breaking change to a topic's contract gets
a new `.vN` topic. `python -m streams topics create` makes them (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared import codec

DAY_MS: Final = 24 * 3600 * 1000

TRADES: Final = "md.trades.v1"
BARS: Final = "md.bars.v1"
BAR_BATCHES: Final = "md.bars.batch.v1"
DLQ: Final = "md.dlq.v1"
QUOTES: Final = "md.quotes.v1"
PROVIDER_BARS: Final = "md.provider_bars.v1"
FUNDAMENTALS: Final = "md.fundamentals.v1"
FEED_EVENTS: Final = "md.feed_events.v1"
GAPS: Final = "md.gaps.v1"
STATUSES: Final = "md.statuses.v1"
LISTINGS: Final = "md.listings.v1"
PM_PRICES: Final = "md.pm_prices.v1"
MATCHES: Final = "md.matches.v1"
ARBITRAGE: Final = "md.arbitrage.v1"
# Prediction markets are few and slow next to trades (tens of thousands of listings, a price
# row per outcome every few seconds), and nothing joins them with instruments: a fixed few
# partitions, the same for listings and prices so that a consumer of both gets a market's
# listing and its prices in the same partition number.
PM_PARTITIONS: Final = 3


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created, and which Avro record its values carry."""

    name: str
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    value_schema: str
    doc: str

    @property
    def subject(self) -> str:
        """The schema-registry subject of the values (Confluent's TopicNameStrategy)."""
        return f"{self.name}-value"

    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


def all_topics(trades_partitions: int) -> tuple[TopicSpec, ...]:
    """Return the specs of every topic; trades and bars share a partition count (co-partitioned)."""
    return (
        TopicSpec(
            TRADES,
            trades_partitions,
            7 * DAY_MS,
            "delete",
            codec.TRADE_BATCH,
            "Trade batches from every connector, partitioned by instrument (murmur2).",
        ),
        TopicSpec(
            BARS,
            trades_partitions,
            30 * DAY_MS,
            "delete",
            codec.BAR,
            "OHLCV bars and their revisions, keyed by instrument.",
        ),
        TopicSpec(
            BAR_BATCHES,
            trades_partitions,
            7 * DAY_MS,
            "delete",
            codec.BAR_BATCH,
            "The same bars as md.bars.v1, in columns: one message per input message that closed "
            "any, in its partition. What the database sink reads.",
        ),
        TopicSpec(
            QUOTES,
            trades_partitions,
            3 * DAY_MS,
            "delete",
            codec.QUOTE_BATCH,
            "Top-of-book quote batches, partitioned by instrument like the trades.",
        ),
        TopicSpec(
            PROVIDER_BARS,
            trades_partitions,
            30 * DAY_MS,
            "delete",
            codec.PROVIDER_BAR_BATCH,
            "Bars the providers computed (Alpaca's and their revisions, Yahoo's, Alpha "
            "Vantage's), in columns, partitioned by instrument like the trades.",
        ),
        TopicSpec(
            FUNDAMENTALS,
            trades_partitions,
            -1,
            "compact",
            codec.FUNDAMENTAL_STATEMENT,
            "Companies' financial statements per fiscal period, keyed "
            "symbol|statement|period|fiscal_date|provider and compacted: the latest report of each.",
        ),
        TopicSpec(
            FEED_EVENTS,
            1,
            30 * DAY_MS,
            "delete",
            codec.FEED_EVENT,
            "Connectors' disconnects and reconnects: where each feed was blind, for gap detection.",
        ),
        TopicSpec(
            GAPS,
            trades_partitions,
            30 * DAY_MS,
            "delete",
            codec.GAP,
            "Gaps: bars of an instrument and interval that should exist and do not, with the "
            "cause, keyed and partitioned by instrument like the trades; what backfill repairs.",
        ),
        TopicSpec(
            STATUSES,
            trades_partitions,
            30 * DAY_MS,
            "delete",
            codec.INSTRUMENT_STATUS,
            "Instruments' trading statuses from their providers (halts, pauses, resumptions), "
            "keyed and partitioned by instrument like the trades.",
        ),
        TopicSpec(
            LISTINGS,
            PM_PARTITIONS,
            -1,
            "compact",
            codec.LISTING,
            "Prediction-market listings (Kalshi, Polymarket): question, rules, close time, "
            "outcomes, status; keyed venue:market_id and compacted: the latest of each market.",
        ),
        TopicSpec(
            PM_PRICES,
            PM_PARTITIONS,
            3 * DAY_MS,
            "delete",
            codec.PM_PRICE_BATCH,
            "Prediction-market best bid and ask per outcome, as probabilities, in columns; "
            "partitioned by venue:market_id like md.listings.v1.",
        ),
        TopicSpec(
            MATCHES,
            PM_PARTITIONS,
            -1,
            "compact",
            codec.MATCH,
            "Cross-venue pairs of prediction markets that match or need review, with score, "
            "evidence and who decided; keyed kalshi:id|polymarket:id and compacted: the latest "
            "decision of each pair (no_match once a pair ended or a person rejected it).",
        ),
        TopicSpec(
            ARBITRAGE,
            PM_PARTITIONS,
            30 * DAY_MS,
            "delete",
            codec.ARBITRAGE,
            "Arbitrage on matched pairs: YES on one venue and NO on the other for less than 1 "
            "after fees; keyed pair|direction, a record when one opens, changes and closes.",
        ),
        TopicSpec(
            DLQ,
            1,
            30 * DAY_MS,
            "delete",
            codec.DEAD_LETTER,
            "Dead letters: input any component rejected, with the reason.",
        ),
    )


def subjects(trades_partitions: int = 1) -> dict[str, str]:
    """Return schema-registry subject -> schema name for every topic."""
    return {spec.subject: spec.value_schema for spec in all_topics(trades_partitions)}
