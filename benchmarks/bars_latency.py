"""Bar latency: from producing the input that closes a window to consuming the bar.

Per partition, the clock records when each input message was produced and the event time it
carried; a recorder thread notes when each bar arrives. A bar's latency is its arrival minus
the production of the first message that carried its window end + grace.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from numpy.typing import NDArray

from benchmarks import common
from benchmarks.bars_data import latency_start_us
from shared.codec import Codec
from shared.intervals import DEFAULT_INTERVALS, parse_intervals
from shared.partitioning import partition_for

LENGTHS_US: Final = dict(parse_intervals(DEFAULT_INTERVALS))
LATENCY_INTERVAL: Final = "1m"
RECORDER_WAIT_S: Final = 0.002  # the bar recorder hands over what it fetched this often


Received = list[tuple[float, bytes | None, bytes]]


class BarRecorder:
    """Consume an output topic in a thread and note when each bar arrived (wall clock)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-bars-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.received: Received = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._record, name="bar-recorder", daemon=True)

    def skip_existing(self, quiet_s: float = 1.0, timeout_s: float = 120.0) -> int:
        """Read past what the topic holds now (until `quiet_s` pass with nothing); return how many."""
        skipped = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (batch := self.consumer.consume(10_000, quiet_s)):
            skipped += len(batch)
        return skipped

    def start(self) -> None:
        """Start recording. This process holds the run's whole input, and a full collection of
        it would stall the recorder and count as latency, so its heap is frozen first."""
        gc.freeze()
        self._thread.start()

    def _record(self) -> None:
        while not self._stopping.is_set():
            batch = self.consumer.consume(10_000, RECORDER_WAIT_S)
            now = time.time()
            self.received += [
                (now, m.key(), value)
                for m in batch
                if m.error() is None and (value := m.value()) is not None
            ]

    def stop(self, quiet_s: float = 1.0, timeout_s: float = 15.0) -> Received:
        """Wait until nothing arrives for `quiet_s`, then stop; return what arrived."""
        deadline = time.monotonic() + timeout_s
        count = -1
        while time.monotonic() < deadline and count != len(self.received):
            count = len(self.received)
            time.sleep(quiet_s)
        self._stopping.set()
        self._thread.join()
        self.consumer.close()
        return self.received


class ClosingClock:
    """Per partition: the event time each input message carried, and when it was produced."""

    def __init__(self, sent: Sequence[tuple[int, int, float]], partitions: int) -> None:
        self.messages = len(sent)
        self._clock: list[NDArray[np.int64]] = []
        self._wall: list[NDArray[np.float64]] = []
        for p in range(partitions):
            mine = [(c, w) for q, c, w in sent if q == p]
            clock = np.array([c for c, _ in mine], dtype=np.int64)
            self._clock.append(np.maximum.accumulate(clock) if len(clock) else clock)
            self._wall.append(np.array([w for _, w in mine], dtype=np.float64))

    def reached(self, partition: int, event_us: int) -> float | None:
        """Return when the partition's first message with event time >= `event_us` was produced."""
        clock = self._clock[partition]
        i = int(np.searchsorted(clock, event_us, side="left"))
        return float(self._wall[partition][i]) if i < len(clock) else None


# instrument, interval, window start (us), revision, when the processor built it (us) if known
BarKey = tuple[str, str, int, int, int | None]


def avro_bar_key(codec: Codec) -> Callable[[bytes | None, bytes], BarKey]:
    def key(_: bytes | None, value: bytes) -> BarKey:
        bar = codec.decode_bar(value)
        return bar.instrument, bar.interval, bar.ts_us, bar.revision, bar.ts_recv_us

    return key


def quix_bar_key(key: bytes | None, value: bytes) -> BarKey:
    start_us = int(orjson.loads(value)["start"]) * 1000
    return (key or b"").decode(), LATENCY_INTERVAL, start_us, 0, None


def latency_report(
    args: argparse.Namespace,
    received: Received,
    clock: ClosingClock,
    bar_key: Callable[[bytes | None, bytes], BarKey],
    skipped_before: int,
) -> tuple[list[float], dict[str, Any]]:
    """Return the 1m-bar latencies (seconds) and a summary of every interval and what was skipped."""
    grace_us = round(args.grace_s * 1e6)
    warmup_us = int(args.latency_warmup_s * args.latency_speedup * 1e6)
    sample_from = latency_start_us(args) + warmup_us
    per_interval: dict[str, list[float]] = {}
    built: list[float] = []
    consumed: list[float] = []
    skipped = {"warmup": 0, "revisions": 0, "no_closing_message": 0, "negative": 0}
    for arrived, key, value in received:
        instrument, interval, start_us, revision, built_us = bar_key(key, value)
        if start_us < sample_from:
            skipped["warmup"] += 1
            continue
        if revision:
            skipped["revisions"] += 1
            continue
        due_us = start_us + LENGTHS_US[interval] + grace_us
        sent = clock.reached(partition_for(instrument, args.partitions), due_us)
        if sent is None:
            skipped["no_closing_message"] += 1
            continue
        skipped["negative"] += arrived < sent
        per_interval.setdefault(interval, []).append(arrived - sent)
        if built_us is not None and interval == LATENCY_INTERVAL:
            built.append(built_us / 1e6 - sent)
            consumed.append(arrived - built_us / 1e6)
    summary: dict[str, Any] = {
        "bars_on_topic_before_feed": skipped_before,
        "bars_received": len(received),
        "input_messages": clock.messages,
        "not_sampled": skipped,
    }
    everything = [s for samples in per_interval.values() for s in samples]
    for name, samples in [("all_intervals", everything), *sorted(per_interval.items())]:
        p50, p99 = common.percentiles_ms(samples)
        summary[name] = {"samples": len(samples), "p50_ms": p50, "p99_ms": p99}
    for name, part in (
        ("closing_message_to_bar_built", built),
        ("bar_built_to_consumed", consumed),
    ):
        if part:
            p50, p99 = common.percentiles_ms(part)
            summary[f"{LATENCY_INTERVAL}_{name}"] = {"p50_ms": p50, "p99_ms": p99}
    return per_interval.get(LATENCY_INTERVAL, []), summary
