"""`python -m gateways.ws`: serve bars, trades and quotes over WebSocket (and /health, /metrics on the same port).

Exit status: 0 stopped by a signal; 2 bad settings, a missing key file, a taken MS_WS_PORT (0
picks any free port; the port bound is logged) or a broker that cannot be reached at start.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from gateways.ws.collector import Collector
from gateways.ws.history import BarHistory
from gateways.ws.server import Gateway, WsSettings
from gateways.ws.source import TOPIC_OF, Feed, TopicSource
from shared.api_keys import ApiKeys
from shared.cli import configure_logging, reason, require_broker, run_cli
from shared.codec import Codec
from shared.dead_letters import DeadLetterPublisher
from shared.errors import ConfigError
from shared.metrics import UP
from shared.publisher import Publisher
from shared.schema_registry import schema_registry
from shared.settings import DatabaseSettings, KafkaSettings, RegistrySettings, load_settings
from shared.status import database_check, kafka_check, listen, listen_error

log = logging.getLogger("gateways.ws")


async def run(
    settings: WsSettings,
    kafka: KafkaSettings,
    codec: Codec,
    keys: ApiKeys,
    database: DatabaseSettings | None,
) -> None:
    publisher = Publisher(kafka.producer_config("marketstream-ws-gateway"))
    feeds = [
        Feed(
            TOPIC_OF[kind],
            settings.tick_lookback_s
            if kind in ("trades", "quotes")
            else settings.rebuild_lookback_s,
        )
        for kind in settings.streams.split(",")
    ]
    source = TopicSource(
        kafka.bootstrap, codec, DeadLetterPublisher(publisher, codec, "ws-gateway"), feeds
    )
    checks = {"kafka": kafka_check(kafka.bootstrap)}
    history = None
    if database is not None:
        url = database.url.get_secret_value()
        history = BarHistory(url)
        checks["database"] = database_check(url)
    gateway = Gateway(settings, keys, source, checks, history)
    collecting = asyncio.create_task(Collector(lambda: gateway.departures).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            server = await gateway.serve()
        except OSError as exc:
            raise listen_error(exc, settings.host, settings.port, "MS_WS_PORT") from exc
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            address = f"{host}:{port}"
            log.info(
                "%s on ws://%s/, status endpoints on http://%s/health",
                settings.streams.replace(",", ", "),
                address,
                address,
            )
        UP.labels("ws-gateway").set(1)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
    finally:
        collecting.cancel()
        await asyncio.to_thread(source.stop)
        await asyncio.to_thread(publisher.flush)
        if history is not None:
            await history.close()


def main() -> int:
    settings = load_settings(WsSettings)
    kafka = load_settings(KafkaSettings)
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    database = load_settings(DatabaseSettings) if settings.snapshot_from_database else None
    try:
        keys = ApiKeys.load(
            settings.api_keys.get_secret_value(), settings.api_keys_file, settings.allow_anonymous
        )
    except OSError as exc:
        raise ConfigError(f"MS_WS_API_KEYS_FILE={settings.api_keys_file}: {reason(exc)}") from exc
    if not keys.configured:
        raise ConfigError(
            "set MS_WS_API_KEYS (or MS_WS_API_KEYS_FILE), or MS_WS_ALLOW_ANONYMOUS=true"
        )
    # Without the broker at start the bar source cannot assign its partitions and stops.
    require_broker(kafka.bootstrap)
    if settings.port:  # a taken port found before the bar source starts and logs: one line
        listen(settings.host, settings.port, "MS_WS_PORT").close()
    configure_logging(settings.log_level)
    # uvloop's transports are written in C: a write costs the gateway far less CPU than with
    # asyncio's, and it writes a frame to every busy client several times a second.
    uvloop.run(run(settings, kafka, codec, keys, database))
    return 0


if __name__ == "__main__":
    run_cli(main)
