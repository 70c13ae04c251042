"""`make up`: the whole pipeline on loopback, supervised by one process; `make down` stops it.

The supervisor starts (or reuses) the broker and PostgreSQL, creates topics and tables, then
runs the API, the bar worker, the sink worker, the simulator and the WebSocket gateway as child
processes with logs in `.run/logs/`. On
SIGINT or SIGTERM it stops the children first (connectors flush what they hold), then
PostgreSQL and the broker it started. `--detach` runs the same supervisor in the background.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import kafka_admin
from shared.errors import ConfigError
from shared.topics import all_topics
from streams.embedded.broker import start_broker, stop_broker
from streams.embedded.ports import is_listening
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres

log = logging.getLogger(__name__)

KEPT_AND_LOST = (
    "The stack keeps PostgreSQL in {run_dir}/pgdata (bars, bar checkpoints, latest prices, "
    "gaps and the backfill queue, listings and matches) and the API key; it loses what the "
    "memory broker held: topics, their messages and consumer-group offsets. On the next "
    "`make up` the worker sees new topics, discards the bar checkpoints with a WARNING (bars "
    "still open at the stop keep only the trades after the restart) and continues every "
    "channel's sequence numbers, so a WebSocket client that resumes gets the bars after its "
    "seq, or a fresh snapshot (recovered: false) where they are gone."
)


@dataclass(frozen=True, slots=True)
class FakeProvider:
    """A provider `make up` runs its fake for unless its keys (`keys`) are all set; one
    without keys (a public API) always gets its fake: the embedded stack stays local."""

    keys: tuple[str, ...]
    connector_env: Callable[[int], dict[str, str]]  # where the connector finds the fake


FAKES: Final = {
    "alpaca": FakeProvider(
        ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
        lambda port: {"MS_ALPACA_URL": f"ws://127.0.0.1:{port}/v2/iex"},
    ),
    "finnhub": FakeProvider(
        ("FINNHUB_API_KEY",),
        lambda port: {
            "MS_FINNHUB_WS_URL": f"ws://127.0.0.1:{port}",
            "MS_FINNHUB_REST_URL": f"http://127.0.0.1:{port}/api/v1",
        },
    ),
    "kalshi": FakeProvider(
        (), lambda port: {"MS_KALSHI_BASE_URL": f"http://127.0.0.1:{port}/trade-api/v2"}
    ),
    "polymarket": FakeProvider(
        (),
        lambda port: {
            "MS_POLYMARKET_GAMMA_URL": f"http://127.0.0.1:{port}",
            "MS_POLYMARKET_CLOB_URL": f"http://127.0.0.1:{port}",
        },
    ),
}
# The feeds `make up` can run (MS_STACK_FEEDS), the providers each needs, and its settings.
FEED_PROVIDERS: Final = {
    "simulator": (),
    "alpaca": ("alpaca",),
    "finnhub": ("finnhub",),
    "failover": ("finnhub", "alpaca"),
    "kalshi": ("kalshi",),
    "polymarket": ("polymarket",),
}
FEED_ENV: Final = {
    "alpaca": {"MS_ALPACA_SYMBOLS": "AAPL,MSFT,TSLA"},
    "failover": {
        "MS_FAILOVER_SYMBOLS": "AAPL,MSFT",
        "MS_FAILOVER_PROVIDERS": "finnhub,alpaca",
        "MS_ALPACA_SYMBOLS": "AAPL,MSFT",
    },
}
_FEED: Final = "|".join(FEED_PROVIDERS)
CHILD_START_S: Final = 120.0  # a cold start imports numba and compiles kernels


class StackSettings(BaseSettings):
    """Ports and load of the embedded stack."""

    model_config = SettingsConfigDict(env_prefix="MS_STACK_", extra="forbid")

    run_dir: Path = Path(".run")
    kafka_port: int = Field(9092, ge=1, le=65535)
    postgres_port: int = Field(55432, ge=1, le=65535)
    api_port: int = Field(8080, ge=1, le=65535)
    worker_port: int = Field(6066, ge=1, le=65535)
    sink_port: int = Field(6067, ge=1, le=65535)
    connector_port: int = Field(9101, ge=1, le=65535)
    ws_port: int = Field(8765, ge=1, le=65535)
    # The connectors to run: simulator, and alpaca (against its fake unless ALPACA_API_KEY
    # and ALPACA_SECRET_KEY are set); the first gets connector_port, the next ones the ports after.
    feeds: str = Field("simulator", pattern=rf"^({_FEED})(,({_FEED}))*$")
    alpaca_fake_port: int = Field(8770, ge=1, le=65535)
    finnhub_fake_port: int = Field(8771, ge=1, le=65535)
    kalshi_fake_port: int = Field(8776, ge=1, le=65535)
    polymarket_fake_port: int = Field(8777, ge=1, le=65535)
    simulator_instruments: int = Field(50, ge=1)
    simulator_rate: float = Field(2000.0, gt=0)
    trades_partitions: int = Field(6, ge=1)


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    module: list[str]
    port: int
    port_set_by: str  # the variable that sets `port`, for errors: MS_STACK_API_PORT=8080
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.run_dir = settings.run_dir.resolve()
        self.logs = self.run_dir / "logs"
        self.state_file = self.run_dir / "state.json"
        self.pg_data = self.run_dir / "pgdata"
        self.bootstrap = f"127.0.0.1:{settings.kafka_port}"

    def children(self) -> list[Child]:
        s = self.s
        return [
            Child(
                "api",
                ["gateways.http"],
                s.api_port,
                f"MS_STACK_API_PORT={s.api_port}",
                {
                    "MS_API_STATUS_TARGETS": self.targets(),
                    "MS_API_STATUS_WS_URL": f"ws://127.0.0.1:{s.ws_port}",
                },
            ),
            Child(
                "worker",
                ["streams", "worker"],
                s.worker_port,
                f"MS_STACK_WORKER_PORT={s.worker_port}",
                {"MS_WORKER_AGENTS": "tally_trades,aggregate_bars"},
            ),
            Child(
                "sink",
                ["streams", "worker"],
                s.sink_port,
                f"MS_STACK_SINK_PORT={s.sink_port}",
                {
                    "MS_WORKER_AGENTS": "sink_bars,sink_fundamentals,track_prices,detect_gaps,"
                    "store_dead_letters,"
                    "match_markets,flag_arbitrage",
                    "MS_WORKER_HTTP_PORT": str(s.sink_port),
                    "MS_WORKER_DATA_DIR": str(self.run_dir / "sink-data"),
                },
            ),
            *self.feed_children(),
            Child(
                "ws-gateway",
                ["gateways.ws"],
                s.ws_port,
                f"MS_STACK_WS_PORT={s.ws_port}",
                {"MS_WS_SNAPSHOT_FROM_DATABASE": "true"},
            ),
        ]

    def targets(self) -> str:
        """What the status page shows: every process of the stack but the API, by its port."""
        s = self.s
        ports = {"worker": s.worker_port, "sink": s.sink_port, "ws-gateway": s.ws_port}
        ports |= {feed: s.connector_port + k for k, feed in enumerate(self.feeds)}
        return ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in ports.items())

    @property
    def feeds(self) -> list[str]:
        return list(dict.fromkeys(self.s.feeds.split(",")))

    def example_symbol(self) -> str:
        """An instrument the first feed publishes, for the URLs shown."""
        return "SIM0001" if self.feeds[0] == "simulator" else "AAPL"

    def feed_children(self) -> list[Child]:
        """A connector per feed, each with its status port; a fake provider where keys lack."""
        children: dict[str, Child] = {}
        for k, feed in enumerate(self.feeds):
            port = self.s.connector_port + k
            env = {"MS_CONNECTOR_HTTP_PORT": str(port)} | FEED_ENV.get(feed, {})
            for provider in FEED_PROVIDERS.get(feed, ()):
                fake = FAKES[provider]
                if fake.keys and all(os.environ.get(key) for key in fake.keys):
                    continue  # the real provider: its keys are set
                fake_port = int(getattr(self.s, f"{provider}_fake_port"))
                keys = {
                    key: f"{self.ws_api_key()}-{provider}-{i}" for i, key in enumerate(fake.keys)
                }
                name = f"{provider}-fake"
                children[name] = Child(
                    name,
                    [f"connectors.fakes.{provider}", "--port", str(fake_port)],
                    fake_port,
                    f"MS_STACK_{provider.upper()}_FAKE_PORT={fake_port}",
                    keys,
                )
                env |= keys | fake.connector_env(fake_port)
            # a feed after the first: MS_STACK_CONNECTOR_PORT plus its place in MS_STACK_FEEDS
            set_by = f"MS_STACK_CONNECTOR_PORT={self.s.connector_port}{f' + {k}' if k else ''}"
            children[feed] = Child(
                feed, ["connectors", "run", feed], port, f"{set_by} ({feed})", env
            )
        return list(children.values())

    def child_env(self, database_url: str) -> dict[str, str]:
        s = self.s
        return {
            **os.environ,
            "MS_KAFKA_BOOTSTRAP": self.bootstrap,
            "MS_DATABASE_URL": database_url,
            "MS_API_HTTP_PORT": str(s.api_port),
            "MS_WORKER_HTTP_PORT": str(s.worker_port),
            "MS_WORKER_DATA_DIR": str(self.run_dir / "worker-data"),
            "MS_CONNECTOR_HTTP_PORT": str(s.connector_port),
            "MS_SIMULATOR_INSTRUMENTS": str(s.simulator_instruments),
            "MS_SIMULATOR_RATE": str(s.simulator_rate),
            "MS_WS_PORT": str(s.ws_port),
            "MS_WS_API_KEYS": self.ws_api_key(),
            "MS_API_KEYS": self.ws_api_key(),  # one key for the local stack's endpoints
            "MS_API_OPS_KEYS": self.ws_api_key(),
        }

    def ws_api_key(self) -> str:
        """The local stack's WebSocket key: made once per run directory, kept in it."""
        path = self.run_dir / "ws-api-key"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(f"dev-{secrets.token_urlsafe(16)}")
            path.chmod(0o600)
        return path.read_text().strip()

    def running_supervisor(self) -> int | None:
        """Return the pid of a live supervisor of this run directory, if any."""
        try:
            pid = int(orjson.loads(self.state_file.read_bytes())["supervisor"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError, orjson.JSONDecodeError):
            return None
        return pid

    def urls(self) -> str:
        s, py = self.s, sys.executable
        return "\n".join(
            [
                "marketstream is up:",
                f"  status page       http://127.0.0.1:{s.api_port}/   (the read key: cat"
                f" {self.run_dir}/ws-api-key)",
                f"  API health        http://127.0.0.1:{s.api_port}/health",
                f"  API metrics       http://127.0.0.1:{s.api_port}/metrics",
                f"  schema registry   http://127.0.0.1:{s.api_port}/subjects",
                f"  worker stats      http://127.0.0.1:{s.worker_port}/stats   (trades per instrument, live)",
                f"  sink metrics      http://127.0.0.1:{s.sink_port}/metrics   (bars_sunk_total)",
                *(
                    f"  {feed + ' metrics':<17} http://127.0.0.1:{s.connector_port + k}/metrics"
                    "   (trades_published_total)"
                    for k, feed in enumerate(self.feeds)
                ),
                f"  WebSocket bars    ws://127.0.0.1:{s.ws_port}/?api_key=$(cat {self.run_dir}/ws-api-key)",
                f"                    e.g. {py} -m gateways.ws.watch --url ws://127.0.0.1:{s.ws_port}"
                f" --key-file {self.run_dir}/ws-api-key bars.1s.*   (or trades.*, quotes.*)",
                f'  latest price      curl -H "X-API-Key: $(cat {self.run_dir}/ws-api-key)"'
                f" http://127.0.0.1:{s.api_port}/stocks/{self.example_symbol()}/price",
                f"  export bars       MS_DATABASE_URL=postgresql://postgres@127.0.0.1:{s.postgres_port}/marketstream"
                f" {py} -m streams bars export --interval 1m --out bars.csv",
                f"  Kafka             {self.bootstrap}   topics: "
                + " ".join(spec.name for spec in all_topics(s.trades_partitions)),
                f"  PostgreSQL        postgresql://postgres@127.0.0.1:{s.postgres_port}/marketstream",
                f"  watch trades      {py} -m streams trades tail --bootstrap {self.bootstrap}",
                f"  logs              {self.logs}/",
            ]
        )

    def check_ports(self) -> None:
        """Raise ConfigError naming each child's port that something already listens on.

        The broker and PostgreSQL are reused when found listening; the children are not, and
        one that finds its port taken would exit while the stack took the port for its own.
        """
        taken = [child.port_set_by for child in self.children() if is_listening(child.port)]
        if taken:
            raise ConfigError(
                f"ports taken: {', '.join(taken)}; stop what listens there (another stack?"
                " `make down` stops it) or set those variables to free ports"
            )

    def wait_children_listening(
        self,
        specs: list[Child],
        children: dict[str, subprocess.Popen[bytes]],
        stopping: Callable[[], bool],
    ) -> str | None:
        """Block until every child listens on its port; return why not, as soon as one exits
        (its port was taken after the check, or it failed) or a stop is asked for."""
        deadline = time.monotonic() + CHILD_START_S
        waiting = {child.name: child.port for child in specs}
        while waiting:
            if stopping():  # first: Ctrl-C reaches the children too, and they exit
                return "stopped while starting"
            if dead := [n for n, p in children.items() if p.poll() is not None]:
                return f"{', '.join(dead)} exited while starting; see {self.logs}/"
            if time.monotonic() > deadline:
                return f"{', '.join(waiting)} did not listen within {CHILD_START_S:.0f} s"
            waiting = {n: port for n, port in waiting.items() if not is_listening(port)}
            if waiting:
                time.sleep(0.05)
        return None

    def supervise(self) -> int:
        """Run the stack in the foreground until SIGINT/SIGTERM; return the exit status."""
        if pid := self.running_supervisor():
            print(f"already running (supervisor pid {pid}); reusing it.\n{self.urls()}", flush=True)
            return 0
        self.check_ports()
        self.logs.mkdir(parents=True, exist_ok=True)
        stopping = False

        def request_stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        broker = None
        started_postgres = False
        children: dict[str, subprocess.Popen[bytes]] = {}
        status = 0
        try:
            if is_listening(self.s.kafka_port):
                print(f"reusing the broker already on {self.bootstrap}", flush=True)
            else:
                broker = start_broker(self.s.kafka_port, self.logs / "broker.log")
            if is_listening(self.s.postgres_port):
                print(
                    f"reusing the PostgreSQL server already on port {self.s.postgres_port}",
                    flush=True,
                )
            else:
                start_postgres(self.pg_data, self.s.postgres_port)
                started_postgres = True
            database_url = ensure_database(self.s.postgres_port, "marketstream")
            kafka_admin.create_topics(self.bootstrap, all_topics(self.s.trades_partitions))
            subprocess.run(
                [sys.executable, "-m", "streams", "db", "migrate"],
                check=True,
                env=self.child_env(database_url),
            )
            env = self.child_env(database_url)
            specs = self.children()
            for child in specs:
                with (self.logs / f"{child.name}.log").open("ab") as out:
                    children[child.name] = subprocess.Popen(
                        [sys.executable, "-m", *child.module],
                        env=env | child.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
            if failed := self.wait_children_listening(specs, children, lambda: stopping):
                print(f"{failed}; stopping the stack", flush=True)
                return 0 if stopping else 1
            self.state_file.write_bytes(
                orjson.dumps(
                    {
                        "supervisor": os.getpid(),
                        "children": {n: p.pid for n, p in children.items()},
                        "ready": True,
                    }
                )
            )
            print(self.urls(), "\nCtrl-C (or `make down`) stops everything.", flush=True)
            while not stopping:
                if dead := [n for n, p in children.items() if p.poll() is not None]:
                    print(
                        f"{', '.join(dead)} exited; see {self.logs}/; stopping the stack",
                        flush=True,
                    )
                    status = 1
                    break
                time.sleep(0.2)
        finally:
            self._stop(children, broker, started_postgres)
        return status

    def _stop(
        self,
        children: dict[str, subprocess.Popen[bytes]],
        broker: subprocess.Popen[bytes] | None,
        started_postgres: bool,
    ) -> None:
        print("stopping: connectors and workers flush first", flush=True)
        for name in [*self.feeds, "ws-gateway", "worker", "sink", "api", *children]:
            if (p := children.get(name)) and p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if started_postgres:
            stop_postgres(self.pg_data)
        if broker is not None:
            stop_broker(broker)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        print("stopped.", KEPT_AND_LOST.format(run_dir=self.run_dir), flush=True)

    def detach(self) -> int:
        """Start the supervisor in the background; return once it is ready or has failed."""
        if pid := self.running_supervisor():
            print(f"already running (supervisor pid {pid}); reusing it.\n{self.urls()}", flush=True)
            return 0
        self.check_ports()
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "stack.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams", "stack", "up"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                print(f"the stack failed to start; see {self.logs}/stack.log", file=sys.stderr)
                return 1
            if self.running_supervisor() == process.pid:
                print(self.urls(), "\n`make down` stops it.", flush=True)
                return 0
            time.sleep(0.2)
        print("the stack did not become ready within 300 s", file=sys.stderr)
        return 1

    def down(self) -> int:
        """Stop a running supervisor and wait until everything it started has stopped."""
        pid = self.running_supervisor()
        if pid is None:
            print("not running")
            return 0
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while self.running_supervisor() == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running_supervisor() == pid:
            print(f"supervisor {pid} did not stop within 90 s", file=sys.stderr)
            return 1
        print("stopped.", KEPT_AND_LOST.format(run_dir=self.run_dir))
        return 0
