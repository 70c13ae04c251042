"""Prometheus metrics shared by every process, registered once in the default registry."""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

DEAD_LETTERS: Final = Counter(
    "dead_letters", "Inputs rejected to the dead-letter topic.", ["component", "reason"]
)
TRADES_PUBLISHED: Final = Counter(
    "trades_published", "Trades acknowledged by Kafka (acks=all).", ["source"]
)
BATCHES_PUBLISHED: Final = Counter(
    "trade_batches_published", "TradeBatch messages acknowledged by Kafka.", ["source"]
)
DELIVERY_FAILURES: Final = Counter(
    "delivery_failures", "Messages Kafka did not acknowledge after retries.", ["topic"]
)
TRADES_PROCESSED: Final = Counter(
    "trades_processed", "Trades decoded by a worker agent.", ["agent"]
)
BATCH_SIZE: Final = Histogram(
    "trade_batch_size",
    "Trades per TradeBatch message produced.",
    ["source"],
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000),
)
RECONNECTS: Final = Counter(
    "connector_reconnects",
    "Times a connector was restarted after a transient error.",
    ["connector"],
)
STALE_FEEDS: Final = Counter(
    "connector_stale_feeds",
    "Feeds silent while their market trades, then reconnected.",
    ["connector"],
)
PROVIDER_SELECTED: Final = Counter(
    "provider_selected", "Instruments moved to a provider by failover (or back).", ["provider"]
)
PROVIDER_HEALTH_SCORE: Final = Gauge(
    "provider_health_score", "A provider's health, 0 to 1, over its window.", ["provider"]
)
PROVIDER_CIRCUIT_STATE: Final = Gauge(
    "provider_circuit_state", "A provider's circuit: 0 closed, 1 half-open, 2 open.", ["provider"]
)
PROVIDER_LATENCY: Final = Histogram(
    "provider_latency_seconds",
    "A provider's data delay: its trades' receive time minus their event time, mean of a batch.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_REQUESTS: Final = Counter(
    "provider_requests",
    "Sessions and requests to a provider, by outcome (ok, transient, fatal, stale).",
    ["provider", "outcome"],
)
GAPS_FOUND: Final = Counter(
    "gaps_found", "Gaps in the bars found and recorded (each once).", ["interval", "tier"]
)
BACKFILL_QUEUE_DEPTH: Final = Gauge(
    "backfill_queue_depth", "Backfill jobs queued or running, by tier.", ["tier"]
)
BACKFILL_OLDEST_AGE: Final = Gauge(
    "backfill_oldest_age_seconds", "Age of the oldest open backfill job, by tier.", ["tier"]
)
BACKFILL_JOBS: Final = Counter(
    "backfill_jobs",
    "Backfill attempts ended, by outcome: done, retried (queued again) or failed (dead-lettered).",
    ["outcome"],
)
INGESTION_LAG: Final = Gauge(
    "ingestion_lag_seconds",
    "Now minus the end of the latest bar stored, by interval.",
    ["interval"],
)
WRITE_BATCH_MS: Final = Histogram(
    "write_batch_ms",
    "Time to write one flush of bars to the database, ms.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
SLO_GAP_VIOLATION_RATE: Final = Gauge(
    "slo_gap_violation_rate",
    "Share of the expected windows of the sweep's horizon inside gaps longer than twice the"
    " interval (continuity SLO: under 0.005 for T0).",
    ["tier", "interval"],
)
LISTINGS_READ: Final = Counter(
    "listings", "Prediction-market listings the matcher read (new or changed), by venue.", ["venue"]
)
MATCHES_DECIDED: Final = Counter(
    "matches",
    "Pairs given a decision (a new match or review pair, or a changed decision), by decision.",
    ["decision"],
)
ARBITRAGE_OPEN: Final = Gauge("arbitrage_open", "Arbitrage opportunities open now.")
MATCHING_RUN_SECONDS: Final = Histogram(
    "matching_run_seconds",
    "Duration of a full matching run: every stored listing re-matched by the batch join.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UP: Final = Gauge("marketstream_up", "1 while the process runs.", ["component"])
BARS_EMITTED: Final = Counter(
    "bars_emitted", "Bars published: first emissions and revisions.", ["interval", "kind"]
)
BAR_EMIT_DELAY: Final = Histogram(
    "bar_emit_delay_seconds",
    "Wall time from window end + grace to emission: the latest bar of each message and interval.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
BARS_SUNK: Final = Counter("bars_sunk", "Bar rows merged into the database.")
SINK_RETRIES: Final = Counter("sink_retries", "Database writes retried after a transient error.")
WS_CLIENTS: Final = Gauge("ws_clients", "Connected WebSocket clients.")
WS_PUBLISH_LATENCY: Final = Histogram(
    "ws_publish_latency_ms",
    "Bar emitted (on md.bars.v1) to frame sent, oldest bar of each frame; once per frame "
    "built, which clients in the same state share.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
WS_DROPPED: Final = Counter("ws_dropped_messages", "Messages not sent to a client.", ["reason"])
WS_BUFFER_MESSAGES: Final = Gauge(
    "ws_replay_buffer_messages", "Messages held in the replay buffer."
)
WS_BUFFER_BYTES: Final = Gauge("ws_replay_buffer_bytes", "Encoded bytes held in the replay buffer.")
WS_BUFFER_EVICTIONS: Final = Counter(
    "ws_replay_buffer_evictions",
    "Replay buffer entries evicted, oldest of the largest channels, to stay under "
    "MS_WS_BUFFER_MAX_BYTES.",
)
WS_SOURCE_WAIT: Final = Counter(
    "ws_source_wait_seconds",
    "Time the gateway's Kafka readers waited for its event loop or its writer to take what "
    "they had read (what is unread stays on Kafka): the gateway is not keeping up.",
    ["lane"],
)
WS_AUTH_FAILURES: Final = Counter(
    "ws_auth_failures", "Connections refused for a bad or missing API key."
)
API_AUTH_FAILURES: Final = Counter(
    "api_auth_failures", "HTTP API requests refused for a bad or missing API key."
)
WS_BAD_REQUESTS: Final = Counter("ws_bad_requests", "Client messages refused as malformed.")
WS_HISTORY_FAILURES: Final = Counter(
    "ws_history_failures", "Snapshots served without older bars: the database did not answer."
)
API_REQUESTS: Final = Counter(
    "api_requests", "HTTP API requests answered, by route template and status.", ["route", "status"]
)
API_REQUEST_SECONDS: Final = Histogram(
    "api_request_duration_seconds",
    "HTTP API request handling time, by route template.",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_RATE_LIMITED: Final = Counter(
    "api_rate_limited", "HTTP API requests refused (429): their key was over its rate.", ["route"]
)
AGENT_MESSAGES: Final = Counter(
    "agent_messages",
    "Kafka messages an agent took from its topic (each may hold a batch).",
    ["agent", "topic"],
)
CONSUMER_LAG: Final = Gauge(
    "consumer_lag_messages",
    "Messages a worker's consumer group is behind the end of each partition it reads.",
    ["group", "topic", "partition"],
)


class AckedMessages(Collector):
    """`kafka_messages_acked_total{topic}`: what the process's producers got acknowledged.

    Read from the producers' own tallies when scraped, so that the hot path pays nothing per
    message for it.
    """

    def __init__(self) -> None:
        self._tallies: weakref.WeakValueDictionary[int, Mapping[str, int]] = (
            weakref.WeakValueDictionary()
        )

    def track(self, tally: Tally[str]) -> None:
        self._tallies[id(tally)] = tally

    def collect(self) -> Iterator[CounterMetricFamily]:
        totals: Tally[str] = Tally()
        for tally in list(self._tallies.values()):
            totals.update(dict(tally))  # one C-level copy: delivery callbacks may add topics
        family = CounterMetricFamily(
            "kafka_messages_acked", "Messages Kafka acknowledged (acks=all).", labels=["topic"]
        )
        for topic, count in sorted(totals.items()):
            family.add_metric([topic], count)
        yield family


ACKED_MESSAGES: Final = AckedMessages()
REGISTRY.register(ACKED_MESSAGES)
