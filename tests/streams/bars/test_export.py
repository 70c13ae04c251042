"""`python -m streams bars export` on the real PostgreSQL: filters, order, UTC times, latest revision."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import run_module

from shared.models import Bar
from streams.bars.export import export_bars
from streams.sink.timescale import BarWriter

T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
MINUTE_US = 60_000_000
HEADER = "symbol,interval,ts,open,high,low,close,volume,vwap,trade_count"


def bar(
    instrument: str, minute: int, revision: int = 0, interval: str = "1m", **values: float
) -> Bar:
    fields = dict(open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0, vwap=1.25, trade_count=3)
    fields |= values
    ts = T0 + minute * MINUTE_US
    return Bar(
        instrument,
        interval,
        ts,
        revision,
        buy_volume=0.0,
        sell_volume=0.0,
        source="test",
        ts_event_us=ts,
        ts_recv_us=ts,
        **fields,  # type: ignore[arg-type]
    )


async def write(url: str, *batches: list[Bar]) -> None:
    writer = BarWriter(url)
    try:
        for batch in batches:
            assert await writer.write(batch) == []
    finally:
        await writer.close()


@pytest.fixture
async def stored_bars(database_url: str) -> str:
    """Bars of A, B and C around [00:01, 00:04), some revised, and 1h bars of A."""
    await write(
        database_url,
        [
            bar("A", 0),
            bar("A", 1, 1, close=1.0),
            bar(
                "A",
                3,
                open=0.1,
                high=1e300,
                low=1 / 3,
                close=2.5,
                volume=123456.789,
                vwap=0.3,
                trade_count=2**40,
            ),
            bar("A", 4),
            bar("B", 2, 0, close=20.0),
            bar("B", 1),
            bar("C", 2),
            bar("A", 1, interval="1h"),
            bar("A", 2, interval="1h"),
        ],
        [bar("A", 1, 2, close=2.0), bar("B", 2, 5, close=25.0)],
        [bar("B", 2, 4, close=24.0)],
    )
    return database_url


def test_export_cli_filters_symbols_and_range_ordered_latest_revision_utc(
    stored_bars: str, tmp_path: Path
) -> None:
    out = tmp_path / "bars.csv"

    result = run_module(
        [
            "streams",
            "bars",
            "export",
            "--interval",
            "1m",
            "--out",
            str(out),
            "--symbols",
            "B, A",
            "--start",
            "2024-01-01T00:01:00",
            "--end",
            "2024-01-01T00:04:00Z",
        ],
        {"MS_DATABASE_URL": stored_bars},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 4 bars to {out}"
    assert out.read_text().splitlines() == [
        HEADER,
        "A,1m,2024-01-01T00:01:00.000000Z,1.0,2.0,0.5,2.0,10.0,1.25,3",
        "A,1m,2024-01-01T00:03:00.000000Z,0.1,1e+300,0.3333333333333333,2.5,123456.789,0.3,1099511627776",
        "B,1m,2024-01-01T00:01:00.000000Z,1.0,2.0,0.5,1.5,10.0,1.25,3",
        "B,1m,2024-01-01T00:02:00.000000Z,1.0,2.0,0.5,25.0,10.0,1.25,3",
    ]


def test_export_cli_start_with_offset_is_converted_to_utc(stored_bars: str, tmp_path: Path) -> None:
    out = tmp_path / "bars.csv"

    result = run_module(
        [
            "streams",
            "bars",
            "export",
            "--interval",
            "1h",
            "--out",
            str(out),
            "--start",
            "2024-01-01T01:01:30+01:00",
        ],
        {"MS_DATABASE_URL": stored_bars},
    )

    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [
        HEADER,
        "A,1h,2024-01-01T00:02:00.000000Z,1.0,2.0,0.5,1.5,10.0,1.25,3",
    ]


def test_export_cli_session_time_zone_not_utc_still_writes_utc_z(
    stored_bars: str, tmp_path: Path
) -> None:
    # A server whose `timezone` setting is not UTC (initdb takes the host's) must not change the
    # file; PGTZ sets the session time zone the same way.
    out = tmp_path / "bars.csv"

    result = run_module(
        [
            "streams",
            "bars",
            "export",
            "--interval",
            "1m",
            "--out",
            str(out),
            "--symbols",
            "C",
        ],
        {"MS_DATABASE_URL": stored_bars, "PGTZ": "America/New_York"},
    )

    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [
        HEADER,
        "C,1m,2024-01-01T00:02:00.000000Z,1.0,2.0,0.5,1.5,10.0,1.25,3",
    ]


def test_export_bars_without_filters_writes_every_symbol_of_interval(stored_bars: str) -> None:
    out = io.StringIO()

    rows = export_bars(stored_bars, "1m", out)

    lines = out.getvalue().splitlines()
    assert rows == 7
    assert lines[0] == HEADER
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["A", "1m", "2024-01-01T00:00:00.000000Z"],
        ["A", "1m", "2024-01-01T00:01:00.000000Z"],
        ["A", "1m", "2024-01-01T00:03:00.000000Z"],
        ["A", "1m", "2024-01-01T00:04:00.000000Z"],
        ["B", "1m", "2024-01-01T00:01:00.000000Z"],
        ["B", "1m", "2024-01-01T00:02:00.000000Z"],
        ["C", "1m", "2024-01-01T00:02:00.000000Z"],
    ]


def test_export_bars_no_matching_rows_writes_header_only(database_url: str) -> None:
    out = io.StringIO()

    rows = export_bars(database_url, "1d", out, symbols=["A"])

    assert (rows, out.getvalue()) == (0, HEADER + "\n")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--interval", "xx"], "'xx' is not an interval"),
        (["--interval", "7m"], "'7m' does not divide a day evenly"),
        (["--interval", "1m", "--start", "yesterday"], "yesterday"),
    ],
)
def test_export_cli_bad_argument_exits_2_with_message_and_no_file(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "bars.csv"

    result = run_module(
        ["streams", "bars", "export", *arguments, "--out", str(out)],
        {"MS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/unused"},
    )

    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
