"""The binary COPY encoder: streams built from BarBatch columns read back, through a real COPY
into the real PostgreSQL, as exactly the bars they came from; winners and refusals by rule."""

from __future__ import annotations

import math

import numpy as np
import psycopg
from live import MINUTE_US, RECV_2, T0, bar, bar_batch, read_bars

from shared.models import Bar
from shared.times import MAX_US, MIN_US
from streams.sink.copy import (
    COPY_COLUMNS,
    HEADER,
    TRAILER,
    BarRows,
    EncodedNames,
    encode_copy,
    encode_names,
    refusals,
    winners,
)


def copied(database_url: str, data: bytes) -> list[Bar]:
    """COPY `data` into a temp table like `bars` on the real server; return its rows as Bars."""
    with psycopg.connect(database_url) as conn:
        conn.execute("create temp table staged (like bars)")
        with conn.cursor().copy(
            f"copy staged ({', '.join(COPY_COLUMNS)}) from stdin (format binary)"
        ) as copy:
            copy.write(data)
        return read_bars(conn, "staged")


def stream(rows: BarRows) -> bytes:
    names = encode_names(rows, "utf-8")
    return encode_copy(rows, winners(rows, np.arange(len(rows))), names)


def test_encode_copy_two_batches_read_back_by_real_copy_as_the_winning_bars(
    database_url: str,
) -> None:
    first = [
        bar("AAPL"),
        bar("株式-7203", close=2_841.5, volume=1_200.0, revision=2),
        bar("ÄPFEL", "5m", open=17.02, high=17.1, low=16.98, close=17.05),
        bar("BRK.B", ts_event_us=T0 + 59_999_999),
        bar("X" * 200, "1d", T0 - 14 * 3_600_000_000 - 30 * MINUTE_US, trade_count=2**40),
        bar("OLD", "1d", MIN_US, ts_event_us=MIN_US),  # 0001-01-01T00:00:00Z
        bar("LAST", "1s", MAX_US, ts_event_us=MAX_US),  # 9999-12-31T23:59:59.999999Z
    ]
    second = [
        bar("AAPL", revision=1, close=243.47, volume=18_300.0, ts_recv_us=RECV_2),
        bar("AAPL", ts_us=T0 + MINUTE_US, close=243.6, ts_recv_us=RECV_2, seq=8),
        bar("株式-7203", revision=1, close=1.0, ts_recv_us=RECV_2),  # lower: loses
    ]
    rows = BarRows.from_batches([bar_batch(first), bar_batch(second, unused="TSLA")])

    read_back = copied(database_url, stream(rows))

    assert read_back == sorted(
        [second[0], second[1], *first[1:]], key=lambda b: (b.instrument, b.interval, b.ts_us)
    )


def test_encode_copy_no_rows_is_header_and_trailer_and_copies_nothing(database_url: str) -> None:
    data = stream(BarRows.from_batches([]))

    assert data == HEADER + TRAILER
    assert copied(database_url, data) == []


def test_encode_copy_nan_and_infinities_read_back_as_they_are(database_url: str) -> None:
    halted = bar("HALT", volume=0.0, vwap=math.nan, high=math.inf, low=-math.inf)

    [read_back] = copied(database_url, stream(BarRows.from_bars([halted])))

    assert math.isnan(read_back.vwap)
    assert (read_back.high, read_back.low) == (math.inf, -math.inf)


def test_winners_same_key_keeps_highest_revision_and_later_of_equals() -> None:
    bars = [
        bar("AAPL", revision=1, close=243.0),
        bar("AAPL", "5m"),
        bar("AAPL", revision=3, close=243.3),
        bar("AAPL", revision=3, close=243.35),  # same revision, later: wins
        bar("AAPL", revision=2, close=243.2),
        bar("AA"),
    ]
    rows = BarRows.from_bars(bars)

    kept = winners(rows, np.arange(len(rows))).tolist()

    assert kept == [5, 3, 1]  # key order: AA before AAPL, 1m before 5m


def test_refusals_bad_times_revisions_and_names_come_back_with_reasons() -> None:
    bars = [
        bar("AAPL"),
        bar("NANO", ts_us=T0 * 1000),  # nanoseconds taken for microseconds: year 57984
        bar("EARLY", ts_event_us=MIN_US - 1),
        bar("REV", revision=2**31),
        bar("NUL\x00"),
        bar("株式-7203"),
        bar("HALT", vwap=math.nan),
    ]
    rows = BarRows.from_bars(bars)

    utf8 = refusals(rows, encode_names(rows, "utf-8"))
    latin1 = refusals(rows, encode_names(rows, "latin-1"))

    assert [(rows.bar(row).instrument, reason) for row, reason in utf8] == [
        ("NANO", "ts is outside the years 1 to 9999"),
        ("EARLY", "ts_event is outside the years 1 to 9999"),
        ("REV", "revision is out of range for int4"),
        ("NUL\x00", "instrument 'NUL\\x00' contains NUL (0x00), which text cannot hold"),
    ]
    assert [rows.bar(row).instrument for row, _ in latin1] == [
        "NANO",
        "EARLY",
        "REV",
        "NUL\x00",
        "株式-7203",
    ]
    assert "has no latin-1 encoding" in latin1[-1][1]


def test_encoded_names_utf8_and_one_by_one_lay_out_length_prefixed_bytes() -> None:
    names = ["AAPL", "株式-7203", "", "ÄPFEL", "BRK.B"]

    for encoding in ("utf-8", "latin-1"):
        encoded = EncodedNames.of("instrument", names, encoding)

        for i, name in enumerate(names):
            data = name.encode(encoding, errors="ignore")
            field = encoded.grid[i, : encoded.widths[i]].tobytes()
            if encoded.problems[i] is None:
                assert field == len(data).to_bytes(4, "big") + data
        assert [p is not None for p in encoded.problems] == [
            encoding == "latin-1" and name == "株式-7203" for name in names
        ]


def test_bar_rows_from_bars_and_from_batches_hold_the_same_rows() -> None:
    bars = [bar("AAPL"), bar("株式-7203", "5m", revision=2), bar("ÄPFEL", seq=9)]

    from_bars = BarRows.from_bars(bars)
    from_batches = BarRows.from_batches([bar_batch(bars[:2]), bar_batch(bars[2:])])

    assert [from_bars.bar(i) for i in range(3)] == bars
    assert [from_batches.bar(i) for i in range(3)] == bars
