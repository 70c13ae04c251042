"""`python -m streams`: the worker, topic and table set-up, the embedded stack, and tools.

worker                      run the Faust worker (the agents in MS_WORKER_AGENTS, default all)
topics create|describe      create our topics (idempotent) or show them
groups describe [--group G] each consumer group's lag per partition, as kafka-consumer-groups
db migrate                  create our tables (TimescaleDB hypertables when available)
stack up [--detach]|down|status   the embedded stack behind `make up` / `make down`
trades tail [--count N]     print trades as they arrive
bars export                 bars from the database as CSV
markets rebuild             re-match every stored prediction-market listing (keeps people's decisions)

Exit status: 0 done; 1 failed (topics missing, no trades, the database failed mid-way);
2 bad settings or arguments, a taken port, or a broker or database that cannot be reached;
130 interrupted. The table for all our commands is in streams/cli.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from shared.cli import (
    ArgumentParser,
    configure_logging,
    reason,
    require_broker,
    require_database,
    run_cli,
)
from shared.errors import ConfigError, MarketstreamError, TransientError
from shared.schema_registry import schema_registry
from shared.settings import (
    DatabaseSettings,
    DataPolicySettings,
    KafkaSettings,
    RegistrySettings,
    load_settings,
)

log = logging.getLogger("streams")


@contextlib.contextmanager
def database_failures(what: str) -> Iterator[None]:
    """Turn a database error after connecting into a one-line failure (exit status 1)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise MarketstreamError(f"{what} failed: {reason(exc)}") from exc


