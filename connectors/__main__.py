"""`python -m connectors run <name> [options]`: publish one provider's trades to Kafka;
`python -m connectors universe load FILE`: a new version of the symbol universe;
`python -m connectors backfill`: drain the backfill queue (see connectors.backfill).

Options are the connector's settings, as flags (`--rate 5000`) or MS_<NAME>_* variables.
Exit status: 0 every row published; 3 finished, some rows dead-lettered; 1 Kafka did not
acknowledge everything; 2 bad settings, a taken status port (MS_CONNECTOR_HTTP_PORT; 0 picks
any free port), an unreachable broker, or a fatal provider error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from connectors import CONNECTORS, connector_class
from connectors.base import ConnectorConfig
from connectors.runner import ConnectorRunner
from connectors.universe import read_universe_file, store_universe
from shared.api_keys import ApiKeys
from shared.cli import (
    EXIT_OK,
    ArgumentParser,
    configure_logging,
    require_broker,
    require_database,
    run_cli,
)
from shared.codec import Codec
from shared.errors import ConfigError, DeliveryError
from shared.intervals import parse_intervals
from shared.metrics import UP
from shared.publisher import Publisher
from shared.schema_registry import schema_registry
from shared.settings import (
    BarsSettings,
    DatabaseSettings,
    DataPolicySettings,
    KafkaSettings,
    RegistrySettings,
    load_settings,
)
from shared.status import json_response, kafka_check, serve, status_app
from shared.topics import TRADES

log = logging.getLogger("connectors")

EXIT_REJECTED: Final = 3  # the connectors' own status; 0, 1 and 2 are shared.cli's


class ConnectorProcessSettings(BaseSettings):
    """Settings of the connector process itself (not of any one provider)."""

    model_config = SettingsConfigDict(env_prefix="MS_CONNECTOR_", extra="forbid")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9101, ge=0, le=65535)
    heartbeat_ms: float = Field(
        250.0, gt=0, description="quiet partitions get a heartbeat this often"
    )
    # A mounted Secret: keys as files named like their variables (ALPACA_API_KEY, ...), read at
    # start and again by POST /ops/reload.
    secrets_dir: Path | None = None
    ops_api_keys: SecretStr = SecretStr("")  # comma-separated keys for the ops endpoints
    ops_api_keys_file: Path | None = None
    log_level: str = "INFO"


def settings_problems(name: str, config: type[ConnectorConfig], exc: ValidationError) -> str:
    """Describe each invalid setting by its flag and its variable, on one line."""
    prefix = str(config.model_config.get("env_prefix", ""))
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        problems.setdefault(f"--{field.replace('_', '-')} / {prefix}{field.upper()}", []).append(
            err["msg"]
        )
    described = "; ".join(f"{where}: {' or '.join(msgs)}" for where, msgs in problems.items())
    return f"invalid {name} settings: {described}"


async def run(name: str, argv: list[str]) -> int:
    try:
        cls = connector_class(name)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    cli: dict[str, Any] = {
        "_cli_parse_args": argv,
        "_cli_prog_name": f"python -m connectors run {name}",
        "_cli_kebab_case": True,
        "_cli_exit_on_error": False,
    }
    process = load_settings(ConnectorProcessSettings)

    def configured() -> ConnectorConfig:
        """The connector's settings, from flags, the environment and the secrets directory."""
        try:
            return cls.Config(**cli, **{"_secrets_dir": process.secrets_dir})
        except ValidationError as exc:
            raise ConfigError(settings_problems(name, cls.Config, exc)) from exc
        except SettingsError as exc:
            raise ConfigError(f"invalid {name} settings: {exc}") from exc

    try:
        config = configured()
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    connector = cls(config)
    if connector.synthetic and load_settings(DataPolicySettings).real_data_only:
        raise ConfigError(
            f"MS_REAL_DATA_ONLY=true: the {name} connector makes up its data; it does not start"
        )
    kafka = load_settings(KafkaSettings)
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    require_broker(kafka.bootstrap)
    app = status_app(f"connector.{name}", {"kafka": kafka_check(kafka.bootstrap)})

    running: list[ConnectorRunner] = []

    async def provider_stats(_: web.Request) -> web.Response:
        return json_response(running[0].provider_stats() if running else connector.provider_stats())

    app.router.add_get("/stats/providers", provider_stats)
    try:
        ops_keys = ApiKeys.load(
            process.ops_api_keys.get_secret_value(),
            process.ops_api_keys_file,
            allow_anonymous=False,
        )
    except OSError as exc:
        raise ConfigError(f"MS_CONNECTOR_OPS_API_KEYS_FILE: {exc}") from exc

    async def reload(request: web.Request) -> web.Response:
        """Re-read the connector's settings (keys from the environment and the secrets
        directory, a failover's universe) and go on with them, without a restart."""
        if not ops_keys.configured:
            return json_response({"error": "set MS_CONNECTOR_OPS_API_KEYS to use ops"}, 403)
        if not ops_keys.allows(ops_keys.presented(request.headers, str(request.rel_url))):
            return json_response({"error": "unknown or missing API key"}, 401)
        if not running or not running[0].accepts_reload:
            return json_response({"error": f"{name} is not running; nothing to reload"}, 409)
        try:
            fresh = cls(configured())
        except (ConfigError, KeyError, SettingsError, ValueError, OSError) as exc:
            return json_response({"error": str(exc)}, 400)
        if fresh.synthetic and load_settings(DataPolicySettings).real_data_only:
            return json_response({"error": "MS_REAL_DATA_ONLY=true: synthetic sources"}, 400)
        running[0].replace(fresh)
        log.info("%s: settings reloaded by POST /ops/reload", name)
        return json_response({"reloaded": name, "providers": sorted(fresh.provider_stats())}, 202)

    app.router.add_post("/ops/reload", reload)
    # A second connector beside `make up` finds 9101 taken: say so before anything is logged.
    status = await serve(
        app, process.http_host, process.http_port, port_variable="MS_CONNECTOR_HTTP_PORT"
    )
    try:
        publisher = Publisher(kafka.producer_config(f"marketstream-connector-{name}"))
        try:
            partitions = publisher.partitions(TRADES)
        except DeliveryError as exc:
            raise ConfigError(f"MS_KAFKA_BOOTSTRAP={kafka.bootstrap}: {exc}") from exc
        runner = ConnectorRunner(
            connector,
            publisher,
            codec,
            partitions=partitions,
            batch_max_trades=kafka.batch_max_trades,
            linger_ms=kafka.linger_ms,
            heartbeat_ms=process.heartbeat_ms,
        )
        running.append(runner)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        UP.labels(f"connector.{name}").set(1)
        summary = await runner.run()
    finally:
        await status.cleanup()
    print(
        orjson.dumps(
            {
                "connector": name,
                "published": summary.published,
                "rejected": summary.rejected,
                "batches": summary.batches,
                "quotes": summary.quotes,
                "provider_bars": summary.provider_bars,
                "statements": summary.statements,
            }
        ).decode(),
        flush=True,
    )
    return EXIT_REJECTED if summary.rejected else EXIT_OK


