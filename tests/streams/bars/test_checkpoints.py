"""CheckpointStore on the real PostgreSQL: round trip, replacement, missing partitions, outages."""

from __future__ import annotations

import psycopg
import pytest

from shared.errors import TransientError
from streams.bars.checkpoints import Checkpoint, CheckpointStore
from streams.embedded.ports import free_port

TOPIC = "md.trades.v1"


async def test_checkpoint_save_then_load_round_trips_exact_bytes(database_url: str) -> None:
    store = CheckpointStore(database_url, "app", TOPIC)
    checkpoint = Checkpoint(offset=2**40 + 7, layout="bars-v1", state=bytes(range(256)) * 3)

    await store.save(2, checkpoint)
    loaded = await store.load(2)
    await store.close()

    assert loaded == checkpoint
    assert loaded is not None and isinstance(loaded.state, bytes)


async def test_checkpoint_save_twice_replaces_previous(database_url: str) -> None:
    store = CheckpointStore(database_url, "app", TOPIC)
    await store.save(0, Checkpoint(10, "bars-v1", b"old"))

    await store.save(0, Checkpoint(20, "bars-v2", b""))
    await store.close()

    assert await store.load(0) == Checkpoint(20, "bars-v2", b"")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from bar_checkpoints").fetchone() == (1,)


async def test_checkpoint_load_missing_partition_returns_none(database_url: str) -> None:
    saving = CheckpointStore(database_url, "app", TOPIC)
    await saving.save(0, Checkpoint(1, "bars-v1", b"x"))
    await saving.close()

    missing_partition = await CheckpointStore(database_url, "app", TOPIC).load(1)
    other_app = await CheckpointStore(database_url, "other", TOPIC).load(0)
    other_topic = await CheckpointStore(database_url, "app", "md.other.v1").load(0)

    assert (missing_partition, other_app, other_topic) == (None, None, None)


async def test_checkpoint_unreachable_database_raises_transient_error() -> None:
    store = CheckpointStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", "app", TOPIC)

    with pytest.raises(TransientError, match="partition 3"):
        await store.load(3)
    with pytest.raises(TransientError, match="partition 3"):
        await store.save(3, Checkpoint(1, "bars-v1", b"x"))


async def test_checkpoint_of_an_earlier_offset_never_replaces_a_later_one(
    database_url: str,
) -> None:
    store = CheckpointStore(database_url, "app", TOPIC)
    await store.save(1, Checkpoint(20, "bars-v1", b"later"))

    await store.save(1, Checkpoint(10, "bars-v1", b"late save of a previous owner"))

    assert await store.load(1) == Checkpoint(20, "bars-v1", b"later")
    await store.close()


async def test_checkpoint_of_a_new_topic_incarnation_replaces_a_later_offset_of_the_old(
    database_url: str,
) -> None:
    store = CheckpointStore(database_url, "app", TOPIC)
    await store.save(1, Checkpoint(3420, "bars-v1", b"old topic", "AaIw1vYZfROagrh48XZd5w"))

    await store.save(1, Checkpoint(12, "bars-v1", b"new topic", "Q2xuZXcgdG9waWMgaWQhIQ"))

    assert await store.load(1) == Checkpoint(12, "bars-v1", b"new topic", "Q2xuZXcgdG9waWMgaWQhIQ")
    await store.close()


@pytest.mark.parametrize(
    ("saved_id", "offset", "current_id", "end", "stale"),
    [
        ("AaIw1vYZfROagrh48XZd5w", 3420, "AaIw1vYZfROagrh48XZd5w", 9000, None),
        ("AaIw1vYZfROagrh48XZd5w", 3420, "AaIw1vYZfROagrh48XZd5w", 100, None),  # ids decide
        ("AaIw1vYZfROagrh48XZd5w", 3420, "Q2xuZXcgdG9waWMgaWQhIQ", 9000, "another incarnation"),
        (None, 3420, "Q2xuZXcgdG9waWMgaWQhIQ", 9000, None),
        (None, 3420, "Q2xuZXcgdG9waWMgaWQhIQ", 3420, "ends at 3420"),
        ("AaIw1vYZfROagrh48XZd5w", 3420, None, 120, "ends at 120"),
    ],
)
def test_stale_because_topic_ids_decide_and_end_offsets_stand_in(
    saved_id: str | None, offset: int, current_id: str | None, end: int, stale: str | None
) -> None:
    from shared.kafka_admin import TopicIncarnation
    from streams.bars.agent import stale_because

    reason = stale_because(
        Checkpoint(offset, "bars-v1", b"", saved_id), TopicIncarnation(current_id, {2: end}), 2
    )

    assert (reason is None) == (stale is None)
    assert stale is None or (reason is not None and stale in reason)


async def test_stored_seqs_are_the_highest_per_channel(
    database_url: str,
) -> None:
    # Arrange: bars of two channels of AAPL (one revised), one of MSFT, one of TSLA
    rows = [
        ("AAPL", "1m", "2026-03-02T14:30:00Z", 0, 41),
        ("AAPL", "1m", "2026-03-02T14:31:00Z", 1, 57),
        ("AAPL", "1s", "2026-03-02T14:31:59Z", 0, 3920),
        ("MSFT", "1m", "2026-03-02T14:31:00Z", 0, 12),
        ("TSLA", "1m", "2026-03-02T14:31:00Z", 0, 99),
    ]
    with psycopg.connect(database_url) as conn:
        for instrument, interval, ts, revision, seq in rows:
            conn.execute(
                "insert into bars (instrument, interval, ts, revision, open, high, low, close,"
                " volume, vwap, trade_count, source, ts_event, ts_recv, seq)"
                " values (%s, %s, %s, %s, 1, 1, 1, 1, 1, 1, 1, 'alpaca', %s, %s, %s)",
                (instrument, interval, ts, revision, ts, ts, seq),
            )
    store = CheckpointStore(database_url, "app", TOPIC)

    # Act
    seqs = await store.stored_seqs()
    await store.close()

    # Assert
    assert seqs == {
        ("AAPL", "1m"): 57,
        ("AAPL", "1s"): 3920,
        ("MSFT", "1m"): 12,
        ("TSLA", "1m"): 99,
    }


@pytest.mark.parametrize(
    ("saved_id", "layout", "discarded"),
    [
        ("AaIw1vYZfROagrh48XZd5w", "bars-v1", None),
        ("AaIw1vYZfROagrh48XZd5w", "bars-v2", ("other intervals", 3420)),
        ("Q2xuZXcgdG9waWMgaWQhIQ", "bars-v1", ("another incarnation", -1)),
        # a lost topic and other intervals: nothing of the new topic may be skipped
        ("Q2xuZXcgdG9waWMgaWQhIQ", "bars-v2", ("another incarnation", -1)),
    ],
)
def test_discard_because_judges_the_incarnation_before_the_layout(
    saved_id: str, layout: str, discarded: tuple[str, int] | None
) -> None:
    from shared.kafka_admin import TopicIncarnation
    from streams.bars.agent import discard_because

    verdict = discard_because(
        Checkpoint(3420, layout, b"", saved_id),
        TopicIncarnation("AaIw1vYZfROagrh48XZd5w", {2: 9000}),
        2,
        "bars-v1",
    )

    if discarded is None:
        assert verdict is None
    else:
        assert verdict is not None and discarded[0] in verdict[0] and verdict[1] == discarded[1]
