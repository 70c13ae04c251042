"""The hub: who is subscribed to what, and fan-out of new bars to their queues.

Everything here runs on the event loop thread, so taking a snapshot and registering a
subscription happen with no bar published in between: the seam has no gap and no duplicate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Final, Literal

from gateways.ws import protocol
from gateways.ws.replay import ChannelLog, Entry, ReplayBuffer
from streams.metrics import WS_BUFFER_BYTES, WS_BUFFER_MESSAGES, WS_DROPPED
from streams.models import Bar

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW: Final = 4008


class Session:
    """One client: its subscriptions, the last seq it has of each channel, its bounded queue."""

    def __init__(self, connection: object) -> None:
        self.connection = connection
        # (event, bar emitted at in micros (0: not a bar), queued at in monotonic seconds)
        self.queue: deque[tuple[bytes, int, float]] = deque()
        self.channels: set[str] = set()
        self.intervals: set[str] = set()
        self.floor: dict[str, int] = {}  # per channel: highest seq queued for this client
        self.resyncs: deque[float] = deque(maxlen=16)
        self.lagging = False
        self.closing = False

    def enqueue(self, events: Iterable[bytes]) -> None:
        now = time.monotonic()
        self.queue.extend((e, 0, now) for e in events)

    def lag_s(self, now: float) -> float:
        """How long the oldest queued event has waited."""
        return now - self.queue[0][2] if self.queue else 0.0


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
        """Add bars to the buffer and to subscribers' queues; return the sessions that got any."""
        now = time.monotonic()
        touched: set[Session] = set()
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
            if not self.buffer.log(channel).append(entry):
                WS_DROPPED.labels("duplicate").inc()
                continue
            direct = self.by_channel.get(name)
            wide = self.by_interval.get(bar.interval)
            targets = (direct | wide) if direct and wide else (direct or wide or ())
            for session in targets:
                if bar.seq > session.floor.get(name, 0):
                    session.floor[name] = bar.seq
                    session.queue.append((entry.event, bar.ts_recv_us, now))
                    touched.add(session)
        for session in touched:  # slow: an event waited max_lag_s, or too many are queued
            if session.lag_s(now) > self.max_lag_s or len(session.queue) > self.queue_max:
                self.overflow(session)
        WS_BUFFER_MESSAGES.set(self.buffer.messages)
        WS_BUFFER_BYTES.set(self.buffer.bytes)
        return touched

    def check_lag(self) -> None:
        """Find clients that stopped reading while nothing new arrived for them."""
        now = time.monotonic()
        for session in list(self.sessions):
            if not session.closing and session.lag_s(now) > self.max_lag_s:
                self.overflow(session)

    def overflow(self, session: Session) -> None:
        """The client cannot keep up: drop its queue, then resync it or close it (the policy)."""
        dropped = len(session.queue)
        session.queue.clear()
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
        self, session: Session, log_: ChannelLog, bars: int, recovered: bool | None
    ) -> list[bytes]:
        session.floor[log_.name] = log_.last_seq
        status: dict[str, object] = {"channel": log_.name, "seq": log_.last_seq}
        if recovered is not None:
            status["recovered"] = recovered
        return [protocol.event("subscribed", **status), log_.snapshot(bars)]

    def subscribe(self, session: Session, request: protocol.Request) -> list[bytes]:
        """Register the channels and return what to send first: snapshots or missed events."""
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
            events += self._resume_or_fresh(session, self.buffer.log(channel), request, bars)
        return events

    def _resume_or_fresh(
        self, session: Session, log_: ChannelLog, request: protocol.Request, bars: int
    ) -> list[bytes]:
        last = request.resume.get(log_.name)
        if last is None:
            return self._fresh(session, log_, bars, recovered=None)
        missed = log_.since(last)
        if missed is None:
            return self._fresh(session, log_, bars, recovered=False)
        session.floor[log_.name] = max(last, log_.last_seq)
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
