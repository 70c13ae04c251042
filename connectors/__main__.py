"""`python -m connectors run <name> [options]`: publish one provider's trades to Kafka.

Options are the connector's settings, as flags (`--rate 5000`) or MS_<NAME>_* variables.
Exit status: 0 every row published; 3 finished, some rows dead-lettered; 1 Kafka did not
acknowledge everything; 2 bad settings or a fatal provider error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import orjson
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from connectors import REGISTRY, connector_class
from connectors.runner import ConnectorRunner
from streams.codec import Codec
from streams.errors import ConfigError, DeliveryError, FatalError, TransientError
from streams.metrics import UP
from streams.producer import Publisher
from streams.runtime import configure_logging, schema_registry
from streams.settings import KafkaSettings, RegistrySettings, load_settings
from streams.status import kafka_check, serve, status_app
from streams.topics import TRADES

log = logging.getLogger("connectors")

EXIT_OK, EXIT_DELIVERY, EXIT_CONFIG, EXIT_REJECTED = 0, 1, 2, 3


class ConnectorProcessSettings(BaseSettings):
    """Settings of the connector process itself (not of any one provider)."""

    model_config = SettingsConfigDict(env_prefix="MS_CONNECTOR_", extra="forbid")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9101, ge=0, le=65535)
    heartbeat_ms: float = Field(
        250.0, gt=0, description="quiet partitions get a heartbeat this often"
    )
    log_level: str = "INFO"


async def run(name: str, argv: list[str]) -> int:
    cls = connector_class(name)
    cli: dict[str, Any] = {
        "_cli_parse_args": argv,
        "_cli_prog_name": f"python -m connectors run {name}",
        "_cli_kebab_case": True,
        "_cli_exit_on_error": False,
    }
    try:
        config = cls.Config(**cli)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (ValidationError, SettingsError) as exc:
        raise ConfigError(f"invalid {name} settings: {exc}") from exc
    process = load_settings(ConnectorProcessSettings)
    kafka = load_settings(KafkaSettings)
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    publisher = Publisher(kafka.producer_config(f"marketstream-connector-{name}"))
    try:
        partitions = publisher.partitions(TRADES)
    except DeliveryError as exc:
        raise ConfigError(f"MS_KAFKA_BOOTSTRAP={kafka.bootstrap}: {exc}") from exc
    runner = ConnectorRunner(
        cls(config),
        publisher,
        codec,
        partitions=partitions,
        batch_max_trades=kafka.batch_max_trades,
        linger_ms=kafka.linger_ms,
        heartbeat_ms=process.heartbeat_ms,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    status = await serve(
        status_app(f"connector.{name}", {"kafka": kafka_check(kafka.bootstrap)}),
        process.http_host,
        process.http_port,
    )
    UP.labels(f"connector.{name}").set(1)
    try:
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
            }
        ).decode(),
        flush=True,
    )
    return EXIT_REJECTED if summary.rejected else EXIT_OK


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the connectors")
    run_parser = commands.add_parser("run", help="run one connector", add_help=False)
    run_parser.add_argument("name", help=f"one of: {', '.join(sorted(REGISTRY))}")
    args, rest = parser.parse_known_args()
    if args.command == "list":
        print("\n".join(sorted(REGISTRY)))
        return EXIT_OK
    configure_logging()
    try:
        return asyncio.run(run(args.name, rest))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, FatalError, TransientError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except DeliveryError as exc:
        log.error("not everything was acknowledged: %s", exc)
        return EXIT_DELIVERY


if __name__ == "__main__":
    sys.exit(main())
