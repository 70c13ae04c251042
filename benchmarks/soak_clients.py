"""Subscribers of the `soak` scenario: many WebSocket clients of real bars, in one process.

`python -m benchmarks.soak_clients --url ws://127.0.0.1:PORT --connections N --instruments M
--out PATH [...]`

Each connection is benchmarks.ws_clients' Subscriber (bare asyncio Protocol on uvloop, minimal
RFC 6455), counting the simulator's bars rather than the ws scenario's marked ones. The first
`--wildcard` connections subscribe to `bars.<interval>.*`; each other one to `--per-client`
instruments' `bars.<interval>.<instrument>`, spread so that every instrument has subscribers.
Bars are counted by substring in place; every `--sample-every`-th connection parses each
message and records, per first emission of a bar, two latencies in whole milliseconds:

- due: receive wall time minus the bar's window end + grace, the earliest moment a live
  pipeline can know the bar (simulator, Kafka, fold, bars topic, gateway, loopback, client);
- emit: receive wall time minus the bar's `ts_recv_us`, when aggregate_bars emitted it.

Control, one line each way on stdin/stdout: `ready <subscribed> <failed>` once every connection
has its pong after subscribing; `poll` answers `poll <json>` with what arrived since the last
poll (counts and sparse latency histograms, {ms: count}); `stop` or end of input writes the
totals as JSON at --out and prints `done`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
import uvloop

from benchmarks.ws_clients import (
    Stats,
    Subscriber,
    answer_commands,
    connect,
    raise_nofile_limit,
)
from connectors.simulator import SimulatorConfig, SimulatorConnector
from shared.intervals import DEFAULT_INTERVALS, parse_intervals

_EVENT: Final = b'{"type":"'
_BAR: Final = b'{"type":"bar"'
LENGTHS_US: Final = dict(parse_intervals(DEFAULT_INTERVALS))


class Tally:
    """What every connection received since the last poll; latency histograms in ms."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.bars = 0
        self.frames = 0
        self.bytes = 0
        self.revisions = 0
        self.resyncs = 0
        self.errors = 0
        self.due_ms: dict[int, int] = {}
        self.emit_ms: dict[int, int] = {}

    def take(self) -> dict[str, Any]:
        """Return the counts so far and start again from zero."""
        out = dict(vars(self))
        self.reset()
        return out


def symbols(instruments: int) -> tuple[str, ...]:
    """The simulator's instrument names, as `make up`'s simulator publishes them."""
    settings: dict[str, Any] = {"instruments": instruments}
    return SimulatorConnector(SimulatorConfig(**settings)).symbols


def channels_of(index: int, args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The channels connection `index` subscribes to."""
    if index < args.wildcard:
        return [f"bars.{args.interval}.*"]
    start = (index - args.wildcard) * args.per_client
    return [
        f"bars.{args.interval}.{names[(start + j) % len(names)]}" for j in range(args.per_client)
    ]


class BarSubscriber(Subscriber):
    """A Subscriber that counts real bars; a sampled one records each first emission's latency."""

    def __init__(self, *args: Any, tally: Tally, grace_us: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = tally
        self.grace_us = grace_us

    def _message(self, data: bytes, start: int, end: int, now_us: int) -> None:
        tally = self.tally
        bars = data.count(_BAR, start, end)
        tally.bars += bars
        tally.frames += 1
        tally.bytes += end - start
        if self.sampled or bars != data.count(_EVENT, start, end):
            self._read(data[start:end], now_us)

    def _read(self, payload: bytes, now_us: int) -> None:
        tally = self.tally
        body = orjson.loads(payload)
        for event in body if isinstance(body, list) else [body]:
            kind = event.get("type")
            if kind == "bar" and self.sampled:
                bar = event["bar"]
                if bar["revision"]:
                    tally.revisions += 1
                    continue
                due_us = bar["ts_us"] + LENGTHS_US[bar["interval"]] + self.grace_us
                due = (now_us - due_us) // 1000
                emit = (now_us - bar["ts_recv_us"]) // 1000
                tally.due_ms[due] = tally.due_ms.get(due, 0) + 1
                tally.emit_ms[emit] = tally.emit_ms.get(emit, 0) + 1
            elif kind == "pong":
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif kind == "lagging":
                tally.resyncs += 1
            elif kind == "error":
                tally.errors += 1


async def _open(
    args: argparse.Namespace,
    index: int,
    names: tuple[str, ...],
    stats: Stats,
    tally: Tally,
    gate: asyncio.Semaphore,
) -> BarSubscriber:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = orjson.dumps(
        {"op": "subscribe", "channels": channels_of(index, args, names), "snapshot": 0}
    )
    sampled = index % args.sample_every == 0
    grace_us = round(args.grace_s * 1e6)
    return await connect(
        lambda: BarSubscriber(
            host,
            port,
            url.path or "/",
            args.api_key,
            request,
            stats,
            sampled,
            tally=tally,
            grace_us=grace_us,
        ),
        host,
        port,
        gate,
        args.subscribe_timeout,
    )


def _merge(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            into = total.setdefault(key, {})
            for ms, n in value.items():
                into[ms] = into.get(ms, 0) + n
        else:
            total[key] = total.get(key, 0) + value


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = symbols(args.instruments)
    stats, tally = Stats(), Tally()
    gate = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(_open(args, i, names, stats, tally, gate) for i in range(args.connections)),
        return_exceptions=True,
    )
    subscribers = [s for s in opened if isinstance(s, BarSubscriber)]
    failures = [repr(e) for e in opened if isinstance(e, BaseException)]
    connect_s = time.perf_counter() - started
    tally.take()  # what arrived while connecting is not counted
    print(f"ready {len(subscribers)} {len(failures)}", flush=True)
    total: dict[str, Any] = {}

    def answer(command: str) -> str | None:
        if command != "poll":
            return None
        part = tally.take() | {"closed": stats.closed - total.get("closed", 0)}
        _merge(total, part)
        return f"poll {json.dumps(part, separators=(',', ':'))}"

    await answer_commands(answer, args.max_seconds, subscribers)
    return {
        "connections": args.connections,
        "subscribed": len(subscribers),
        "failed": len(failures),
        "failures": failures[:5],
        "connect_seconds": connect_s,
        "sampled_connections": sum(1 for s in subscribers if s.sampled),
        "close_codes": stats.close_codes,
        "totals": {k: v for k, v in total.items() if not isinstance(v, dict)},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_clients")
    add = parser.add_argument
    add("--url", required=True, help="ws://host:port/")
    add("--connections", type=int, required=True)
    add("--instruments", type=int, required=True, help="the simulator's instruments")
    add("--interval", default="1s", help="bar interval subscribed to")
    add("--per-client", type=int, default=4, help="instruments per non-wildcard connection")
    add("--wildcard", type=int, default=10, help="connections subscribed to bars.<interval>.*")
    add("--grace-s", type=float, required=True, help="the bars worker's MS_BARS_GRACE_S")
    add("--api-key", default="", help="sent as X-API-Key")
    add("--sample-every", type=int, default=10, help="parse 1 connection in N")
    add("--concurrency", type=int, default=50, help="handshakes in flight")
    add("--subscribe-timeout", type=float, default=60.0)
    add("--max-seconds", type=float, default=7200.0, help="exit after this long")
    add("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    result = uvloop.run(run(args))
    args.out.write_text(json.dumps(result))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
