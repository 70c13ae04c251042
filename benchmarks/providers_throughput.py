"""Part (a) of the providers scenario: one run of one client over the recording, and the runs
of a path as its PathResult.

Every run starts the fake Alpaca in a process of its own (benchmarks/providers_fake.py), then
the client in another: ours (benchmarks/providers_ours.py) with this project's python, the
alpaca-py paths (benchmarks/providers_peer.py) with `--alpaca-python`. Each client writes what
it measured as JSON; the fake's CPU time is read from /proc around the client's run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from benchmarks import common, processes
from benchmarks.common import PathResult
from benchmarks.providers_data import alpaca_frames, draw_trades
from benchmarks.providers_fake import capture_payloads, symbols_of, write_payloads
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from shared.errors import DeliveryError
from shared.topics import TRADES, all_topics

log = logging.getLogger(__name__)

OURS: Final = "ours"
PEER: Final = "alpaca_py"
PEER_RAW: Final = "alpaca_py_raw"
PATHS: Final[dict[str, str]] = {
    OURS: "AlpacaConnector + ConnectorRunner as shipped: websockets client, MessagePack frames "
    "of trades read by a numba kernel into one TradeBatch (numpy columns) per frame (any other "
    "frame through msgpack-python), stale watchdog, frames split by partition together about "
    "once per linger (5 ms), Avro, confluent-kafka acks=all idempotent; timed to the last ack",
    PEER: "alpaca-py StockDataStream, defaults: websockets legacy client, msgpack, per message "
    "a datetime and a pydantic Trade model, awaited handler that counts; no Kafka",
    PEER_RAW: "alpaca-py StockDataStream(raw_data=True): as alpaca_py without the model (the "
    "raw dict per message); no Kafka",
}
THROUGHPUT: Final = (OURS, PEER, PEER_RAW)
PEERS: Final = (PEER, PEER_RAW)
START_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Recording:
    frames: Path
    payloads: Path | None
    symbols: str
    trades: int
    frame_count: int
    frame_bytes: int


def record(args: argparse.Namespace, root: Path) -> Recording:
    """Draw the recording, write it for the fake, and capture what the fake sends for it."""
    trades = draw_trades(args.trades, args.instruments, args.seed, rate=args.market_rate)
    frames = alpaca_frames(trades, args.frame_trades)
    path = root / "alpaca_frames.jsonl"
    path.write_bytes(b"".join(orjson.dumps(frame) + b"\n" for frame in frames))
    started = time.perf_counter()
    captured = asyncio.run(capture_payloads(frames))
    log.info("captured %d frames in %.1f s", len(captured), time.perf_counter() - started)
    payloads = None
    if args.fake_replay == "captured":
        payloads = root / "alpaca_frames.msgpack"
        write_payloads(captured, payloads)
    return Recording(
        frames=path,
        payloads=payloads,
        symbols=",".join(symbols_of(frames)),
        trades=len(trades),
        frame_count=len(captured),
        frame_bytes=sum(len(p) for p in captured),
    )


@contextlib.contextmanager
def _fake(
    recording: Recording, root: Path, name: str, compression: str
) -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """Run the fake Alpaca process for the block; yield (its URL, its process)."""
    url_file = root / f"fake-{name}.url"
    url_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.providers_fake"]
    command += ["--recording", str(recording.frames), "--url-file", str(url_file)]
    command += ["--compression", compression]
    if recording.payloads is not None:
        command += ["--payloads", str(recording.payloads)]
    log_path = root / f"fake-{name}.log"
    with processes.running(command, {}, log_path) as fake:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not url_file.exists() or not url_file.read_text():
            if fake.poll() is not None or time.monotonic() > deadline:
                raise DeliveryError(f"the fake Alpaca did not start:\n{processes.tail(log_path)}")
            time.sleep(0.05)
        yield url_file.read_text(), fake


def _client_command(
    name: str, args: argparse.Namespace, recording: Recording, url: str, bootstrap: str
) -> list[str]:
    common_flags = ["--url", url, "--trades", str(recording.trades)]
    common_flags += ["--symbols", recording.symbols, "--timeout-s", str(args.run_timeout_s)]
    if name == OURS:
        topic = f"bench.providers.ours.{uuid.uuid4().hex[:8]}"
        spec = next(s for s in all_topics(args.partitions) if s.name == TRADES)
        common.create_topic(bootstrap, spec, topic, args.partitions)
        module = [sys.executable, "-m", "benchmarks.providers_ours"]
        return module + common_flags + ["--bootstrap", bootstrap, "--topic", topic]
    module = [args.alpaca_python, "-m", "benchmarks.providers_peer"]
    return module + common_flags + (["--raw-data"] if name == PEER_RAW else [])


def run_client(
    name: str, args: argparse.Namespace, recording: Recording, bootstrap: str, root: Path, run: str
) -> dict[str, Any]:
    """Serve the recording from a fresh fake to one client process; return what it measured."""
    tag = f"{name}-{run}"
    out, log_path = root / f"{tag}.json", root / f"{tag}.log"
    env = {**os.environ, "ALPACA_API_KEY": KEY_ID, "ALPACA_SECRET_KEY": SECRET_KEY}
    with _fake(recording, root, tag, args.fake_compression) as (url, fake):
        command = [*_client_command(name, args, recording, url, bootstrap), "--out", str(out)]
        fake_cpu_before = processes.cpu_s(fake.pid)
        with log_path.open("wb") as client_log:
            status = subprocess.run(
                command,
                cwd=common.REPO_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=client_log,
                stderr=subprocess.STDOUT,
                timeout=args.run_timeout_s + 60,
                check=False,
            ).returncode
        fake_cpu_after = processes.cpu_s(fake.pid)
    if status != 0 or not out.exists():
        raise DeliveryError(f"{name} run {run} failed (exit {status}):\n{processes.tail(log_path)}")
    measured: dict[str, Any] = orjson.loads(out.read_bytes())
    if fake_cpu_before is not None and fake_cpu_after is not None:
        measured["fake_cpu_s"] = fake_cpu_after - fake_cpu_before
    log.info(
        "%s run %s: %d trades in %.3f s (%.0f trades/s)",
        name,
        run,
        measured["trades"],
        measured["seconds"],
        measured["trades"] / measured["seconds"],
    )
    return measured


def throughput_result(name: str, runs: list[dict[str, Any]], recording: Recording) -> PathResult:
    cpu = [r["cpu_s"] for r in runs]
    return PathResult(
        name=name,
        description=PATHS[name],
        items=recording.trades,
        messages=recording.frame_count,
        wire_bytes=recording.frame_bytes,
        run_seconds=[r["seconds"] for r in runs],
        rss_before_mb=runs[0]["rss_before_mb"],
        rss_peak_mb=max(r["rss_peak_mb"] or 0.0 for r in runs),
        details={
            "client_cpu_s_median": statistics.median(cpu),
            "client_cpu_us_per_trade_median": statistics.median(cpu) / recording.trades * 1e6,
            "messages_are": "WebSocket frames received (the same frames for every path)",
            "rss_note": "the client process: RSS after its warm-up, peak since then",
            "runs": runs,
        },
    )
