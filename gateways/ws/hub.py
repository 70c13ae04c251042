"""The hub: who is subscribed to what, and what each client has to get next.

Everything here runs on the event loop thread, so taking a snapshot and registering a
subscription happen with no bar published in between: the seam has no gap and no duplicate.

Publishing does no work per client: the bars of a delivery that go to the same subscribers are
framed once, as a `Delivery` appended to a log shared by every client. Each client keeps a
cursor into the log and, in its own queue, what is for it alone (replies, snapshots, and what
it could not be sent yet). When the server writes to a client it takes its queue and the log's
deliveries past its cursor that reach it; clients with the same cursor and the same
subscriptions get the very same bytes, built once (`outgoing`).
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from gateways.ws import protocol
from gateways.ws.buffer import ChannelLog, Entry, ReplayBuffer, Update
from shared.metrics import WS_BUFFER_BYTES, WS_BUFFER_MESSAGES, WS_DROPPED

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW: Final = 4008
CHUNK_EVENTS: Final = 1000
MAX_MESSAGE_EVENTS: Final = 1000  # about 400 KB: stock clients accept messages up to 1 MiB

_CURSOR: Final = operator.attrgetter("cursor")

# (framed JSON array, events in it, oldest message emitted at in micros (0: none), queued at)
Chunk = tuple[bytes, int, int, float]
# What a session subscribes to (channels, wildcard streams): equal interests, equal deliveries.
Interests = tuple[frozenset[str], frozenset[str]]


def _as_is(message: bytes) -> bytes:
    return message


def make_chunk(events: list[bytes], oldest_us: int, now: float) -> Chunk:
    return (protocol.frame(events), len(events), oldest_us, now)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes ready to write to a client: one or more encoded messages."""

    data: bytes
    events: int
    oldest_us: int  # emitted at of the oldest bar in them, micros; 0: none


class Session:
    """One client: its subscriptions, its cursor into the hub's log, and its own queue."""

    def __init__(self, connection: object) -> None:
        self.connection = connection
        self.cursor = 0  # position in the hub's log of the first delivery not yet taken
        self.queue: deque[Chunk] = deque()
        self.size = 0  # events queued
        self.channels: set[str] = set()
        self.streams: set[str] = set()  # subscribed with a wildcard: Channel.stream
        self.interests: Interests = (frozenset(), frozenset())
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


# What clients with nothing of their own queued get, by (cursor, interests): see Hub.outgoing.
Shared = dict[tuple[int, Interests], Outgoing | None]


@dataclass(eq=False, slots=True)
class Delivery:
    """Messages of one publish with the same subscriber sets, framed once for all of them."""

    direct: set[Session] | None
    wide: set[Session] | None
    chunk: Chunk
    entries: list[Entry]
    stamps: list[int]
    names: list[str]

    def reaches(self, session: Session) -> bool:
        return bool(
            (self.direct and session in self.direct) or (self.wide and session in self.wide)
        )


