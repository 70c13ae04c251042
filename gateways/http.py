"""The HTTP API: health (`/health`, `/health/detailed`), Prometheus metrics, the schema
registry's read side, and the read API (`GET /stocks/{symbol}/price`, with an API key).

Run it with `python -m gateways.http`. Later issues add stats and ops endpoints here. It starts
even while the broker or the database is down and says so on `/health` (503), as a readiness
probe should. Exit status: 0 stopped by a signal; 2 bad settings, a missing key file or a taken
MS_API_HTTP_PORT (0 picks any free port; the port bound is logged).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateways.bars_api import add_bars_routes
from gateways.dlq_api import add_dlq_routes, replay_publisher
from gateways.fundamentals_api import add_fundamentals_routes
from gateways.gaps_api import add_gap_routes
from gateways.health_detailed import HealthSettings, add_detailed_health_route
from gateways.keyed import KeyGuard
from gateways.matches_api import add_match_routes
from gateways.openapi import add_openapi_route
from gateways.ops_api import add_ops_routes
from gateways.prices_api import add_price_routes
from gateways.rate_limit import KeyRates
from gateways.read_pool import read_pool
from gateways.registry_api import add_registry_routes
from gateways.request_metrics import count_requests
from gateways.status_page import StatusPageSettings, add_status_page_routes
from shared.api_keys import ApiKeys
from shared.cli import reason, run_cli
from shared.errors import ConfigError
from shared.metrics import UP
from shared.schema_ids import CommittedSchemas
from shared.settings import DatabaseSettings, KafkaSettings, RegistrySettings
from shared.status import database_check, kafka_check, serve, status_app

log = logging.getLogger(__name__)


class ApiSettings(BaseSettings):
    """Settings of the HTTP API process."""

    model_config = SettingsConfigDict(env_prefix="MS_API_", extra="forbid")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    # Keys for the read API: comma-separated, and/or a mounted file with one per line.
    api_keys: SecretStr = Field(SecretStr(""), validation_alias="MS_API_KEYS")
    api_keys_file: Path | None = Field(None, validation_alias="MS_API_KEYS_FILE")
    # Keys for /ops/*: operators' keys, apart from the readers'.
    ops_keys: SecretStr = SecretStr("")
    ops_keys_file: Path | None = None
    # Requests a key may make (per API replica): `limits` strings, e.g. 600/minute.
    rate_limit: str = "100/second"
    ops_rate_limit: str = "30/second"
    log_level: str = "INFO"

    def keys(self) -> ApiKeys:
        """The read API's keys; raise ConfigError for a key file that cannot be read."""
        return _load_keys(self.api_keys, self.api_keys_file, "MS_API_KEYS_FILE")

    def operator_keys(self) -> ApiKeys:
        """The ops endpoints' keys; raise ConfigError for a key file that cannot be read."""
        return _load_keys(self.ops_keys, self.ops_keys_file, "MS_API_OPS_KEYS_FILE")

    def guards(self) -> tuple[KeyGuard, KeyGuard]:
        """What the read API's routes take, and what the ops routes take."""
        return (
            KeyGuard(self.keys(), "API key", KeyRates(self.rate_limit, "MS_API_RATE_LIMIT")),
            KeyGuard(
                self.operator_keys(),
                "ops API key",
                KeyRates(self.ops_rate_limit, "MS_API_OPS_RATE_LIMIT"),
            ),
        )


def _load_keys(inline: SecretStr, file: Path | None, variable: str) -> ApiKeys:
    try:
        return ApiKeys.load(inline.get_secret_value(), file, False)
    except OSError as exc:
        raise ConfigError(f"{variable}={file}: {reason(exc)}") from exc


def build_app(
    kafka: KafkaSettings,
    database: DatabaseSettings,
    registry: RegistrySettings,
    readers: KeyGuard,
    operators: KeyGuard,
    health: HealthSettings,
    status_page: StatusPageSettings,
) -> web.Application:
    """Build the API; the registry routes are served only when no external registry is configured."""
    url = database.url.get_secret_value()
    checks = {"kafka": kafka_check(kafka.bootstrap), "database": database_check(url)}
    app = status_app("api", checks, middlewares=[count_requests])
    providers = add_status_page_routes(app, readers, status_page, checks)
    add_detailed_health_route(app, kafka.bootstrap, url, health, providers)
    if registry.registry_url is None:
        add_registry_routes(app, CommittedSchemas())
    pool = read_pool(app, url)
    add_price_routes(app, pool, readers)
    add_bars_routes(app, pool, readers)
    add_gap_routes(app, pool, readers)
    add_fundamentals_routes(app, pool, readers)
    add_match_routes(app, pool, readers, operators)
    add_ops_routes(app, pool, operators)
    add_dlq_routes(app, pool, operators, replay_publisher(kafka))
    add_openapi_route(app)
    unset = [
        name
        for name, guard in (("MS_API_KEYS", readers), ("MS_API_OPS_KEYS", operators))
        if not guard.keys.configured
    ]

    async def warn(_: web.Application) -> None:  # once the port is bound
        for name in unset:
            log.warning("no %s: its endpoints refuse every request (401)", name)

    app.on_startup.append(warn)
    return app


async def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    """Serve `app` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await serve(app, host, port, port_variable="MS_API_HTTP_PORT")
    UP.labels("api").set(1)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    """Load settings, configure logging and serve until SIGINT or SIGTERM."""
    from shared.cli import configure_logging
    from shared.settings import load_settings

    settings = load_settings(ApiSettings)
    app = build_app(
        load_settings(KafkaSettings),
        load_settings(DatabaseSettings),
        load_settings(RegistrySettings),
        *settings.guards(),
        load_settings(HealthSettings),
        load_settings(StatusPageSettings),
    )
    configure_logging(settings.log_level)
    asyncio.run(serve_until_signalled(app, settings.http_host, settings.http_port))
    return 0


if __name__ == "__main__":
    run_cli(main)