def run_worker(extra: list[str]) -> int:
    from shared.codec import Codec
    from streams.app import GIL_SWITCH_INTERVAL_S, WorkerSettings, create_app

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    settings = load_settings(WorkerSettings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    kafka = load_settings(KafkaSettings)
    require_broker(kafka.bootstrap)  # Faust would crash with a traceback; the database may wait
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    worker = create_app(
        settings,
        kafka,
        load_settings(DatabaseSettings),
        codec,
        real_data_only=load_settings(DataPolicySettings).real_data_only,
    )
    sys.argv = [
        sys.argv[0],
        "worker",
        "--loglevel",
        settings.log_level.lower(),
        "--without-web",
        *extra,
    ]
    worker.app.main()
    return 0


def topics_command(action: str) -> int:
    from confluent_kafka import KafkaException

    from shared import kafka_admin
    from shared.topics import all_topics

    kafka = load_settings(KafkaSettings)
    require_broker(kafka.bootstrap)
    specs = all_topics(kafka.trades_partitions)
    if action == "create":
        created = kafka_admin.create_topics(kafka.bootstrap, specs)
        print(f"created: {', '.join(created) or 'none (all exist)'}")
    try:
        states = kafka_admin.describe_topics(kafka.bootstrap, [s.name for s in specs])
    except KafkaException as exc:
        raise TransientError(f"cannot describe topics at {kafka.bootstrap}: {exc}") from exc
    for state in states:
        print(
            orjson.dumps(
                {"topic": state.name, "partitions": state.partitions, "configs": state.configs}
            ).decode()
        )
    missing = {s.name for s in specs} - {s.name for s in states}
    if missing:
        raise MarketstreamError(
            f"topics missing at {kafka.bootstrap}: {', '.join(sorted(missing))};"
            " run `python -m streams topics create`"
        )
    return 0


def groups_command(group: str | None) -> int:
    from shared import kafka_admin

    kafka = load_settings(KafkaSettings)
    require_broker(kafka.bootstrap)
    rows = kafka_admin.group_lags(kafka.bootstrap, None if group is None else [group])
    if group is not None and not rows:
        raise MarketstreamError(
            f"consumer group {group} does not exist at {kafka.bootstrap} or has no offsets"
        )
    for row in rows:
        print(orjson.dumps(dataclasses.asdict(row)).decode())
    return 0


def db_command(action: str) -> int:
    from shared.settings import SinkSettings
    from streams.migrations import apply_retention, migrate

    url = load_settings(DatabaseSettings).url.get_secret_value()
    sink = load_settings(SinkSettings)
    require_database(url)
    with database_failures(f"db {action}"):
        if action == "migrate":
            timescale = migrate(
                url, compress_after_days=sink.compress_after_days, retention=sink.retention
            )
            print(f"tables ready ({'TimescaleDB' if timescale else 'plain PostgreSQL'})")
        else:
            print(orjson.dumps({"deleted": apply_retention(url, sink.retention)}).decode())
    return 0


def bars_command(args: argparse.Namespace) -> int:
    from shared.intervals import parse_interval
    from streams.bars.export import export_to_file, parse_time

    try:
        parse_interval(args.interval)
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    url = load_settings(DatabaseSettings).url.get_secret_value()
    require_database(url)
    with database_failures("bars export"):
        rows = export_to_file(
            url, args.interval, Path(args.out), symbols=symbols, start=start, end=end
        )
    print(f"wrote {rows} bars to {args.out}")
    return 0


def markets_command(action: str) -> int:
    import asyncio

    from shared.codec import Codec
    from shared.publisher import Publisher
    from streams.markets.rebuild import rebuild

    url = load_settings(DatabaseSettings).url.get_secret_value()
    kafka = load_settings(KafkaSettings)
    require_database(url)
    require_broker(kafka.bootstrap)
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    publisher = Publisher(kafka.producer_config("markets-rebuild"))
    with database_failures(f"markets {action}"):
        changed, published = asyncio.run(rebuild(url, publisher, codec))
    print(f"re-matched: {changed} pairs changed, {published} published")
    return 0


def stack_command(action: str, detach: bool) -> int:
    from streams.embedded.stack import Stack, StackSettings

    stack = Stack(load_settings(StackSettings))
    if action == "up":
        try:
            return stack.detach() if detach else stack.supervise()
        except (TimeoutError, subprocess.CalledProcessError) as exc:
            raise MarketstreamError(f"the stack failed to start: {exc}; see {stack.logs}/") from exc
    if action == "down":
        return stack.down()
    pid = stack.running_supervisor()
    print(f"running (supervisor pid {pid})\n{stack.urls()}" if pid else "not running")
    return 0


def trades_command(args: argparse.Namespace) -> int:
    from shared.codec import Codec
    from streams.tail import tail_trades

    source = "--bootstrap" if args.bootstrap else "MS_KAFKA_BOOTSTRAP"
    bootstrap = args.bootstrap or load_settings(KafkaSettings).bootstrap
    require_broker(bootstrap, source)
    codec = Codec(schema_registry(load_settings(RegistrySettings)))
    if not tail_trades(bootstrap, codec, args.count, args.idle_timeout):
        raise MarketstreamError(f"no trades arrived within {args.idle_timeout:g} s")
    return 0


def main() -> int:
    parser = ArgumentParser(
        prog="python -m streams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run the Faust worker")
    sub.add_parser("topics").add_argument("action", choices=["create", "describe"])
    groups = sub.add_parser("groups")
    groups.add_argument("action", choices=["describe"])
    groups.add_argument("--group", help="one consumer group (default: every group)")
    sub.add_parser("db").add_argument("action", choices=["migrate", "retention"])
    stack = sub.add_parser("stack")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument(
        "--detach", action="store_true", help="run in the background; `make down` stops it"
    )
    bars = sub.add_parser("bars")
    bars.add_argument("action", choices=["export"])
    bars.add_argument("--interval", required=True, help="e.g. 1m")
    bars.add_argument("--out", required=True, help="CSV file to write")
    bars.add_argument("--symbols", help="comma-separated symbols (default: all)")
    bars.add_argument("--start", help="ISO-8601 time, inclusive (UTC if no offset)")
    bars.add_argument("--end", help="ISO-8601 time, exclusive")
    sub.add_parser("markets").add_argument("action", choices=["rebuild"])
    trades = sub.add_parser("trades")
    trades.add_argument("action", choices=["tail"])
    trades.add_argument(
        "--count", type=int, default=0, help="stop after this many trades (0: never)"
    )
    trades.add_argument("--bootstrap", help="broker address (default: MS_KAFKA_BOOTSTRAP)")
    trades.add_argument(
        "--idle-timeout", type=float, default=30.0, help="stop after this many idle seconds"
    )
    args, extra = parser.parse_known_args()
    if args.command != "worker":
        configure_logging()
    if args.command == "worker":
        return run_worker(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "topics":
        return topics_command(args.action)
    if args.command == "groups":
        return groups_command(args.group)
    if args.command == "db":
        return db_command(args.action)
    if args.command == "stack":
        return stack_command(args.action, args.detach)
    if args.command == "bars":
        return bars_command(args)
    if args.command == "markets":
        return markets_command(args.action)
    return trades_command(args)


if __name__ == "__main__":
    run_cli(main)
