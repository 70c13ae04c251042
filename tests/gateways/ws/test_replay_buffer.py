"""The replay buffer's global bound: eviction order, the bound after every append, the metric,
and what snapshots and resumes get afterwards. No broker: the buffer and the hub are pure."""

from __future__ import annotations

import random
import time
import tracemalloc

import orjson
from prometheus_client import REGISTRY

from gateways.ws import protocol
from gateways.ws.buffer import ChannelLog, Entry, ReplayBuffer, eviction_level
from gateways.ws.hub import Hub, Session
from gateways.ws.updates import bar_update
from shared.models import Bar

T0 = 1_767_623_400_000_000  # 2026-01-05 14:30 UTC


def make_bar(instrument: str, seq: int, window: int, revision: int = 0) -> Bar:
    start = T0 + window * 1_000_000
    return Bar(
        instrument,
        "1s",
        start,
        revision,
        187.25 + seq / 100,
        187.5 + seq / 100,
        187.0,
        187.3 + seq / 100,
        1_200.0 + seq,
        187.28,
        17,
        700.0,
        500.0 + seq,
        "simulator",
        start + 998_123,
        time.time_ns() // 1000,
        seq,
    )


def entry_of(bar: Bar) -> Entry:
    return bar_update(bar).entry


def channel_history(instrument: str, n: int) -> list[Bar]:
    """n messages of one channel: every third one revises the bar before it."""
    out, window, revision = [], 0, 0
    for seq in range(1, n + 1):
        if seq % 3 == 0:
            revision += 1
        else:
            window, revision = window + 1, 0
        out.append(make_bar(instrument, seq, window, revision))
    return out


def fill(buffer: ReplayBuffer, bars: list[Bar]) -> None:
    for bar in bars:
        assert buffer.append(bar_update(bar))


def size_of(bars: list[Bar]) -> int:
    return sum(len(e.body) + len(e.event) for e in map(entry_of, bars))


def seqs(log: ChannelLog) -> list[int]:
    return [e.seq for e in log.entries]


def evictions() -> float:
    return REGISTRY.get_sample_value("ws_replay_buffer_evictions_total") or 0.0