@dataclass
class _Audience:
    direct: set[Session] | None
    wide: set[Session] | None
    entries: list[Entry] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


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
        *,
        encode: Callable[[bytes], bytes] = _as_is,
    ) -> None:
        """`encode` turns one message (a JSON array) into what is written for it."""
        self.buffer = buffer
        self.default_snapshot = default_snapshot
        self.wildcard_snapshot = wildcard_snapshot
        self.policy = policy
        self.max_resyncs_per_minute = max_resyncs_per_minute
        self.queue_max = queue_max
        self.max_lag_s = max_lag_s
        self.encode = encode
        self.sessions: set[Session] = set()
        self.by_channel: dict[str, set[Session]] = {}
        self.by_stream: dict[str, set[Session]] = {}
        self.to_close: list[Session] = []
        self.log: list[Delivery] = []
        self.log_start = 0  # position of log[0]
        self.log_bytes = 0  # of the log's frames: what some client has still to be written

    @property
    def end(self) -> int:
        """The position the next delivery will take."""
        return self.log_start + len(self.log)

    def add(self, session: Session) -> None:
        """Register a new client: it gets what is published from now on, once subscribed."""
        session.cursor = self.end
        self.sessions.add(session)

    def publish(self, updates: list[Update]) -> bool:
        """Add updates to the buffer and to the log; return True if any subscriber is to get one.

        Messages with the same subscriber sets are framed once, as deliveries of at most
        CHUNK_EVENTS events that every one of those subscribers shares.
        """
        now = time.monotonic()
        groups: dict[tuple[int, int], _Audience] = {}
        duplicates = 0
        for update in updates:
            if not self.buffer.append(update):
                if update.channel.kind == protocol.BARS or not self._restart(update):
                    duplicates += 1
                    continue
            channel = update.channel
            name = channel.name
            direct = self.by_channel.get(name)
            wide = self.by_stream.get(channel.stream)
            if not direct and not wide:
                continue
            key = (id(direct) if direct else 0, id(wide) if wide else 0)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Audience(direct, wide)
            group.entries.append(update.entry)
            group.stamps.append(update.emitted_us)
            group.names.append(name)
        if duplicates:
            WS_DROPPED.labels("duplicate").inc(duplicates)
        for group in groups.values():
            for i in range(0, len(group.entries), CHUNK_EVENTS):
                entries = group.entries[i : i + CHUNK_EVENTS]
                stamps = group.stamps[i : i + CHUNK_EVENTS]
                chunk = make_chunk([e.event for e in entries], min(stamps), now)
                names = group.names[i : i + CHUNK_EVENTS]
                self.log.append(Delivery(group.direct, group.wide, chunk, entries, stamps, names))
                self.log_bytes += len(chunk[0])
        WS_BUFFER_MESSAGES.set(self.buffer.messages)
        WS_BUFFER_BYTES.set(self.buffer.bytes)
        return bool(groups)

    def _restart(self, update: Update) -> bool:
        """A trade or quote seq not above its channel's last: Kafka reads each partition
        forward, so its topic was recreated. Start the channel's log again, and tell its
        subscribers (after what they were still to get) that what follows starts afresh."""
        channel = update.channel
        log_ = self.buffer.channels[channel.name]
        log.warning(
            "%s: seq went back from %d to %d, its topic was recreated; its subscribers start"
            " afresh",
            channel.name,
            log_.last_seq,
            update.entry.seq,
        )
        self.buffer.restart(channel)
        seq = update.entry.seq - 1
        # The source's bound is the old topic's: of the new one, this is the first held.
        update = dataclasses.replace(update, held_after=seq)
        sessions = self.by_channel.get(channel.name, set()) | self.by_stream.get(
            channel.stream, set()
        )
        for session in sessions:
            self.catch_up(session)
            session.ahead.pop(channel.name, None)
            session.enqueue(
                [
                    protocol.event("subscribed", channel=channel.name, seq=seq, recovered=False),
                    protocol.snapshot_event(channel, seq, []),
                ]
            )
        return self.buffer.append(update)

    def _pending(self, session: Session) -> list[Chunk]:
        """The log's chunks past the session's cursor that are for it."""
        chunks = []
        for delivery in self.log[session.cursor - self.log_start :]:
            if delivery.reaches(session):
                if session.ahead:
                    if (chunk := self._ahead(session, delivery)) is not None:
                        chunks.append(chunk)
                else:
                    chunks.append(delivery.chunk)
        return chunks

    def _ahead(self, session: Session, delivery: Delivery) -> Chunk | None:
        """Only what a client that resumed beyond the buffer has not seen."""
        events, oldest = [], 0
        for entry, ts, name in zip(delivery.entries, delivery.stamps, delivery.names, strict=True):
            floor = session.ahead.get(name)
            if floor is not None:
                if entry.seq <= floor:
                    continue
                del session.ahead[name]
            events.append(entry.event)
            oldest = min(oldest, ts) if oldest else ts
        return make_chunk(events, oldest, delivery.chunk[3]) if events else None

    def catch_up(self, session: Session) -> None:
        """Move the log's deliveries for the session into its queue (to change what it
        subscribes to, or to hold them while it cannot be written to)."""
        for chunk in self._pending(session):
            session.queue.append(chunk)
            session.size += chunk[1]
        session.cursor = self.end

    def skip(self, session: Session) -> None:
        """Pass over the log's deliveries for a client that is closing."""
        session.cursor = self.end

    def hold(self, session: Session) -> None:
        """Keep what is for a client that cannot be written to now in its queue; one that
        falls too far behind is resynced or closed (the policy)."""
        self.catch_up(session)
        if session.size > self.queue_max or session.lag_s(time.monotonic()) > self.max_lag_s:
            self.overflow(session)

    def outgoing(self, session: Session, shared: Shared) -> Outgoing | None:
        """Take everything the session is to get now; None if nothing.

        `shared` memoizes what clients with nothing queued get, by cursor and interests: pass
        the same dict while the log does not change.
        """
        if session.queue or session.ahead:
            self.catch_up(session)
            chunks = list(session.queue)
            session.queue.clear()
            session.size = 0
            return self._compose(chunks)
        key = (session.cursor, session.interests)
        try:
            out = shared[key]
        except KeyError:
            out = shared[key] = self._compose(self._pending(session))
        session.cursor = self.end
        return out

    def _compose(self, chunks: list[Chunk]) -> Outgoing | None:
        """Join chunks into messages of at most MAX_MESSAGE_EVENTS events (one chunk may hold
        more), each encoded, all in one bytes object."""
        if not chunks:
            return None
        messages: list[bytes] = []
        events = i = 0
        while i < len(chunks):
            first = chunks[i]
            j, n = i + 1, first[1]
            while j < len(chunks) and n + chunks[j][1] <= MAX_MESSAGE_EVENTS:
                n += chunks[j][1]
                j += 1
            if j == i + 1:
                payload = first[0]
            else:
                payload = b"[" + b",".join([memoryview(c[0])[1:-1] for c in chunks[i:j]]) + b"]"
            messages.append(self.encode(payload))
            events += n
            i = j
        oldest = min((c[2] for c in chunks if c[2]), default=0)
        data = messages[0] if len(messages) == 1 else b"".join(messages)
        return Outgoing(data, events, oldest)

    def trim(self) -> None:
        """Drop the deliveries every client's cursor has passed."""
        floor = min(map(_CURSOR, self.sessions), default=self.end)
        if floor > self.log_start:
            passed = floor - self.log_start
            self.log_bytes -= sum(len(delivery.chunk[0]) for delivery in self.log[:passed])
            del self.log[:passed]
            self.log_start = floor

    def check_lag(self) -> bool:
        """Find clients that stopped reading while nothing new arrived for them; return True
        if any client still has events queued."""
        now = time.monotonic()
        queued = False
        for session in list(self.sessions):
            if not session.closing and session.lag_s(now) > self.max_lag_s:
                self.overflow(session)
            queued = queued or bool(session.queue)
        return queued

    def overflow(self, session: Session) -> None:
        """The client cannot keep up: drop its queue, then resync it or close it (the policy)."""
        self.catch_up(session)
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
        for stream in sorted(session.streams):
            for log_ in self.buffer.by_stream.get(stream, []):
                session.enqueue(self._fresh(session, log_, self.wildcard_snapshot, recovered=False))

    def _fresh(
        self,
        session: Session,
        log_: ChannelLog,
        count: int,
        recovered: bool | None,
        older: Sequence[tuple[int, bytes]] = (),
    ) -> list[bytes]:
        session.ahead.pop(log_.name, None)
        status: dict[str, object] = {"channel": log_.name, "seq": log_.last_seq}
        if recovered is not None:
            status["recovered"] = recovered
        return [protocol.event("subscribed", **status), log_.snapshot(count, older)]

    def short_of(self, request: protocol.Request) -> list[tuple[protocol.Channel, int | None, int]]:
        """The channels of a subscribe request whose snapshot wants more bars than the buffer
        holds: (channel, start of the oldest bar held or None, bars wanted)."""
        short = []
        for channel in request.channels:
            log_ = self.buffer.channels.get(channel.name)
            resume = request.resume.get(channel.name)
            if (
                channel.is_wildcard
                or channel.kind != protocol.BARS
                or (log_ and resume is not None and log_.since(resume) is not None)
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
        self.catch_up(session)  # what was published before goes by the old subscriptions
        events: list[bytes] = []
        for channel in request.channels:
            if channel.is_wildcard:
                session.streams.add(channel.stream)
                self.by_stream.setdefault(channel.stream, set()).add(session)
                count = self.wildcard_snapshot if request.snapshot is None else request.snapshot
                for log_ in self.buffer.by_stream.get(channel.stream, []):
                    events += self._resume_or_fresh(session, log_, request, count)
                continue
            session.channels.add(channel.name)
            self.by_channel.setdefault(channel.name, set()).add(session)
            count = self.default_snapshot if request.snapshot is None else request.snapshot
            earlier = (older or {}).get(channel.name, ())
            events += self._resume_or_fresh(
                session, self.buffer.log(channel), request, count, earlier
            )
        session.interests = (frozenset(session.channels), frozenset(session.streams))
        return events

    def _resume_or_fresh(
        self,
        session: Session,
        log_: ChannelLog,
        request: protocol.Request,
        count: int,
        older: Sequence[tuple[int, bytes]] = (),
    ) -> list[bytes]:
        last = request.resume.get(log_.name)
        if last is None:
            return self._fresh(session, log_, count, None, older)
        missed = log_.since(last)
        # A trade or quote seq past the channel's last comes from a topic that is gone (or a
        # replica further on): nothing says which, so the client starts afresh.
        ahead = last > log_.last_seq
        if missed is None or (ahead and log_.channel.kind != protocol.BARS):
            return self._fresh(session, log_, count, False, older)
        if ahead:
            session.ahead[log_.name] = last
        else:
            session.ahead.pop(log_.name, None)
        return [protocol.event("subscribed", channel=log_.name, seq=last, recovered=True), *missed]

    def unsubscribe(self, session: Session, channels: Iterable[protocol.Channel]) -> None:
        self.catch_up(session)  # what was published before still goes out
        self._drop(session, channels)

    def _drop(self, session: Session, channels: Iterable[protocol.Channel]) -> None:
        for channel in channels:
            if channel.is_wildcard:
                session.streams.discard(channel.stream)
                self.by_stream.get(channel.stream, set()).discard(session)
            else:
                session.channels.discard(channel.name)
                self.by_channel.get(channel.name, set()).discard(session)
        session.interests = (frozenset(session.channels), frozenset(session.streams))

    def remove(self, session: Session) -> None:
        names = [f"{stream}.{protocol.WILDCARD}" for stream in session.streams]
        names += session.channels
        self._drop(session, [protocol.parse_channel(name) for name in names])
        self.sessions.discard(session)
