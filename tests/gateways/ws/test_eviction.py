"""The gateway under MS_WS_BUFFER_MAX_BYTES, with a real broker and real clients: resumes from
evicted seqs, quiet channels kept whole, deep snapshots from the database after eviction."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from test_gateway import CHANNEL, T0, bar, events, history, live_seqs, publish, subscribe
from test_gateway import start_gateway as start_gateway  # a fixture

from shared.codec import Codec
from streams.sink.timescale import BarWriter

BOUND = 100_000  # bytes: about 140 of the 420 messages below
QUIET = "bars.1s.MSFT"


def metric(url: str, name: str) -> float:
    http = url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(http, timeout=5) as response:
        text: str = response.read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_gateway_resume_from_evicted_seq_gets_not_recovered_and_a_snapshot(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    busy = history(400)
    quiet = [bar(seq, seq, instrument="MSFT") for seq in range(1, 21)]
    publish(bootstrap, codec, busy + quiet)
    url = start_gateway(MS_WS_BUFFER_MAX_BYTES=str(BOUND))  # ready once it has read them all

    ws = await subscribe(
        url,
        {
            "op": "subscribe",
            "channels": [CHANNEL, QUIET],
            "resume": {CHANNEL: 10, QUIET: 15},
            "snapshot": 5,
        },
    )
    got = await events(ws, lambda g: 20 in live_seqs(g) and any(e["type"] == "snapshot" for e in g))
    await ws.close()

    aapl = [e for e in got if e.get("channel") == CHANNEL]
    msft = [e for e in got if e.get("channel") == QUIET]
    assert aapl[0] == {"type": "subscribed", "channel": CHANNEL, "seq": 400, "recovered": False}
    latest = {b.ts_us: b for b in busy}
    assert aapl[1]["type"] == "snapshot" and aapl[1]["seq"] == 400
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in aapl[1]["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in (latest[ts] for ts in sorted(latest)[-5:])
    ]
    assert msft[0] == {"type": "subscribed", "channel": QUIET, "seq": 15, "recovered": True}
    assert live_seqs(msft) == [16, 17, 18, 19, 20], "the small channel kept all it had"
    held = metric(url, "ws_replay_buffer_messages")
    assert metric(url, "ws_replay_buffer_evictions_total") == len(busy + quiet) - held
    assert 0 < metric(url, "ws_replay_buffer_bytes") <= BOUND


async def test_gateway_snapshot_after_eviction_takes_older_windows_from_the_database(
    bootstrap: str, codec: Codec, database_url: str, start_gateway: Callable[..., str]
) -> None:
    bars = history(300)  # 200 windows; the bound keeps a few dozen of them
    writer = BarWriter(database_url)  # what the sink wrote from the same topic
    assert await writer.write(bars) == []
    await writer.close()
    publish(bootstrap, codec, bars)
    url = start_gateway(
        MS_WS_BUFFER_MAX_BYTES=str(BOUND // 2),
        MS_WS_SNAPSHOT_FROM_DATABASE="true",
        MS_DATABASE_URL=database_url,
    )

    ws = await subscribe(url, {"op": "subscribe", "channels": [CHANNEL], "snapshot": 150})
    got = await events(ws, lambda g: any(e["type"] == "snapshot" for e in g))
    await ws.close()

    (snapshot,) = [e for e in got if e["type"] == "snapshot"]
    latest = {b.ts_us: b for b in bars}
    assert snapshot["seq"] == 300
    assert [(b["ts_us"], b["revision"], b["seq"]) for b in snapshot["bars"]] == [
        (b.ts_us, b.revision, b.seq) for b in (latest[ts] for ts in sorted(latest)[-150:])
    ]
    assert snapshot["bars"][0]["ts_us"] == T0 + 51_000_000
    assert metric(url, "ws_replay_buffer_messages") < 100, "most bars came from the database"
    assert metric(url, "ws_replay_buffer_evictions_total") > 0
