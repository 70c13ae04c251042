"""The replay buffer: the recent messages of every channel, for snapshots and resumes.

Entries are kept per channel in seq order, each with its JSON already encoded, so a snapshot or
a resume costs no encoding. A message whose seq is not above the channel's last one (a worker
replaying after a crash re-emits what it already sent) is a duplicate and is dropped. A bar
channel's seqs have no gaps; a trade or quote channel's skip the other instruments' messages
(see ticks), so each log knows the seq after which it holds every message of its channel.

Two bounds hold memory: each channel keeps at most its last `per_channel` entries, and all of
them together at most `max_bytes` of JSON. Past that, the largest channels lose their oldest
entries, down to a common size, so the busiest channels give up history first and quiet ones
keep theirs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateways.ws import protocol
from shared.metrics import WS_BUFFER_EVICTIONS

log = logging.getLogger(__name__)

NOTHING_DROPPED: Final = -(2**63)  # a window start before any bar's
# Evicting 1/EVICT_SLACK of the bound below it means the scan of every channel that eviction
# costs is paid once per that many bytes appended, not on every append at the bound.
EVICT_SLACK: Final = 16


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    # A message's identity within its channel: a bar's window start (its revisions share it),
    # a trade's or quote's seq. A snapshot holds the latest message of each.
    key: int
    revision: int
    body: bytes  # the bar, trade or quote as JSON
    event: bytes  # the live event carrying it


@dataclass(frozen=True, slots=True)
class Update:
    """One message for a channel, as the source hands it to the hub."""

    channel: protocol.Channel
    entry: Entry
    emitted_us: int  # when the worker or connector sent it, for the latency metric
    # The seq after which a log that starts with this message holds every message of its
    # channel: the one before for a bar, where the source started reading for a trade.
    held_after: int


class ChannelLog:
    """One channel's latest messages: at most `capacity`, fewer once the buffer evicts some."""

    def __init__(self, channel: protocol.Channel, capacity: int) -> None:
        self.channel = channel
        self.name = channel.name
        self.entries: deque[Entry] = deque(maxlen=capacity)
        self.bytes = 0
        self.last_seq = 0  # kept when entries go: a seq seen once stays a duplicate
        # Every message of the channel after this seq is held; None until the first one.
        self.held_after: int | None = None
        # The latest window start of any entry dropped: windows up to it may be missing whole.
        self.dropped_us = NOTHING_DROPPED

    def append(self, entry: Entry, held_after: int) -> bool:
        """Add `entry`; return False (and keep nothing) if its seq is not new. `held_after`
        counts only for the log's first message: see Update."""
        if entry.seq <= self.last_seq:
            return False
        if self.held_after is None:
            self.held_after = held_after
        entries = self.entries
        if len(entries) == entries.maxlen:
            self._dropped(entries[0])
        entries.append(entry)
        self.bytes += len(entry.body) + len(entry.event)
        self.last_seq = entry.seq
        return True

    def _dropped(self, entry: Entry) -> None:
        """Account for `entry` leaving the log (its caller removes it)."""
        self.bytes -= len(entry.body) + len(entry.event)
        if entry.key > self.dropped_us:
            self.dropped_us = entry.key
        self.held_after = max(self.held_after or 0, entry.seq)

    def evict_to(self, size: int) -> int:
        """Drop the oldest entries until at most `size` bytes are held; return how many went."""
        entries, dropped = self.entries, 0
        while self.bytes > size:
            self._dropped(entries.popleft())
            dropped += 1
        return dropped

    def snapshot(self, count: int, older: Sequence[tuple[int, bytes]] = ()) -> bytes:
        """The last `count` messages (the latest revision of each bar, oldest first) as of the
        last seq; `older` (window start, bar) fills in windows the log does not hold. Without
        `older`, windows up to the latest one dropped are left out, lest the snapshot skip some."""
        floor = NOTHING_DROPPED if older else self.dropped_us
        latest: dict[int, bytes] = {}
        for entry in reversed(self.entries):
            if entry.key in latest:
                continue
            if len(latest) >= count:
                break
            if entry.key > floor:
                latest[entry.key] = entry.body
        for ts_us, bar in older:
            latest.setdefault(ts_us, bar)
        picked = [latest[key] for key in sorted(latest)[-count:]] if count else []
        return protocol.snapshot_event(self.channel, self.last_seq, picked)

    def windows(self) -> tuple[int, int | None]:
        """How many windows the log holds whole (none of their entries dropped), and the start
        below which bars must come from elsewhere (None: the log never held any)."""
        whole = {entry.key for entry in self.entries if entry.key > self.dropped_us}
        if whole:
            return len(whole), min(whole)
        return 0, None if self.dropped_us == NOTHING_DROPPED else self.dropped_us + 1

    def since(self, seq: int) -> list[bytes] | None:
        """The events after `seq`, or None if some of them are no longer held."""
        if seq >= self.last_seq:
            return []
        if self.held_after is None or seq < self.held_after:
            return None
        return [e.event for e in self.entries if e.seq > seq]


