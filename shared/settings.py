"""Typed settings, read from MS_* environment variables once per process in `__main__`.

No other module reads os.environ: settings objects are passed down explicitly.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

PRODUCER_LINGER_MS: Final = 1.0


class KafkaSettings(BaseSettings):
    """Where the broker is and how we produce to it."""

    model_config = SettingsConfigDict(env_prefix="MS_KAFKA_", extra="forbid")

    bootstrap: str = Field("127.0.0.1:9092", min_length=1)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "none"
    linger_ms: float = Field(5.0, ge=0, le=60_000)  # how long a connector lets a batch fill
    batch_max_trades: int = Field(10_000, ge=1, le=1_000_000)
    trades_partitions: int = Field(6, ge=1, le=10_000)

    def producer_config(self, client_id: str) -> dict[str, Any]:
        """Return librdkafka settings for a producer that loses nothing it acknowledged.

        Our producers hand librdkafka whole batches (a connector's TradeBatch of a partition,
        after `linger_ms`; an agent's bars of one message, in one call), so a long librdkafka
        linger would only delay them: PRODUCER_LINGER_MS lets what is queued together go
        in one request. Nagle is off, as in Kafka's Java client: a request written while the
        previous one is unacknowledged would otherwise wait for its response.
        """
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": self.compression,
            "linger.ms": PRODUCER_LINGER_MS,
            "socket.nagle.disable": True,
            "batch.size": 4_000_000,
            "message.max.bytes": 8_000_000,
        }


class DataPolicySettings(BaseSettings):
    """What data the platform accepts. The production manifests set MS_REAL_DATA_ONLY=true:
    synthetic sources (the simulator, the fake providers) refuse to start, and workers
    dead-letter what such a source published anyway."""

    model_config = SettingsConfigDict(env_prefix="MS_", extra="ignore")

    real_data_only: bool = False


# The sources whose data is made up: refused where only real data may flow.
SYNTHETIC_SOURCES: Final = frozenset({"simulator"})
# Sources named so carry history a backfill fetched for a gap: bars from them fill holes and
# reveal none; their trades are not live.
BACKFILL_SOURCE_PREFIX: Final = "backfill:"


class DatabaseSettings(BaseSettings):
    """PostgreSQL (with TimescaleDB when the extension is present)."""

    model_config = SettingsConfigDict(env_prefix="MS_DATABASE_", extra="forbid")

    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:55432/marketstream")


class RegistrySettings(BaseSettings):
    """Optional Confluent-compatible schema registry; unset means the committed schema ids."""

    model_config = SettingsConfigDict(env_prefix="MS_SCHEMA_", extra="forbid")

    registry_url: str | None = None


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build `cls` from the environment; raise ConfigError naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


class BarsSettings(BaseSettings):
    """How the aggregate_bars agent cuts and closes bars."""

    model_config = SettingsConfigDict(env_prefix="MS_BARS_", extra="forbid")

    intervals: str = "1s,5s,15s,1m,5m,15m,1h,4h,1d"
    grace_s: float = Field(2.0, ge=0)
    max_lateness_s: float = Field(60.0, gt=0, le=86_400)
    checkpoint_interval_s: float = Field(2.0, gt=0)


class SinkSettings(BaseSettings):
    """How the sink_bars agent writes to the database."""

    model_config = SettingsConfigDict(env_prefix="MS_SINK_", extra="forbid")

    batch_rows: int = Field(5000, ge=1)
    flush_interval_s: float = Field(0.5, gt=0)
    compress_after_days: int = Field(14, ge=1)
    retention: str = Field("1m=365", description="interval=days pairs, e.g. 1s=7,1m=365")
