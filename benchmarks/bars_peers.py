"""The peers of the `bars` scenario, each run as a process of its own by `benchmarks.bars`.

`python -m benchmarks.bars_peers naive-faust|quix --bootstrap … --input … --output … --port …`

- naive-faust: a Faust agent that decodes one Avro trade per event (fastavro) and folds it into
  a dict of open bars for every interval; a window closes when its partition's event time
  passes window end + grace, and its bar is sent with Faust's own producer, Avro-encoded like
  ours.
- quix: Quix Streams, a tumbling 1m window (OHLCV) per instrument with closing by partition,
  bars written as Quix's JSON.

Both count what they processed and serve the counts as Prometheus text on
127.0.0.1:`--port`/metrics, named like the worker's. Only the standard library is imported at
module level, because the Quix peer runs from a virtualenv that has quixstreams and fastavro but
not this project's dependencies.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast

log = logging.getLogger("benchmarks.bars_peers")

NAIVE: Final = "naive_faust"
QUIX: Final = "quix"
FRAME_BYTES: Final = 5  # Confluent framing: magic byte and a 4-byte schema id


class Counters:
    """What a peer has done; plain ints, read by the HTTP thread when scraped."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.trades = 0
        self.late = 0
        self.bars: dict[str, int] = {}

    def exposition(self) -> bytes:
        lines = [f'trades_processed_total{{agent="{self.agent}"}} {self.trades}']
        lines += [f'trades_late_total{{agent="{self.agent}"}} {self.late}']
        lines += [
            f'bars_emitted_total{{interval="{name}",kind="first"}} {n}'
            for name, n in list(self.bars.items())
        ]
        return ("\n".join(lines) + "\n").encode()


def serve_counters(counters: Counters, port: int) -> None:
    """Serve `counters` on 127.0.0.1:`port` (/metrics, and /health/live) from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counters.exposition() if self.path == "/metrics" else b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="counters", daemon=True).start()


def trade_reader(schema_json: str) -> Callable[[bytes], dict[str, Any]]:
    """Return a function that decodes one Confluent-framed Avro trade with fastavro."""
    import fastavro

    schema = fastavro.parse_schema(json.loads(schema_json))
    reader = fastavro.schemaless_reader

    def read(value: bytes) -> dict[str, Any]:
        return cast(dict[str, Any], reader(io.BytesIO(value[FRAME_BYTES:]), schema))

    return read


# naive Faust


def run_naive_faust(args: argparse.Namespace) -> int:
    """Run the naive agent until SIGTERM; Faust's worker owns the process from here on."""
    import faust

    from shared.codec import Codec
    from shared.intervals import parse_intervals
    from shared.models import Bar
    from shared.schema_ids import CommittedSchemas
    from shared.settings import KafkaSettings
    from streams.app import WorkerSettings, faust_config

    counters = Counters(NAIVE)
    serve_counters(counters, args.port)
    worker = WorkerSettings.model_validate(
        {"app_id": args.group, "data_dir": args.data_dir, "http_port": 0}
    )
    config = faust_config(worker, KafkaSettings.model_validate({"bootstrap": args.bootstrap}))
    app = faust.App(args.group, **config)
    source = app.topic(args.input, value_serializer="raw", key_serializer="raw")
    sink = app.topic(args.output, value_serializer="raw", key_serializer="raw")
    read = trade_reader(args.schema_json)
    codec = Codec(CommittedSchemas())
    intervals = parse_intervals(args.intervals)
    lengths = dict(intervals)
    shortest = intervals[0][1]
    grace_us = round(args.grace_s * 1e6)
    # Per partition: open bars by (instrument, interval, window start) -> [open, high, low,
    # close, volume, price*volume, count, buy volume, sell volume, first ts, last ts].
    books: dict[int, dict[tuple[str, str, int], list[Any]]] = {}
    watermarks: dict[int, int] = {}
    next_close: dict[int, int] = {}

    async def close_due(partition: int, watermark: int) -> None:
        book = books[partition]
        for key in [k for k in book if k[2] + lengths[k[1]] + grace_us <= watermark]:
            o, h, lo, c, v, pv, n, buy, sell, _, last_ts = book.pop(key)
            bar = Bar(
                instrument=key[0],
                interval=key[1],
                ts_us=key[2],
                revision=0,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=v,
                vwap=pv / v,
                trade_count=n,
                buy_volume=buy,
                sell_volume=sell,
                source="simulator",
                ts_event_us=last_ts,
                ts_recv_us=time.time_ns() // 1000,
            )
            await sink.send(key=key[0].encode(), value=codec.encode_bar(bar))
            counters.bars[key[1]] = counters.bars.get(key[1], 0) + 1

    @app.agent(source, name="naive_bars")
    async def naive_bars(stream: Any) -> None:
        async for event in stream.events():
            trade = read(event.value)
            partition = event.message.partition
            book = books.setdefault(partition, {})
            ts = trade["ts_event"]
            watermark = max(watermarks.get(partition, ts), ts)
            watermarks[partition] = watermark
            instrument, price, size, side = (
                trade["instrument"],
                trade["price"],
                trade["size"],
                trade["side"],
            )
            for name, length in intervals:
                start = ts - ts % length
                if start + length + grace_us <= watermark:
                    counters.late += 1  # its window has closed already
                    continue
                key = (instrument, name, start)
                bar = book.get(key)
                if bar is None:
                    book[key] = [
                        price,
                        price,
                        price,
                        price,
                        size,
                        price * size,
                        1,
                        size if side > 0 else 0.0,
                        size if side < 0 else 0.0,
                        ts,
                        ts,
                    ]
                    continue
                if ts < bar[9]:
                    bar[0], bar[9] = price, ts
                if ts >= bar[10]:
                    bar[3], bar[10] = price, ts
                bar[1] = max(bar[1], price)
                bar[2] = min(bar[2], price)
                bar[4] += size
                bar[5] += price * size
                bar[6] += 1
                if side > 0:
                    bar[7] += size
                elif side < 0:
                    bar[8] += size
            if watermark >= next_close.get(partition, 0):
                await close_due(partition, watermark)
                next_close[partition] = (
                    (watermark - grace_us) // shortest + 1
                ) * shortest + grace_us
            counters.trades += 1

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
    return 0


