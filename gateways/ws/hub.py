"""The hub: who is subscribed to what, and fan-out of new bars to their queues.

Everything here runs on the event loop thread, so taking a snapshot and registering a
subscription happen with no bar published in between: the seam has no gap and no duplicate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from gateways.ws import protocol
from gateways.ws.buffer import ChannelLog, Entry, ReplayBuffer
from shared.metrics import WS_BUFFER_BYTES, WS_BUFFER_MESSAGES, WS_DROPPED
from shared.models import Bar

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW: Final = 4008
CHUNK_EVENTS: Final = 1000

# (framed JSON array, events in it, oldest bar emitted at in micros (0: none), queued at)
Chunk = tuple[bytes, int, int, float]


def make_chunk(events: list[bytes], oldest_us: int, now: float) -> Chunk:
    return (protocol.frame(events), len(events), oldest_us, now)


class Session:
    """One client: its subscriptions and its bounded queue of framed chunks."""

    def __init__(self, connection: object) -> None:
        self.connection = connection
        # Chunks are shared between every client subscribed to the same channels.
        self.queue: deque[Chunk] = deque()
        self.size = 0  # events queued
        self.channels: set[str] = set()
        self.intervals: set[str] = set()
        self.ahead: dict[str, int] = {}  # channels where the client has seqs the buffer lacks
        self.resyncs: deque[float] = deque(maxlen=16)
        self.closing = False

    def enqueue(self, events: Iterable[bytes]) -> None:
        events = list(events)
        if events:
            self.queue.append(make_chunk(events, 0, time.monotonic()))
            self.size += len(events)

    def lag_s(self, now: float) -> float:
        """How long the oldest queued event has waited."""
        return now - self.queue[0][3] if self.queue else 0.0


@dataclass
class _Audience:
    """Bars of one delivery that go to the same subscriber sets, framed once for all of them."""

    direct: set[Session] | None
    wide: set[Session] | None
    entries: list[Entry] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def sessions(self) -> set[Session]:
        if self.direct and self.wide:
            return self.direct | self.wide
        return self.direct or self.wide or set()


class Hub:
    def __init__(
        self,
        buffer: ReplayBuffer,
        default_snapshot: int,
        wildcard_snapshot: int,
        policy: Literal["resync", "disconnect"],
        max_resyncs_per_minute: int,
        queue_max: int,
        max_lag_s: float,
    ) -> None:
        self.buffer = buffer
        self.default_snapshot = default_snapshot
        self.wildcard_snapshot = wildcard_snapshot
        self.policy = policy
        self.max_resyncs_per_minute = max_resyncs_per_minute
        self.queue_max = queue_max
        self.max_lag_s = max_lag_s
        self.sessions: set[Session] = set()
        self.by_channel: dict[str, set[Session]] = {}
        self.by_interval: dict[str, set[Session]] = {}
        self.to_close: list[Session] = []

    def publish(self, bars: list[Bar]) -> set[Session]:
        """Add bars to the buffer and to subscribers' queues; return the sessions that got any.

        Bars with the same subscriber sets are framed once and queued as one shared chunk.
        """
        now = time.monotonic()
        touched: set[Session] = set()
        groups: dict[tuple[int, int], _Audience] = {}
        for bar in bars:
            channel = protocol.Channel(bar.interval, bar.instrument)
            name = channel.name
            body = protocol.bar_json(bar)
            entry = Entry(
                bar.seq,
                bar.ts_us,
                bar.revision,
                body,
                protocol.bar_event(name, bar.seq, bar.revision, body),
            )
            if not self.buffer.append(channel, entry):
                WS_DROPPED.labels("duplicate").inc()
                continue
            direct = self.by_channel.get(name)
            wide = self.by_interval.get(bar.interval)
            if not direct and not wide:
                continue
            key = (id(direct) if direct else 0, id(wide) if wide else 0)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Audience(direct, wide)
            group.entries.append(entry)
            group.stamps.append(bar.ts_recv_us)
            group.names.append(name)
        for group in groups.values():
            targets = group.sessions()
            entries, stamps = group.entries, group.stamps
            chunks = [
                make_chunk(
                    [e.event for e in entries[i : i + CHUNK_EVENTS]],
                    min(stamps[i : i + CHUNK_EVENTS]),
                    now,
                )
                for i in range(0, len(entries), CHUNK_EVENTS)
            ]
            for session in targets:
                if session.ahead:
                    self._publish_ahead(session, entries, stamps, group.names, now)
                else:
                    session.queue.extend(chunks)
                    session.size += len(entries)
                touched.add(session)
        for session in touched:  # slow: an event waited max_lag_s, or too many are queued
            if session.lag_s(now) > self.max_lag_s or session.size > self.queue_max:
                self.overflow(session)
        WS_BUFFER_MESSAGES.set(self.buffer.messages)
        WS_BUFFER_BYTES.set(self.buffer.bytes)
        return touched

    def _publish_ahead(
        self,
        session: Session,
        entries: list[Entry],
        stamps: list[int],
        names: list[str],
        now: float,
    ) -> None:
        """Queue only what a client that resumed beyond the buffer has not seen."""
        events, oldest = [], 0
        for entry, ts, name in zip(entries, stamps, names, strict=True):
            floor = session.ahead.get(name)
            if floor is not None:
                if entry.seq <= floor:
                    continue
                del session.ahead[name]
            events.append(entry.event)
            oldest = min(oldest, ts) if oldest else ts
        if events:
            session.queue.append(make_chunk(events, oldest, now))
            session.size += len(events)

    def check_lag(self) -> None:
        """Find clients that stopped reading while nothing new arrived for them."""
        now = time.monotonic()
        for session in list(self.sessions):
            if not session.closing and session.lag_s(now) > self.max_lag_s:
                self.overflow(session)

    def overflow(self, session: Session) -> None:
        """The client cannot keep up: drop its queue, then resync it or close it (the policy)."""
        dropped = session.size
        session.queue.clear()
        session.size = 0
        WS_DROPPED.labels("slow_client").inc(dropped)
        now = time.monotonic()
        recent = [t for t in session.resyncs if now - t < 60]
        if self.policy == "disconnect" or len(recent) >= self.max_resyncs_per_minute:
            session.closing = True
            self.to_close.append(session)
            return
        session.resyncs.append(now)
        session.enqueue([protocol.event("lagging", dropped=dropped, action="resync")])
        for name in sorted(session.channels):
            log_ = self.buffer.channels.get(name)
            if log_ is not None:
                session.enqueue(self._fresh(session, log_, self.default_snapshot, recovered=False))
        for interval in sorted(session.intervals):
            for log_ in self.buffer.by_interval.get(interval, []):
                session.enqueue(self._fresh(session, log_, self.wildcard_snapshot, recovered=False))

    def _fresh(
        self,
        session: Session,
        log_: ChannelLog,
        bars: int,
        recovered: bool | None,
        older: Sequence[tuple[int, bytes]] = (),
    ) -> list[bytes]:
        session.ahead.pop(log_.name, None)
        status: dict[str, object] = {"channel": log_.name, "seq": log_.last_seq}
        if recovered is not None:
            status["recovered"] = recovered
        return [protocol.event("subscribed", **status), log_.snapshot(bars, older)]

    def short_of(self, request: protocol.Request) -> list[tuple[protocol.Channel, int | None, int]]:
        """The channels of a subscribe request whose snapshot wants more bars than the buffer
        holds: (channel, start of the oldest bar held or None, bars wanted)."""
        short = []
        for channel in request.channels:
            log_ = self.buffer.channels.get(channel.name)
            resume = request.resume.get(channel.name)
            if channel.is_wildcard or (
                log_ and resume is not None and log_.since(resume) is not None
            ):
                continue
            wanted = self.default_snapshot if request.snapshot is None else request.snapshot
            held, oldest = log_.windows() if log_ else (0, None)
            if held < wanted:
                short.append((channel, oldest, wanted))
        return short

    def subscribe(
        self,
        session: Session,
        request: protocol.Request,
        older: Mapping[str, Sequence[tuple[int, bytes]]] | None = None,
    ) -> list[bytes]:
        """Register the channels and return what to send first: snapshots (with `older` bars
        of channels, from the database) or missed events."""
        events: list[bytes] = []
        for channel in request.channels:
            if channel.is_wildcard:
                session.intervals.add(channel.interval)
                self.by_interval.setdefault(channel.interval, set()).add(session)
                bars = self.wildcard_snapshot if request.snapshot is None else request.snapshot
                for log_ in self.buffer.by_interval.get(channel.interval, []):
                    events += self._resume_or_fresh(session, log_, request, bars)
                continue
            session.channels.add(channel.name)
            self.by_channel.setdefault(channel.name, set()).add(session)
            bars = self.default_snapshot if request.snapshot is None else request.snapshot
            earlier = (older or {}).get(channel.name, ())
            events += self._resume_or_fresh(
                session, self.buffer.log(channel), request, bars, earlier
            )
        return events

    def _resume_or_fresh(
        self,
        session: Session,
        log_: ChannelLog,
        request: protocol.Request,
        bars: int,
        older: Sequence[tuple[int, bytes]] = (),
    ) -> list[bytes]:
        last = request.resume.get(log_.name)
        if last is None:
            return self._fresh(session, log_, bars, None, older)
        missed = log_.since(last)
        if missed is None:
            return self._fresh(session, log_, bars, False, older)
        if last > log_.last_seq:
            session.ahead[log_.name] = last
        else:
            session.ahead.pop(log_.name, None)
        return [protocol.event("subscribed", channel=log_.name, seq=last, recovered=True), *missed]

    def unsubscribe(self, session: Session, channels: Iterable[protocol.Channel]) -> None:
        for channel in channels:
            if channel.is_wildcard:
                session.intervals.discard(channel.interval)
                self.by_interval.get(channel.interval, set()).discard(session)
            else:
                session.channels.discard(channel.name)
                self.by_channel.get(channel.name, set()).discard(session)

    def remove(self, session: Session) -> None:
        self.unsubscribe(
            session, [protocol.Channel(i, protocol.WILDCARD) for i in list(session.intervals)]
        )
        self.unsubscribe(session, [protocol.parse_channel(name) for name in list(session.channels)])
        self.sessions.discard(session)
