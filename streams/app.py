"""The one Faust application, built from settings by `create_app`.

Faust reads its configuration the first time a topic or agent is declared, so the app is built
in a function, after settings are loaded, and each agent module installs its agents on it
(`AGENTS`, an explicit map, in the spirit of Faust's autodiscover). Importing an agent module
does no I/O and reads no environment.

A worker runs every agent by default; `MS_WORKER_AGENTS` picks some, so that the agents can run
in processes of their own (the sink beside the bar aggregator uses the second core). Faust's
partition assignor expects every member of a consumer group to run the same agents, so a worker
that runs a subset joins a group of its own, named after the subset.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import faust
import psycopg
from aiohttp import web
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.codec import Codec
from shared.errors import TransientError
from shared.metrics import UP
from shared.publisher import Publisher
from shared.settings import SYNTHETIC_SOURCES, DatabaseSettings, KafkaSettings
from shared.status import database_check, kafka_check, listen, serve_socket, status_app
from shared.topics import (
    BAR_BATCHES,
    FEED_EVENTS,
    FUNDAMENTALS,
    LISTINGS,
    PM_PRICES,
    QUOTES,
    STATUSES,
    TRADES,
)
from streams.consumer_metrics import AgentThroughput, export_lag
from streams.decoded import DecodedTradeBatches
from streams.faust_transport import Transport

log = logging.getLogger(__name__)

DELIVERY_POLL_S: Final = 0.05
REFREEZE_AFTER_S: Final = 10.0
# Faust's consumer runs in a thread of its own and hands every fetch to the event loop; a
# thread that gave up the GIL (for I/O, a poll, a kernel) waits for the holder's switch
# interval to take it back, so the worker process shortens that interval (streams.__main__).
GIL_SWITCH_INTERVAL_S: Final = 0.001


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """Where an agent is declared (a module whose install(worker) does it), and how long its
    fetches may wait at the broker (ms): short where someone watches the output live, long
    for the sink, which writes in batches; fewer fetches cost the broker less."""

    module: str
    fetch_max_wait_ms: int


AGENTS: Final = {
    "tally_trades": AgentSpec("streams.stats.agent", 100),
    "aggregate_bars": AgentSpec("streams.bars.agent", 10),
    "sink_bars": AgentSpec("streams.sink.agent", 500),
    "sink_fundamentals": AgentSpec("streams.fundamentals.agent", 500),
    "store_dead_letters": AgentSpec("streams.dead_letters.agent", 500),
    "track_prices": AgentSpec("streams.prices.agent", 100),
    "detect_gaps": AgentSpec("streams.gaps.agent", 500),
    "match_markets": AgentSpec("streams.markets.agent", 100),
    "flag_arbitrage": AgentSpec("streams.arbitrage.agent", 50),
}


class WorkerSettings(BaseSettings):
    """Settings of the worker process."""

    model_config = SettingsConfigDict(env_prefix="MS_WORKER_", extra="forbid")

    app_id: str = Field("marketstream", min_length=1)
    agents: str = ",".join(AGENTS)
    http_host: str = "127.0.0.1"
    http_port: int = Field(6066, ge=0, le=65535)
    data_dir: str = ".run/worker-data"
    log_level: str = "INFO"
    # Tansu holds a JoinGroup for about half the session timeout, so a short one starts and
    # recovers the worker in seconds; production Kafka may want longer.
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(0.5, gt=0)
    commit_interval_s: float = Field(0.5, gt=0)
    # How long a fetch waits for data on partitions that have none (Faust hard-codes 1500 ms);
    # unset, the shortest wait the worker's agents ask for (AgentSpec.fetch_max_wait_ms).
    fetch_max_wait_ms: int | None = Field(None, ge=0, le=60_000)
    # How often the worker measures its group's lag (consumer_lag_messages): admin requests.
    lag_interval_s: float = Field(15.0, gt=0)

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(AGENTS))
        if unknown or not names:
            raise ValueError(
                f"unknown agents {unknown or value!r}; choose from {', '.join(AGENTS)}"
            )
        return ",".join(name for name in AGENTS if name in names)

    @property
    def agent_names(self) -> list[str]:
        return self.agents.split(",")

    @property
    def fetch_wait_ms(self) -> int:
        """The fetch wait: MS_WORKER_FETCH_MAX_WAIT_MS, else the shortest its agents ask for."""
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return min(AGENTS[name].fetch_max_wait_ms for name in self.agent_names)

    @property
    def group_id(self) -> str:
        """The Faust app id and consumer group: `app_id`, suffixed when running a subset."""
        if self.agent_names == list(AGENTS):
            return self.app_id
        return f"{self.app_id}.{'+'.join(self.agent_names)}"


@dataclass(frozen=True)
class Worker:
    """The app and what its agents share: topics, codec, producer, settings."""

    app: faust.App
    codec: Codec
    publisher: Publisher
    settings: WorkerSettings
    kafka: KafkaSettings
    database: DatabaseSettings
    trades: faust.TopicT
    bar_batches: faust.TopicT
    fundamentals: faust.TopicT
    quotes: faust.TopicT
    feed_events: faust.TopicT
    statuses: faust.TopicT
    listings: faust.TopicT
    pm_prices: faust.TopicT
    status: web.Application
    trade_batches: DecodedTradeBatches
    refused_sources: frozenset[str]  # MS_REAL_DATA_ONLY: the synthetic ones

    @property
    def database_url(self) -> str:
        return self.database.url.get_secret_value()


def manual_acks(stream: faust.StreamT[bytes]) -> faust.StreamT[bytes]:
    """Return the stream with automatic acknowledgement off: the agent acks each event itself."""
    return stream.noack()  # type: ignore[attr-defined,no-any-return]  # missing from StreamT


RETRIED: Final = (psycopg.OperationalError, TransientError)  # a database or broker outage


def freeze_long_lived_heap() -> None:
    """Collect, then exempt every object alive now from the cyclic collector: for what an
    agent has just built to keep (an index, books), so that full collections, which hold the
    whole worker, do not pass over it again. Frozen objects are still freed by reference
    counting."""
    gc.collect()
    gc.freeze()


async def retry_until_done(
    what: str,
    step: Callable[[], Awaitable[object]],
    retried: tuple[type[BaseException], ...] = RETRIED,
) -> None:
    """Run `step` until it succeeds, backing off from 0.25 s to 30 s between tries: an agent
    that acknowledges its input only after the step must never skip it."""
    delay_s = 0.25
    while True:
        try:
            await step()
            return
        except retried as exc:
            log.warning("%s: %s; retrying in %.1f s", what, exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(30.0, 2 * delay_s)


def faust_config(worker: WorkerSettings, kafka: KafkaSettings) -> dict[str, Any]:
    return {
        "broker": f"kafka://{kafka.bootstrap}",
        "web_enabled": False,
        "datadir": worker.data_dir,
        "store": "memory://",
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "broker_session_timeout": worker.session_timeout_s,
        "broker_heartbeat_interval": worker.heartbeat_interval_s,
        "broker_rebalance_timeout": worker.session_timeout_s * 2,
        "broker_commit_interval": worker.commit_interval_s,
        "consumer_max_fetch_size": 8 * 1024 * 1024,
        # Agents acknowledge input only once it is checkpointed or committed, so waiting for
        # every event to be acked would stall shutdown; what is not acked is simply reprocessed.
        "stream_wait_empty": False,
    }


def create_app(
    worker: WorkerSettings,
    kafka: KafkaSettings,
    database: DatabaseSettings,
    codec: Codec,
    *,
    real_data_only: bool = False,
) -> Worker:
    """Build the Faust app, install the selected agents and serve the status endpoints.

    Agents produce with one confluent-kafka Publisher (acks=all, idempotent): faster than
    Faust's aiokafka producer, and its delivery reports tell exactly which outputs are
    acknowledged; a timer serves them, so producing never gives up the GIL. Agent modules may
    add routes to `Worker.status` while they install. The status port is bound here, before
    Faust starts, so that a taken one raises ConfigError naming MS_WORKER_HTTP_PORT instead of
    crashing the worker from inside a task.
    """
    status_socket = listen(worker.http_host, worker.http_port, "MS_WORKER_HTTP_PORT")
    app = faust.App(worker.group_id, **faust_config(worker, kafka))
    app.transport = Transport(app.conf.broker_consumer, app, fetch_max_wait_ms=worker.fetch_wait_ms)
    checks = {
        "kafka": kafka_check(kafka.bootstrap),
        "database": database_check(database.url.get_secret_value()),
    }
    refused = SYNTHETIC_SOURCES if real_data_only else frozenset()
    built = Worker(
        app=app,
        codec=codec,
        publisher=Publisher(
            kafka.producer_config(f"{worker.group_id}-worker") | {"partitioner": "murmur2_random"},
            poll_after_produce=False,
        ),
        settings=worker,
        kafka=kafka,
        database=database,
        trades=app.topic(TRADES, value_serializer="raw", key_serializer="raw"),
        bar_batches=app.topic(BAR_BATCHES, value_serializer="raw", key_serializer="raw"),
        fundamentals=app.topic(FUNDAMENTALS, value_serializer="raw", key_serializer="raw"),
        quotes=app.topic(QUOTES, value_serializer="raw", key_serializer="raw"),
        feed_events=app.topic(FEED_EVENTS, value_serializer="raw", key_serializer="raw"),
        statuses=app.topic(STATUSES, value_serializer="raw", key_serializer="raw"),
        listings=app.topic(LISTINGS, value_serializer="raw", key_serializer="raw"),
        pm_prices=app.topic(PM_PRICES, value_serializer="raw", key_serializer="raw"),
        status=status_app("worker", checks),
        trade_batches=DecodedTradeBatches(codec, refused_sources=refused),
        refused_sources=refused,
    )
    for name in worker.agent_names:
        importlib.import_module(AGENTS[name].module).install(built)
    app.sensors.add(AgentThroughput())

    @app.task
    async def measure_lag() -> None:
        """Export the group's lag per partition (consumer_lag_messages)."""
        await export_lag(kafka.bootstrap, worker.group_id, worker.lag_interval_s)

    @app.timer(interval=DELIVERY_POLL_S)
    async def serve_deliveries() -> None:
        """Hand Kafka's acknowledgements to the publisher even while no agent produces."""
        built.publisher.poll()

    @app.task
    async def keep_long_lived_heap_out_of_gc() -> None:
        """Exempt the worker's long-lived objects from the cyclic collector, whose full passes
        over them hold every agent and the consumer thread at once.

        Start-up allocates most of them (Faust, numpy, the agents); the first messages load the
        numba kernels and fill the books, so the heap is frozen again REFREEZE_AFTER_S later.
        Frozen objects are still freed by reference counting.
        """
        gc.freeze()
        await asyncio.sleep(REFREEZE_AFTER_S)
        freeze_long_lived_heap()

    @app.task
    async def serve_status() -> None:
        """Serve /health, /metrics and what the agents added on the worker's status port."""
        await serve_socket(built.status, status_socket)
        UP.labels("worker").set(1)

    return built