# Quix Streams


def run_quix(args: argparse.Namespace) -> int:
    """Run the Quix Streams application until SIGTERM."""
    # quixstreams lives in a virtualenv of its own (see the module docstring).
    from quixstreams import Application  # type: ignore[import-not-found]
    from quixstreams.dataframe.windows import (  # type: ignore[import-not-found]
        Earliest,
        Latest,
        Max,
        Min,
        Sum,
    )
    from quixstreams.models import Deserializer  # type: ignore[import-not-found]

    counters = Counters(QUIX)
    serve_counters(counters, args.port)
    read = trade_reader(args.schema_json)

    class TradeDeserializer(Deserializer):  # type: ignore[misc]
        def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
            return read(value)

    def processed(topic: str, partition: int, offset: int) -> None:
        if topic == args.input:
            counters.trades += 1

    def emitted(bar: dict[str, Any]) -> dict[str, Any]:
        counters.bars["1m"] = counters.bars.get("1m", 0) + 1
        return bar

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.data_dir,
        use_changelog_topics=not args.no_changelog,
        on_message_processed=processed,
        loglevel="WARNING",
        # The group timeouts our worker uses: Tansu holds a JoinGroup for about half the
        # session timeout, so librdkafka's default (45 s) would only lengthen the start-up.
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )
    source = app.topic(
        args.input,
        key_deserializer="str",
        value_deserializer=TradeDeserializer(),
        timestamp_extractor=lambda value, headers, ts, kind: value["ts_event"] // 1000,
    )
    sink = app.topic(args.output, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = (
        sdf.tumbling_window(duration_ms=60_000, grace_ms=round(args.grace_s * 1000))
        .agg(
            open=Earliest("price"),
            high=Max("price"),
            low=Min("price"),
            close=Latest("price"),
            volume=Sum("size"),
        )
        .final(closing_strategy="partition")
    )
    sdf = sdf.apply(emitted)
    sdf.to_topic(sink)
    app.run()
    return 0


RUNNERS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "naive-faust": run_naive_faust,
    "quix": run_quix,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bars_peers", description=__doc__)
    parser.add_argument("peer", choices=sorted(RUNNERS))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True, help="topic of per-trade Avro messages")
    parser.add_argument("--output", required=True, help="topic the bars go to")
    parser.add_argument("--group", required=True, help="application id / consumer group")
    parser.add_argument("--port", type=int, required=True, help="port of /metrics")
    parser.add_argument("--data-dir", required=True, help="Faust datadir or Quix state dir")
    parser.add_argument("--schema-json", required=True, help="the trade schema, canonical JSON")
    parser.add_argument("--intervals", default="1s,5s,15s,1m,5m,15m,1h,4h,1d")
    parser.add_argument("--grace-s", type=float, default=2.0)
    parser.add_argument(
        "--no-changelog", action="store_true", help="quix: run without changelog topics"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return RUNNERS[args.peer](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