def eviction_level(sizes: Sequence[int], excess: int) -> int:
    """The size to cut the largest of `sizes` (sorted largest first) down to, so that together
    they shed at least `excess` bytes; channels at or below it keep everything."""
    total = 0
    for k, size in enumerate(sizes, 1):
        total += size
        below = sizes[k] if k < len(sizes) else 0
        if total - k * below >= excess:
            return max(below, (total - excess) // k)
    return 0


class ReplayBuffer:
    """Every channel's log, created on its first message; `max_bytes` of JSON at most in all."""

    def __init__(self, per_channel: int, max_bytes: int) -> None:
        self.per_channel = per_channel
        self.max_bytes = max_bytes
        self.channels: dict[str, ChannelLog] = {}
        self.by_stream: dict[str, list[ChannelLog]] = {}  # Channel.stream: the logs of each
        self.messages = 0  # totals kept as entries come and go: summing per delivery costs
        self.bytes = 0

    def log(self, channel: protocol.Channel) -> ChannelLog:
        name = channel.name
        found = self.channels.get(name)
        if found is None:
            found = self.channels[name] = ChannelLog(channel, self.per_channel)
            self.by_stream.setdefault(channel.stream, []).append(found)
        return found

    def append(self, update: Update) -> bool:
        """Add the update's entry to its channel's log, evicting if the total passes
        `max_bytes`; return False if its seq is not new there."""
        log_ = self.log(update.channel)
        held, size = len(log_.entries), log_.bytes
        if not log_.append(update.entry, update.held_after):
            return False
        self.messages += len(log_.entries) - held
        self.bytes += log_.bytes - size
        if self.bytes > self.max_bytes:
            self.evict(self.max_bytes - self.max_bytes // EVICT_SLACK)
        return True

    def restart(self, channel: protocol.Channel) -> None:
        """Forget the channel's log: its topic was recreated, and its seqs start again."""
        log_ = self.channels[channel.name]
        self.messages -= len(log_.entries)
        self.bytes -= log_.bytes
        log_.entries.clear()
        log_.bytes = log_.last_seq = 0
        log_.held_after = None
        log_.dropped_us = NOTHING_DROPPED

    def evict(self, target: int) -> None:
        """Cut the largest channels down to a common size, oldest entries first, so that at
        most `target` bytes are held."""
        logs = [log_ for log_ in self.channels.values() if log_.bytes]
        level = eviction_level(sorted([c.bytes for c in logs], reverse=True), self.bytes - target)
        evicted = cut = 0
        for log_ in logs:
            if log_.bytes > level:
                size = log_.bytes
                evicted += log_.evict_to(level)
                self.bytes -= size - log_.bytes
                cut += 1
        self.messages -= evicted
        WS_BUFFER_EVICTIONS.inc(evicted)
        log.debug(
            "replay buffer over %d bytes: evicted %d entries, %d channels cut to %d bytes",
            self.max_bytes,
            evicted,
            cut,
            level,
        )
