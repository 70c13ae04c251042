"""The one Faust application, built from settings by `create_app`.

Faust reads its configuration the first time a topic or agent is declared, so the app is built
in a function, after settings are loaded, and each agent module installs its agents on it
(`AGENT_MODULES`, an explicit list, in the spirit of Faust's autodiscover). Importing an agent
module does no I/O and reads no environment.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Final

import faust
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.codec import Codec
from streams.producer import Publisher
from streams.settings import DatabaseSettings, KafkaSettings
from streams.topics import BARS, TRADES

AGENT_MODULES: Final = ["streams.stats.agent", "streams.bars.agent", "streams.sink.agent"]


class WorkerSettings(BaseSettings):
    """Settings of the worker process."""

    model_config = SettingsConfigDict(env_prefix="MS_WORKER_", extra="forbid")

    app_id: str = Field("marketstream", min_length=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(6066, ge=0, le=65535)
    data_dir: str = ".run/worker-data"
    log_level: str = "INFO"
    # Tansu holds a JoinGroup for about half the session timeout, so a short one starts and
    # recovers the worker in seconds; production Kafka may want longer.
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(0.5, gt=0)
    commit_interval_s: float = Field(0.5, gt=0)


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
    bars: faust.TopicT

    @property
    def database_url(self) -> str:
        return self.database.url.get_secret_value()


def manual_acks(stream: faust.StreamT[bytes]) -> faust.StreamT[bytes]:
    """Return the stream with automatic acknowledgement off: the agent acks each event itself."""
    return stream.noack()  # type: ignore[attr-defined,no-any-return]  # missing from StreamT


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
    worker: WorkerSettings, kafka: KafkaSettings, database: DatabaseSettings, codec: Codec
) -> Worker:
    """Build the Faust app and install every agent module's agents on it.

    Agents produce with one confluent-kafka Publisher (acks=all, idempotent): faster than
    Faust's aiokafka producer, and its flush tells exactly when outputs are acknowledged.
    """
    app = faust.App(worker.app_id, **faust_config(worker, kafka))
    built = Worker(
        app=app,
        codec=codec,
        publisher=Publisher(
            kafka.producer_config(f"{worker.app_id}-worker") | {"partitioner": "murmur2_random"}
        ),
        settings=worker,
        kafka=kafka,
        database=database,
        trades=app.topic(TRADES, value_serializer="raw", key_serializer="raw"),
        bars=app.topic(BARS, value_serializer="raw", key_serializer="raw"),
    )
    for module in AGENT_MODULES:
        importlib.import_module(module).install(built)
    return built
