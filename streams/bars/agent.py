"""The `aggregate_bars` agent: trade batches in, bars and their revisions out, crash-safe.

Crash safety without transactions: each partition's book is checkpointed to PostgreSQL with the
offset it covers, and input messages are acknowledged to Faust only after a checkpoint that
includes them, once every bar and dead letter they caused has been acknowledged by Kafka. After
a crash the worker restores the checkpoint and refolds the messages after it; folding is
deterministic, so it re-emits exactly the bars (same keys, same revisions) it may already have
sent: consumers deduplicate by key and revision, and the sink's upsert is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
import numpy as np
import orjson

from shared.codec import BAR
from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, DeliveryError, TransientError
from shared.kafka_admin import TopicIncarnation, topic_incarnation
from shared.metrics import BAR_EMIT_DELAY, BARS_EMITTED, TRADES_PROCESSED
from shared.models import BarBatch
from shared.partitioning import partition_for
from shared.settings import BarsSettings, load_settings
from shared.topics import BAR_BATCHES, BARS, TRADES
from streams.app import Worker, manual_acks
from streams.bars.checkpoints import Checkpoint, CheckpointStore
from streams.bars.core import (
    BarBook,
    BarsConfig,
    ChannelSeqs,
    FoldResult,
    FoldScratch,
    encode_snapshot,
    summarize_snapshot,
)
from streams.bars.frames import BarFrames

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPONENT = "worker.aggregate_bars"
STORED_SEQS_REUSE_S = 60.0
MAX_UNCHECKPOINTED = 2000  # messages held unacknowledged while checkpoints fail, then wait
GOLDEN_RATIO_FRACTION = (5**0.5 - 1) / 2
BACKGROUND_NICENESS = 10


@dataclass
class PartitionBook:
    """A partition's book, the last offset folded into it, the events awaiting a checkpoint."""

    book: BarBook
    offset: int
    pending: list[Any] = field(default_factory=list)
    frames: BarFrames | None = None  # the book's bar encoder, made at its first bar
    checkpointing: bool = False  # from the capture until its save is done or failed
    saving: asyncio.Task[None] | None = None  # the checkpoint being compressed and saved
    checkpointed_s: float = field(default_factory=time.monotonic)
    topic_id: str | None = None  # the incarnation of the input topic the book folds

    async def settled(self) -> None:
        """Wait until no checkpoint of this book is in progress."""
        while self.checkpointing:
            await (self.saving if self.saving is not None else asyncio.sleep(0.01))


def stale_because(
    checkpoint: Checkpoint, incarnation: TopicIncarnation, partition: int
) -> str | None:
    """Say why a checkpoint belongs to another incarnation of the topic, or None if it does not.

    Topic ids decide where both sides have one. Without (a checkpoint from before they were
    kept, a broker before Kafka 2.8), an offset at or past the partition's end gives it away:
    that log never held the message the checkpoint covers. (Tansu reports the start of the last
    record batch as the end, so this fallback may discard a checkpoint of its last batch.)
    """
    if checkpoint.topic_id and incarnation.topic_id:
        if checkpoint.topic_id == incarnation.topic_id:
            return None
        return (
            f"it was taken from another incarnation of {TRADES} (topic id "
            f"{checkpoint.topic_id}, now {incarnation.topic_id})"
        )
    end = incarnation.end_offsets.get(partition, 0)
    if checkpoint.offset >= end:
        return f"it covers offset {checkpoint.offset}, but the partition ends at {end}"
    return None


def discard_because(
    checkpoint: Checkpoint, incarnation: TopicIncarnation, partition: int, layout: str
) -> tuple[str, int] | None:
    """Say why the checkpoint cannot be restored and after which offset to resume, or None.

    The incarnation is judged first: a checkpoint of a lost topic resumes nowhere (-1: every
    message of the new topic is new), whatever its layout. One of this topic taken with other
    intervals, grace or max lateness resumes after its offset, its windows dropped.
    """
    if stale := stale_because(checkpoint, incarnation, partition):
        return stale, -1
    if checkpoint.layout != layout:
        return "it was taken with other intervals, grace or max lateness", checkpoint.offset
    return None


@dataclass(frozen=True, slots=True)
class Capture:
    """What a checkpoint saves: the book as of `offset`, the events it covers, and the
    publisher's mark, which their outputs must be acknowledged up to first."""

    offset: int
    arrays: dict[str, Any]
    events: list[Any]
    mark: int