def test_bar_json_holds_about_its_length_in_memory_so_the_bound_counts_what_is_held() -> None:
    bars = [make_bar("AAPL", seq, seq) for seq in range(1, 1001)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [protocol.bar_json(b) for b in bars]
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert allocated < 1.5 * sum(len(j) for j in held)


def test_eviction_level_cuts_the_largest_down_to_a_common_size() -> None:
    assert eviction_level([1000, 500, 100], 300) == 700  # only the largest sheds
    assert eviction_level([1000, 500, 100], 600) == 450  # both large ones meet at one size
    assert eviction_level([1000, 500, 100], 1600) == 0


def test_replay_buffer_over_bound_evicts_oldest_entries_of_largest_channel_first() -> None:
    busy, quiet = channel_history("AAPL", 60), channel_history("MSFT", 10)
    buffer = ReplayBuffer(per_channel=1024, max_bytes=size_of(busy) + size_of(quiet))
    fill(buffer, busy + quiet)
    before = evictions()

    fill(buffer, [make_bar("MSFT", 11, 8)])  # one more message passes the bound

    aapl, msft = buffer.channels["bars.1s.AAPL"], buffer.channels["bars.1s.MSFT"]
    assert seqs(msft) == list(range(1, 12)), "the small channel keeps everything"
    assert seqs(aapl) == list(range(61 - len(aapl.entries), 61)), "the large one its newest"
    assert len(aapl.entries) < 60
    assert evictions() - before == 60 - len(aapl.entries)
    assert buffer.bytes == aapl.bytes + msft.bytes <= buffer.max_bytes
    assert buffer.messages == len(aapl.entries) + len(msft.entries)


def test_replay_buffer_two_large_channels_are_cut_to_a_common_size_small_one_kept() -> None:
    one, two = channel_history("AAPL", 100), channel_history("NVDA", 80)
    small = channel_history("MSFT", 5)
    bound = size_of(one[:30]) + size_of(two[:30]) + size_of(small)
    buffer = ReplayBuffer(per_channel=1024, max_bytes=bound)

    fill(buffer, small + [b for pair in zip(one, two, strict=False) for b in pair] + one[80:])

    logs = {name: buffer.channels[f"bars.1s.{name}"] for name in ("AAPL", "NVDA", "MSFT")}
    assert seqs(logs["MSFT"]) == [1, 2, 3, 4, 5]
    assert seqs(logs["AAPL"])[-1] == 100 and seqs(logs["NVDA"])[-1] == 80
    entry_size = max(len(e.body) + len(e.event) for e in logs["AAPL"].entries)
    assert abs(logs["AAPL"].bytes - logs["NVDA"].bytes) <= 2 * entry_size
    assert buffer.bytes <= bound


def test_replay_buffer_after_every_append_holds_at_most_the_bound() -> None:
    rng = random.Random(7)
    instruments = [f"SIM{i:04d}" for i in range(40)]
    sizes = [rng.choice([1, 1, 1, 5, 20]) for _ in instruments]  # a few busy, a long tail
    next_seq = dict.fromkeys(instruments, 1)
    buffer = ReplayBuffer(per_channel=200, max_bytes=150_000)
    before = evictions()

    for _ in range(6000):
        instrument = rng.choices(instruments, sizes)[0]
        seq = next_seq[instrument]
        next_seq[instrument] += 1
        buffer.append(bar_update(make_bar(instrument, seq, seq)))
        assert buffer.bytes <= buffer.max_bytes

    logs = buffer.channels.values()
    assert buffer.bytes == sum(log.bytes for log in logs)
    assert buffer.messages == sum(len(log.entries) for log in logs)
    assert evictions() > before
    for log in logs:  # every log still holds its newest messages, without a gap
        assert seqs(log) == list(range(log.last_seq - len(log.entries) + 1, log.last_seq + 1))


def test_channel_log_evicted_to_nothing_keeps_its_seq_so_duplicates_stay_dropped() -> None:
    bars = channel_history("AAPL", 10)
    buffer = ReplayBuffer(per_channel=1024, max_bytes=10**9)
    fill(buffer, bars)
    log = buffer.channels["bars.1s.AAPL"]

    log.evict_to(0)

    assert log.last_seq == 10 and not log.entries
    assert not buffer.append(bar_update(bars[-1]))
    assert log.since(4) is None and log.since(10) == []
    snapshot = orjson.loads(log.snapshot(5))
    assert (snapshot["seq"], snapshot["bars"]) == (10, [])


def test_channel_log_snapshot_after_eviction_has_latest_revisions_and_no_hole() -> None:
    log = ChannelLog(protocol.Channel.bars("1s", "AAPL"), 1024)
    for bar in [make_bar("AAPL", seq, seq) for seq in range(1, 11)] + [
        make_bar("AAPL", 11, 2, revision=1),  # a late trade revises an old window
        make_bar("AAPL", 12, 11),
    ]:
        log.append(entry_of(bar), bar.seq - 1)

    log.evict_to(log.bytes - sum(len(e.body) + len(e.event) for e in list(log.entries)[:6]))

    snapshot = orjson.loads(log.snapshot(20))
    assert [e.seq for e in log.entries] == [7, 8, 9, 10, 11, 12]
    assert [(b["seq"], b["revision"]) for b in snapshot["bars"]] == [
        (7, 0),
        (8, 0),
        (9, 0),
        (10, 0),
        (12, 0),
    ], "window 2's revision is held but windows 3 to 6 are not: it is left out"
    assert log.windows() == (5, T0 + 7_000_000), "older bars are wanted from before window 7"


def test_channel_log_snapshot_after_eviction_takes_older_windows_from_database_rows() -> None:
    bars = channel_history("AAPL", 30)
    log = ChannelLog(protocol.Channel.bars("1s", "AAPL"), 12)  # the per-channel cap evicts too
    for bar in bars:
        log.append(entry_of(bar), bar.seq - 1)
    held, before_us = log.windows()
    assert before_us is not None
    latest = {b.ts_us: b for b in bars}  # what the sink's table holds: the last revision
    older = [(ts, protocol.bar_json(b)) for ts, b in sorted(latest.items()) if ts < before_us]

    snapshot = orjson.loads(log.snapshot(15, older))

    expected = [latest[ts] for ts in sorted(latest)][-15:]
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshot["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in expected
    ]
    assert held < 15 and snapshot["seq"] == 30


def test_hub_resume_from_evicted_seq_gets_not_recovered_and_a_fresh_snapshot() -> None:
    busy = channel_history("AAPL", 90)
    buffer = ReplayBuffer(per_channel=1024, max_bytes=size_of(busy[:40]))
    hub = Hub(buffer, 120, 1, "resync", 3, 100_000, 5.0)
    hub.publish([bar_update(b) for b in busy])
    held_from = buffer.channels["bars.1s.AAPL"].entries[0].seq
    session = Session(object())
    request = protocol.parse_request(
        orjson.dumps(
            {"op": "subscribe", "channels": ["bars.1s.AAPL"], "resume": {"bars.1s.AAPL": 12}}
        ),
        1000,
    )

    status, snapshot = (orjson.loads(e) for e in hub.subscribe(session, request))

    assert held_from > 13
    assert status == {
        "type": "subscribed",
        "channel": "bars.1s.AAPL",
        "seq": 90,
        "recovered": False,
    }
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 90
    latest = {b.ts_us: b for b in busy}
    expected = [latest[ts] for ts in sorted(latest)][-len(snapshot["bars"]) :]
    assert len(expected) > 10
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshot["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in expected
    ], "the latest revision of each window still held, up to the last"
