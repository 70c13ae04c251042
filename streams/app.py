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
from streams.settings import KafkaSettings
from streams.topics import DLQ, TRADES

AGENT_MODULES: Final = ["streams.stats.agent"]


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
    """The app and what its agents share: topics, codec, settings."""

    app: faust.App
    codec: Codec
    settings: WorkerSettings
    bootstrap: str
    trades: faust.TopicT
    dlq: faust.TopicT


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
    }


def create_app(worker: WorkerSettings, kafka: KafkaSettings, codec: Codec) -> Worker:
    """Build the Faust app and install every agent module's agents on it."""
    app = faust.App(worker.app_id, **faust_config(worker, kafka))
    built = Worker(
        app=app,
        codec=codec,
        settings=worker,
        bootstrap=kafka.bootstrap,
        trades=app.topic(TRADES, value_serializer="raw", key_serializer="raw"),
        dlq=app.topic(DLQ, value_serializer="raw", key_serializer="raw"),
    )
    for module in AGENT_MODULES:
        importlib.import_module(module).install(built)
    return built
