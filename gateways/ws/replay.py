"""The replay buffer: the recent messages of every channel, for snapshots and resumes.

Entries are kept per channel in seq order, each with its JSON already encoded, so a snapshot or
a resume costs no encoding. A message whose seq is not above the channel's last one (a worker
replaying after a crash re-emits what it already sent) is a duplicate and is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateways.ws import protocol


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    ts_us: int  # the bar's window start: a bar's identity within its channel
    revision: int
    bar: bytes  # protocol.bar_json
    event: bytes  # protocol.bar_event


class ChannelLog:
    """One channel's last `capacity` messages."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.entries: deque[Entry] = deque(maxlen=capacity)
        self.bytes = 0

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq if self.entries else 0

    def append(self, entry: Entry) -> bool:
        """Add `entry`; return False (and keep nothing) if its seq is not new."""
        if entry.seq <= self.last_seq:
            return False
        if len(self.entries) == self.entries.maxlen:
            self.bytes -= len(self.entries[0].bar) + len(self.entries[0].event)
        self.entries.append(entry)
        self.bytes += len(entry.bar) + len(entry.event)
        return True

    def snapshot(self, bars: int, older: Sequence[tuple[int, bytes]] = ()) -> bytes:
        """The last `bars` bars (latest revision of each, oldest first) as of the last seq;
        `older` (window start, bar) fills in windows the log does not hold."""
        latest: dict[int, bytes] = {}
        for entry in reversed(self.entries):
            if len(latest) >= bars and entry.ts_us not in latest:
                break
            latest.setdefault(entry.ts_us, entry.bar)
        for ts_us, bar in older:
            latest.setdefault(ts_us, bar)
        picked = [latest[ts] for ts in sorted(latest)[-bars:]] if bars else []
        return protocol.snapshot_event(self.name, self.last_seq, picked)

    def windows(self) -> tuple[int, int | None]:
        """How many bars (windows) the log holds, and the start of the oldest."""
        starts = {entry.ts_us for entry in self.entries}
        return len(starts), min(starts, default=None)

    def since(self, seq: int) -> list[bytes] | None:
        """The events after `seq`, or None if some of them are no longer held."""
        if seq >= self.last_seq:
            return []
        if not self.entries or self.entries[0].seq > seq + 1:
            return None
        return [e.event for e in self.entries if e.seq > seq]


class ReplayBuffer:
    """Every channel's log, created on its first message."""

    def __init__(self, per_channel: int) -> None:
        self.per_channel = per_channel
        self.channels: dict[str, ChannelLog] = {}
        self.by_interval: dict[str, list[ChannelLog]] = {}
        self.messages = 0  # totals kept as entries come and go: summing per delivery costs
        self.bytes = 0

    def log(self, channel: protocol.Channel) -> ChannelLog:
        name = channel.name
        found = self.channels.get(name)
        if found is None:
            found = self.channels[name] = ChannelLog(name, self.per_channel)
            self.by_interval.setdefault(channel.interval, []).append(found)
        return found

    def append(self, channel: protocol.Channel, entry: Entry) -> bool:
        """Add `entry` to its channel's log; return False if its seq is not new there."""
        log = self.log(channel)
        held, size = len(log.entries), log.bytes
        if not log.append(entry):
            return False
        self.messages += len(log.entries) - held
        self.bytes += log.bytes - size
        return True