def yield_cpu_to_the_stream() -> None:
    """Lower the calling thread's CPU priority (Linux, where threads have their own): a
    checkpoint compresses in the background and must not take a core from the stream."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


def checkpoint_phase(partition: int) -> float:
    """Return where in the checkpoint interval the partition's checkpoints fall, in [0, 1).

    Multiples of the golden ratio land far apart for any set of partitions, so the checkpoints
    of whichever partitions a worker owns are spread over the interval: their compressions and
    saves do not all take the second core at once.
    """
    return (partition * GOLDEN_RATIO_FRACTION) % 1.0


async def _retrying(partition: int, attempt: Callable[[], Awaitable[T]]) -> T:
    """Await `attempt()` until it does not raise TransientError, backing off up to 30 s."""
    failures = 0
    while True:
        try:
            return await attempt()
        except TransientError as exc:
            failures += 1
            log.warning("partition %d: %s; retrying", partition, exc)
            await asyncio.sleep(min(30.0, 0.5 * 2**failures))


class BarAggregator:
    """Fold messages into per-partition books; publish bars; checkpoint and acknowledge."""

    def __init__(self, worker: Worker, settings: BarsSettings) -> None:
        self.worker = worker
        self.config = BarsConfig.parse(
            settings.intervals, settings.grace_s, settings.max_lateness_s
        )
        self.checkpoint_interval_s = settings.checkpoint_interval_s
        self.store = CheckpointStore(worker.database_url, worker.settings.group_id, TRADES)
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.books: dict[int, PartitionBook] = {}
        self.scratch = FoldScratch()  # shared by the books: folds never overlap
        self.bars_partitions = 0
        self._lengths_us = self.config.lengths_us
        # BARS_EMITTED's children: first emissions per interval, then revisions per interval
        self._emitted = [
            BARS_EMITTED.labels(name, kind)
            for kind in ("first", "revision")
            for name, _ in self.config.intervals
        ]
        self._trades_processed = TRADES_PROCESSED.labels("aggregate_bars")
        self._saving = asyncio.Lock()
        self._closing = False  # set once the shutdown checkpoints are done
        self._stored: tuple[float, ChannelSeqs | None] = (0.0, None)  # (read at, seqs)
        self._compressing = ThreadPoolExecutor(
            1, "bar-checkpoints", initializer=yield_cpu_to_the_stream
        )

    async def book_of(self, partition: int) -> PartitionBook:
        """Return the partition's book, restoring its checkpoint the first time (retrying)."""
        if partition in self.books:
            return self.books[partition]
        checkpoint, incarnation = await self._load(partition)
        if checkpoint is None:
            book = PartitionBook(BarBook(self.config, scratch=self.scratch), -1)
        elif discarded := discard_because(
            checkpoint, incarnation, partition, self.config.fingerprint()
        ):
            reason, resume_after = discarded
            book = await self._discard(
                partition, checkpoint, reason, resume_after, len(incarnation.end_offsets)
            )
        else:
            book = PartitionBook(
                BarBook.restore(self.config, checkpoint.state, self.scratch), checkpoint.offset
            )
            log.info("partition %d: restored bars as of offset %d", partition, checkpoint.offset)
        book.topic_id = incarnation.topic_id
        book.checkpointed_s -= self.checkpoint_interval_s * checkpoint_phase(partition)
        self.books[partition] = book
        return book

    async def _discard(
        self,
        partition: int,
        checkpoint: Checkpoint,
        reason: str,
        resume_after: int,
        partitions: int,
    ) -> PartitionBook:
        """Start a book without the checkpoint's windows, resuming after `resume_after` (-1 for
        a new incarnation of the topic, where every message is new).

        Its channels continue from the highest seq known: the checkpoint's, or that of a bar
        the sink stored, which may have been emitted after the checkpoint (its message may be
        gone with the topic, but subscribers may have seen it)."""
        old = summarize_snapshot(checkpoint.state, self.config)
        seqs = dict(old.seqs)
        stored = await self._stored_seqs(partition)
        if stored is None:
            log.warning(
                "partition %d: the stored bars' seqs took too long to read; channels continue "
                "from the checkpoint's, and bars emitted after it may repeat a seq",
                partition,
            )
        for (instrument, interval), seq in (stored or {}).items():
            if partition_for(instrument, partitions) == partition:  # the instrument is ours
                seqs[instrument, interval] = max(seq, seqs.get((instrument, interval), 0))
        book = BarBook.continuing(self.config, seqs, self.scratch)
        log.warning(
            "partition %d: discarding the bar checkpoint as of offset %d: %s. Bars start from "
            "%s; %d windows still open in the checkpoint are dropped, and channel sequence "
            "numbers continue where they were",
            partition,
            checkpoint.offset,
            reason,
            "this topic's data" if resume_after < 0 else f"offset {resume_after + 1}",
            old.open_windows,
        )
        return PartitionBook(book, resume_after)

    async def _load(self, partition: int) -> tuple[Checkpoint | None, TopicIncarnation]:
        """Return the partition's checkpoint and the topic as the broker has it, retrying."""

        async def load() -> tuple[Checkpoint | None, TopicIncarnation]:
            checkpoint = await self.store.load(partition)
            incarnation = await asyncio.to_thread(
                topic_incarnation, self.worker.kafka.bootstrap, TRADES
            )
            return checkpoint, incarnation

        return await _retrying(partition, load)

    async def _stored_seqs(self, partition: int) -> ChannelSeqs | None:
        """The sink's highest stored seq per channel (retrying), read once for the partitions
        discarded within STORED_SEQS_REUSE_S of each other (a restarted broker: all of them)."""
        read_at, seqs = self._stored
        if not read_at or time.monotonic() - read_at > STORED_SEQS_REUSE_S:
            seqs = await _retrying(partition, self.store.stored_seqs)
            self._stored = (time.monotonic(), seqs)
        return seqs

    async def handle(self, event: faust.EventT[bytes]) -> None:
        message = event.message
        state = await self.book_of(message.partition)
        if message.offset <= state.offset:  # folded before the last checkpoint
            event.ack()
            return
        try:
            batch = self.worker.trade_batches.of(message)
        except DecodeError as exc:
            self.dead_letters.reject_event(event, exc.reason, str(exc))
        else:
            self.publish(state, state.book.fold(batch), message.partition, message.offset)
            self._trades_processed.inc(len(batch))
        state.offset = message.offset
        state.pending.append(event)
        if time.monotonic() - state.checkpointed_s >= self.checkpoint_interval_s:
            self.checkpoint(message.partition)
        if len(state.pending) > MAX_UNCHECKPOINTED:  # saves are slow or failing: hold the stream
            await state.settled()
            if len(state.pending) > MAX_UNCHECKPOINTED:
                await asyncio.sleep(self.checkpoint_interval_s)

    def publish(
        self, state: PartitionBook, result: FoldResult, partition: int, offset: int
    ) -> None:
        bars = result.emitted
        if len(bars):
            if state.frames is None:
                state.frames = self.bar_frames()
            for bars_partition, messages in state.frames.encode(bars).items():
                self.worker.publisher.produce_batch(BARS, bars_partition, messages)
            self.worker.publisher.produce(
                BAR_BATCHES, self.worker.codec.encode_bar_batch(bars), partition=partition
            )
            self.count(bars)
        for late in result.too_late:
            self.dead_letters.publish(
                reason="too_late",
                detail=f"ts_event {late.ts_event_us} is more than {self.config.max_lateness_us} us "
                f"behind the latest trade of its source in the partition, {late.latest_trade_us}",
                source=TRADES,
                payload=orjson.dumps(
                    {
                        "instrument": late.instrument,
                        "ts_event": late.ts_event_us,
                        "price": late.price,
                        "size": late.size,
                    }
                ),
                ts_event_us=late.ts_event_us,
                source_partition=partition,
                source_offset=offset,
            )

    def bar_frames(self) -> BarFrames:
        if not self.bars_partitions:
            self.bars_partitions = self.worker.publisher.partitions(BARS)
        return BarFrames(self.worker.codec.schema_id(BAR), self.bars_partitions)

    def count(self, bars: BarBatch) -> None:
        """Count bars per interval and kind; observe each interval's worst first-emission delay."""
        first = bars.revision == 0
        per_interval = len(self.config.intervals)
        counts = np.bincount(
            bars.interval_index + per_interval * ~first, minlength=2 * per_interval
        )
        for i in np.flatnonzero(counts).tolist():
            self._emitted[i].inc(int(counts[i]))
        if first.any():
            intervals = bars.interval_index[first]
            due_us = bars.ts_us[first] + self._lengths_us[intervals] + self.config.grace_us
            earliest_us = np.full(per_interval, np.iinfo(np.int64).max)
            np.minimum.at(earliest_us, intervals, due_us)
            for due in earliest_us[counts[:per_interval] > 0].tolist():
                BAR_EMIT_DELAY.observe(max(0, bars.ts_recv_us - due) / 1e6)

    def checkpoint(self, partition: int) -> None:
        """Start saving the partition's book; its input is acknowledged once the save is done.

        The book, its offset, the events it covers and the publisher's mark are captured
        together, and the partition stays claimed until the save is done, so checkpoints of a
        partition never overlap and never land out of order. The rest runs in the background,
        while the stream goes on (a flush would hold it until Kafka acknowledged everything):
        wait until Kafka acknowledged the outputs up to the mark, compress and save (one at a
        time per worker), then acknowledge the events.
        """
        state = self.books.get(partition)
        if self._closing or state is None or not state.pending or state.checkpointing:
            return
        state.checkpointing = True
        events, state.pending = state.pending, []
        offset, arrays = state.offset, state.book.snapshot_arrays()
        mark = self.worker.publisher.mark()
        state.checkpointed_s = time.monotonic()
        state.saving = asyncio.create_task(
            self._save(partition, state, Capture(offset, arrays, events, mark))
        )

    async def _save(self, partition: int, state: PartitionBook, capture: Capture) -> None:
        try:
            try:
                await self.worker.publisher.settled(capture.mark)
            except DeliveryError as exc:
                # Bars or dead letters of these events are lost: only refolding them from the
                # last checkpoint emits them again, so the worker stops, and its restart does.
                log.error("partition %d: outputs lost (%s); stopping to refold", partition, exc)
                state.pending[:0] = capture.events
                await self.worker.app.crash(exc)
                return
            async with self._saving:  # one compression at a time: it shares the second core
                snapshot = await asyncio.get_running_loop().run_in_executor(
                    self._compressing, encode_snapshot, capture.arrays
                )
                await self.store.save(
                    partition,
                    Checkpoint(capture.offset, self.config.fingerprint(), snapshot, state.topic_id),
                )
        except Exception as exc:  # whatever failed, the input is simply checkpointed later
            log.warning(
                "checkpoint of partition %d failed (%s); input stays unacknowledged until one "
                "succeeds",
                partition,
                exc,
                exc_info=not isinstance(exc, TransientError),
            )
            state.pending[:0] = capture.events
            return
        finally:
            state.saving = None
            state.checkpointing = False
        if self.books.get(partition) is state:  # still ours: the new owner commits otherwise
            for event in capture.events:
                event.ack()

    async def checkpoint_all(self) -> None:
        """Checkpoint every partition and wait until each save is done (shutdown); no
        checkpoint starts after it."""
        for partition, state in list(self.books.items()):
            await state.settled()
            self.checkpoint(partition)
            await state.settled()
        self._closing = True

    async def close(self) -> None:
        """Release the checkpoint store and the compression thread (shutdown)."""
        await self.store.close()
        self._compressing.shutdown()

    async def forget(self, partitions: set[int]) -> None:
        """Drop books of revoked partitions, once their saves are done: their next owner
        restores from the checkpoint, which must not change after it has read it."""
        for partition in partitions:
            state = self.books.pop(partition, None)
            if state is not None:
                await state.settled()


def install(worker: Worker) -> None:
    """Declare `aggregate_bars`, its checkpoint timer and its rebalance hook on the app."""
    aggregator = BarAggregator(worker, load_settings(BarsSettings))

    @worker.app.agent(worker.trades, name="aggregate_bars")
    async def aggregate_bars(stream: faust.StreamT[bytes]) -> None:
        """Fold trade batches into bars; acknowledge input only once checkpointed."""
        async for event in manual_acks(stream).events():
            await aggregator.handle(event)

    @worker.app.timer(interval=aggregator.checkpoint_interval_s)
    async def checkpoint_quiet_partitions() -> None:
        """Checkpoint the partitions no new message has checkpointed for an interval."""
        due = time.monotonic() - aggregator.checkpoint_interval_s
        for partition, state in list(aggregator.books.items()):
            if state.checkpointed_s <= due:
                aggregator.checkpoint(partition)

    # Faust's signal types expect (sender, *args, signal=..., **kwargs); ours name their arguments.
    @worker.app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def checkpoint_on_shutdown(app: faust.App, **_: Any) -> None:
        await aggregator.checkpoint_all()
        await aggregator.close()

    @worker.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        await aggregator.forget({tp.partition for tp in revoked if tp.topic == TRADES})