def load_universe_file(path: Path) -> int:
    """`python -m connectors universe load FILE`: a new version of symbol_universe (MS_DATABASE_URL)."""
    rows = read_universe_file(path, str(path))
    url = load_settings(DatabaseSettings).url.get_secret_value()
    require_database(url)
    version, new = store_universe(url, rows, str(path))
    counts = Counter(row.tier for row in rows if row.active)
    print(
        orjson.dumps(
            {
                "version": version,
                "new": new,
                "instruments": len(rows),
                "active_by_tier": dict(sorted(counts.items())),
            }
        ).decode(),
        flush=True,
    )
    return EXIT_OK


def run_backfill() -> int:
    """`python -m connectors backfill`: work the backfill queue until SIGINT or SIGTERM."""
    from connectors import backfill  # imported here: it loads the Alpaca client
    from connectors.alpaca import AlpacaConfig

    settings = load_settings(backfill.BackfillSettings)
    configure_logging(settings.log_level)
    longest_us = parse_intervals(load_settings(BarsSettings).intervals)[-1][1]
    return asyncio.run(
        backfill.run(
            settings,
            kafka=load_settings(KafkaSettings),
            database_url=load_settings(DatabaseSettings).url.get_secret_value(),
            alpaca=load_settings(AlpacaConfig),
            codec=Codec(schema_registry(load_settings(RegistrySettings))),
            window_us=longest_us,
        )
    )


def main() -> int:
    parser = ArgumentParser(
        prog="python -m connectors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the connectors")
    run_parser = commands.add_parser("run", help="run one connector", add_help=False)
    run_parser.add_argument("name", help=f"one of: {', '.join(sorted(CONNECTORS))}")
    universe = commands.add_parser(
        "universe", help="load a universe CSV into the database as a new version"
    )
    universe.add_argument("action", choices=["load"])
    universe.add_argument(
        "file", type=Path, help="symbol,exchange,asset_type,tier,active,providers"
    )
    commands.add_parser(
        "backfill",
        help="work the backfill queue: fetch each job's trades from the provider's history and"
        " publish them to md.trades.v1 as a source of their own (MS_BACKFILL_*)",
    )
    args, rest = parser.parse_known_args()
    if args.command == "backfill":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return run_backfill()
    if args.command == "universe":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return load_universe_file(args.file)
    if args.command == "list":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        print("\n".join(sorted(CONNECTORS)))
        return EXIT_OK
    configure_logging()
    return asyncio.run(run(args.name, rest))


if __name__ == "__main__":
    run_cli(main)
