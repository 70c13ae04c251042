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
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import numpy as np
import orjson

from shared.codec import BAR
from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, TransientError
from shared.kafka_admin import TopicIncarnation, topic_incarnation
from shared.metrics import BAR_EMIT_DELAY, BARS_EMITTED, TRADES_PROCESSED
from shared.models import BarBatch
from shared.settings import BarsSettings, load_settings
from shared.topics import BAR_BATCHES, BARS, TRADES
from streams.app import Worker, manual_acks
from streams.bars.checkpoints import Checkpoint, CheckpointStore
from streams.bars.core import BarBook, BarsConfig, FoldResult, FoldScratch, encode_snapshot
from streams.bars.frames import BarFrames

log = logging.getLogger(__name__)

COMPONENT = "worker.aggregate_bars"
MAX_UNCHECKPOINTED = 2000  # messages held unacknowledged while checkpoints fail, then wait


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
        self._saving = asyncio.Lock()

    async def book_of(self, partition: int) -> PartitionBook:
        """Return the partition's book, restoring its checkpoint the first time (retrying)."""
        if partition in self.books:
            return self.books[partition]
        checkpoint, incarnation = await self._load(partition)
        if checkpoint is not None and checkpoint.layout != self.config.fingerprint():
            log.warning(
                "partition %d: checkpoint has other intervals; starting empty at %d",
                partition,
                checkpoint.offset,
            )
            book = PartitionBook(BarBook(self.config, scratch=self.scratch), checkpoint.offset)
        elif checkpoint is not None and (
            stale := stale_because(checkpoint, incarnation, partition)
        ):
            old = BarBook.restore(self.config, checkpoint.state, self.scratch)
            log.warning(
                "partition %d: discarding the bar checkpoint as of offset %d: %s. Bars start "
                "from this topic's data; %d windows still open in the checkpoint are dropped, "
                "and channel sequence numbers continue where they were",
                partition,
                checkpoint.offset,
                stale,
                old.open_windows(),
            )
            book = PartitionBook(old.sequences_only(), -1)
        elif checkpoint is not None:
            book = PartitionBook(
                BarBook.restore(self.config, checkpoint.state, self.scratch), checkpoint.offset
            )
            log.info("partition %d: restored bars as of offset %d", partition, checkpoint.offset)
        else:
            book = PartitionBook(BarBook(self.config, scratch=self.scratch), -1)
        book.topic_id = incarnation.topic_id
        self.books[partition] = book
        return book

    async def _load(self, partition: int) -> tuple[Checkpoint | None, TopicIncarnation]:
        """Return the partition's checkpoint and the topic as the broker has it, retrying."""
        attempt = 0
        while True:
            try:
                checkpoint = await self.store.load(partition)
                incarnation = await asyncio.to_thread(
                    topic_incarnation, self.worker.kafka.bootstrap, TRADES
                )
                return checkpoint, incarnation
            except TransientError as exc:
                attempt += 1
                log.warning("partition %d: %s; retrying", partition, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))

    async def handle(self, event: faust.EventT[bytes]) -> None:
        message = event.message
        state = await self.book_of(message.partition)
        if message.offset <= state.offset:  # folded before the last checkpoint
            event.ack()
            return
        try:
            batch = self.worker.trade_batches.of(message)
        except DecodeError as exc:
            self.dead_letters.reject_event(event, "undecodable", str(exc))
        else:
            self.publish(state, state.book.fold(batch), message.partition, message.offset)
            TRADES_PROCESSED.labels("aggregate_bars").inc(len(batch))
        state.offset = message.offset
        state.pending.append(event)
        if time.monotonic() - state.checkpointed_s >= self.checkpoint_interval_s:
            await self.checkpoint(message.partition)
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
        due_us = bars.ts_us + self._lengths_us[bars.interval_index] + self.config.grace_us
        for k, (name, _) in enumerate(self.config.intervals):
            for kind, count in (("first", counts[k]), ("revision", counts[per_interval + k])):
                if count:
                    BARS_EMITTED.labels(name, kind).inc(int(count))
            mine = first & (bars.interval_index == k)
            if mine.any():
                delay_us = bars.ts_recv_us - int(due_us[mine].min())
                BAR_EMIT_DELAY.observe(max(0, delay_us) / 1e6)

    async def checkpoint(self, partition: int) -> None:
        """Make the partition's outputs durable, then save its book and acknowledge its input.

        The book, its offset and the events it covers are captured together before the first
        await, and the partition stays claimed until the save is done, so checkpoints of a
        partition never overlap and never land out of order. The caller waits for the Kafka
        flush (a few ms); compressing and saving run in the background, one at a time per
        worker, and the events are acknowledged after the save.
        """
        state = self.books.get(partition)
        if state is None or not state.pending or state.checkpointing:
            return
        state.checkpointing = True
        events, state.pending = state.pending, []
        offset, arrays = state.offset, state.book.snapshot_arrays()
        state.checkpointed_s = time.monotonic()
        try:
            await asyncio.to_thread(self.worker.publisher.flush)
        except BaseException:
            state.pending[:0] = events
            state.checkpointing = False
            raise
        state.saving = asyncio.create_task(self._save(partition, state, offset, arrays, events))

    async def _save(
        self,
        partition: int,
        state: PartitionBook,
        offset: int,
        arrays: dict[str, Any],
        events: list[Any],
    ) -> None:
        try:
            async with self._saving:  # one compression at a time: it shares the second core
                snapshot = await asyncio.to_thread(encode_snapshot, arrays)
                await self.store.save(
                    partition,
                    Checkpoint(offset, self.config.fingerprint(), snapshot, state.topic_id),
                )
        except Exception as exc:  # whatever failed, the input is simply checkpointed later
            log.warning(
                "checkpoint of partition %d failed (%s); input stays unacknowledged until one "
                "succeeds",
                partition,
                exc,
                exc_info=not isinstance(exc, TransientError),
            )
            state.pending[:0] = events
            return
        finally:
            state.saving = None
            state.checkpointing = False
        if self.books.get(partition) is state:  # still ours: the new owner commits otherwise
            for event in events:
                event.ack()

    async def checkpoint_all(self) -> None:
        """Checkpoint every partition and wait until each save is done (shutdown)."""
        for partition, state in list(self.books.items()):
            await state.settled()
            await self.checkpoint(partition)
            await state.settled()

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
                await aggregator.checkpoint(partition)

    # Faust's signal types expect (sender, *args, signal=..., **kwargs); ours name their arguments.
    @worker.app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def checkpoint_on_shutdown(app: faust.App, **_: Any) -> None:
        await aggregator.checkpoint_all()
        await aggregator.store.close()

    @worker.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        await aggregator.forget({tp.partition for tp in revoked if tp.topic == TRADES})
