"""The `sink_bars` worker on the real broker and PostgreSQL: BarBatch messages in, the highest
revision of each bar in `bars`, and a bar the database cannot hold dead-lettered with its reason."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import psycopg
from conftest import RunningWorker, at_least, eventually, read_topic
from live import MINUTE_US, RECV_2, T0, bar, bar_batch, read_bars

from shared.codec import Codec
from shared.models import Bar
from shared.publisher import Publisher
from shared.topics import BAR_BATCHES, DLQ


def stored(url: str) -> list[Bar]:
    with psycopg.connect(url) as conn:
        return read_bars(conn)


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_sink_worker_batches_store_highest_revisions_and_dead_letter_refused_bar(
    bootstrap: str, codec: Codec, database_url: str, start_worker: Callable[..., RunningWorker]
) -> None:
    sink = start_worker(MS_WORKER_AGENTS="sink_bars").url
    nanoseconds = bar("NANO", ts_us=T0 * 1000)  # a clock in ns taken for µs: year 57984
    step_1 = [bar("AAPL"), bar("株式-7203", close=2_841.5), nanoseconds]
    step_2 = [
        bar("AAPL", revision=1, close=243.47, ts_recv_us=RECV_2),
        bar("AAPL", ts_us=T0 + MINUTE_US, close=243.6, seq=8, ts_recv_us=RECV_2),
    ]
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    for step in (step_1, step_2):
        publisher.produce(BAR_BATCHES, codec.encode_bar_batch(bar_batch(step)), partition=0)
    publisher.flush()

    (message,) = read_topic(bootstrap, DLQ, at_least(1), timeout_s=60)
    await eventually(lambda: len(stored(database_url)) == 3, timeout_s=30, what="three bars")

    letter = codec.decode_dead_letter(message.value())
    assert (letter.component, letter.reason, letter.source) == (
        "worker.sink_bars",
        "refused_by_database",
        BAR_BATCHES,
    )
    assert letter.detail == "ts is outside the years 1 to 9999"
    assert (codec.decode_bar_batch(letter.payload).bars(), letter.key) == ([nanoseconds], b"NANO")
    assert stored(database_url) == [step_2[0], step_2[1], step_1[1]]
    await eventually(
        lambda: "bars_sunk_total 4.0" in metrics(sink), what="four bars counted as sunk"
    )
