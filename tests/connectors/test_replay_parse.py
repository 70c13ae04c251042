"""The replayer's pure parsers: rows become Trades or Rejected with a reason code."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

from connectors.base import Rejected
from connectors.replay import parse_csv, parse_fields, parse_jsonl, parse_timestamp_us
from shared.errors import FatalError
from shared.models import Side, Trade

HEADER = "ts,symbol,price,size,side,trade_id"
TS = "2026-01-05T14:30:00.000100Z"
TS_US = 1_767_623_400_000_100  # 2026-01-05 14:30:00 UTC is 1767623400 s after the epoch
GOOD_CSV_ROW = f"{TS},AAPL,190.12,100,buy,T1"
WELL_FORMED_SYMBOLS = [
    "BRK.B",
    "BTC-USD",
    "ES=F",
    "^GSPC",
    "EUR/USD",
    "KXHIGHNY-24DEC01-B45",
    "A" * 64,
    "日経225",
]


def _lines(text: str) -> Iterator[str]:
    """Iterate lines the way the connector reads its file (newline='' keeps line endings)."""
    return iter(io.StringIO(text, newline=""))


def _csv(*rows: str, header: str = HEADER) -> list[Trade | Rejected]:
    return list(parse_csv(_lines("\n".join([header, *rows]) + "\n")))


def _jsonl(*objects: object) -> list[Trade | Rejected]:
    return list(parse_jsonl(_lines("".join(orjson.dumps(o).decode() + "\n" for o in objects))))


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {"ts": TS, "symbol": "AAPL", "price": "190.12", "size": "100"}
    row.update(overrides)
    return row


def _only_rejected(items: list[Trade | Rejected]) -> Rejected:
    assert len(items) == 1, items
    item = items[0]
    assert isinstance(item, Rejected), item
    return item


# --- parse_timestamp_us -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T14:30:00.000100Z", TS_US),
        ("2026-01-05T14:30:00.000100+00:00", TS_US),
        ("2026-01-05T16:30:00.000100+02:00", TS_US),
        ("2026-01-05T09:30:00.000100-05:00", TS_US),
        ("2026-01-05T14:30:00.000100", TS_US),
        ("2026-01-05 14:30:00.000100", TS_US),
        ("  2026-01-05T14:30:00.000100Z \n", TS_US),
        ("2026-01-05T14:30:00.123456Z", 1_767_623_400_123_456),
        ("2026-01-05T14:30:00Z", 1_767_623_400_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000001Z", 1),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("2000-02-29T00:00:00+00:00", 951_782_400_000_000),
    ],
)
def test_parse_timestamp_us_iso8601_returns_utc_micros(text: str, expected: int) -> None:
    # Arrange / Act
    ts_us = parse_timestamp_us(text)

    # Assert
    assert ts_us == expected


@pytest.mark.parametrize(
    "text", ["not-a-time", "", "2026-13-01T00:00:00Z", "2026-01-05T25:00:00Z", "1767623400"]
)
def test_parse_timestamp_us_unparseable_raises_value_error(text: str) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError):
        parse_timestamp_us(text)


# --- parse_fields -----------------------------------------------------------------------------


def test_parse_fields_good_row_returns_trade_with_exact_values() -> None:
    # Arrange
    fields = _row(side="sell", trade_id="X-9")

    # Act
    trade = parse_fields(fields, b"raw", 4)

    # Assert
    assert trade == Trade("AAPL", TS_US, 190.12, 100.0, Side.SELL, "X-9")


def test_parse_fields_no_side_or_trade_id_returns_unknown_side_and_empty_id() -> None:
    # Arrange
    fields = _row()

    # Act
    trade = parse_fields(fields, b"raw", 2)

    # Assert
    assert trade == Trade("AAPL", TS_US, 190.12, 100.0, Side.UNKNOWN, "")


@pytest.mark.parametrize(
    ("side", "expected"),
    [
        ("buy", Side.BUY),
        ("BUY", Side.BUY),
        (" Buy ", Side.BUY),
        ("b", Side.BUY),
        ("1", Side.BUY),
        ("sell", Side.SELL),
        ("S", Side.SELL),
        ("-1", Side.SELL),
        ("", Side.UNKNOWN),
        (None, Side.UNKNOWN),
    ],
)
def test_parse_fields_known_side_returns_trade_with_side(side: object, expected: Side) -> None:
    # Arrange
    fields = _row(side=side)

    # Act
    trade = parse_fields(fields, b"raw", 2)

    # Assert
    assert isinstance(trade, Trade)
    assert trade.side is expected


@pytest.mark.parametrize("side", ["up", "2", "bid", "long", "0.5"])
def test_parse_fields_bad_side_returns_rejected_bad_side(side: str) -> None:
    # Arrange
    fields = _row(side=side)

    # Act
    result = parse_fields(fields, b"raw", 9)

    # Assert
    assert isinstance(result, Rejected)
    assert (result.reason, result.payload, result.line_number) == ("bad_side", b"raw", 9)
    assert side in result.detail


@pytest.mark.parametrize("symbol", WELL_FORMED_SYMBOLS)
def test_parse_fields_well_formed_unusual_symbol_returns_trade(symbol: str) -> None:
    # Arrange
    fields = _row(symbol=symbol)

    # Act
    trade = parse_fields(fields, b"raw", 2)

    # Assert
    assert isinstance(trade, Trade)
    assert trade.instrument == symbol


@pytest.mark.parametrize(
    "symbol",
    [
        "",
        "A" * 65,
        "BRK B",
        " AAPL",
        "AAPL ",
        "A\tB",
        "A\x01B",
        "A\x00",
        "A\x7fB",
        "A\u00a0B",
        "A\nB",
    ],
    ids=[
        "empty",
        "65-chars",
        "space",
        "leading-space",
        "trailing-space",
        "tab",
        "ctrl-01",
        "nul",
        "del",
        "nbsp",
        "newline",
    ],
)
def test_parse_fields_bad_symbol_returns_rejected_bad_symbol(symbol: str) -> None:
    # Arrange
    fields = _row(symbol=symbol)

    # Act
    result = parse_fields(fields, b"raw", 5)

    # Assert
    assert isinstance(result, Rejected)
    assert (result.reason, result.payload, result.line_number) == ("bad_symbol", b"raw", 5)


@pytest.mark.parametrize("field", ["price", "size"])
@pytest.mark.parametrize(
    "value",
    [
        "-3",
        "0",
        "0.0",
        "-0",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e400",
        "abc",
        "1,5",
        "12 USD",
    ],
)
def test_parse_fields_bad_number_returns_rejected_bad_field(field: str, value: str) -> None:
    # Arrange
    fields = _row(**{field: value})

    # Act
    result = parse_fields(fields, b"raw", 3)

    # Assert
    assert isinstance(result, Rejected)
    assert (result.reason, result.line_number) == (f"bad_{field}", 3)


@pytest.mark.parametrize(
    "ts", ["not-a-time", "2026-01-05T14:30:00+25:00", "05/01/2026 14:30", "1767623400"]
)
def test_parse_fields_unparseable_ts_returns_rejected_bad_timestamp(ts: str) -> None:
    # Arrange
    fields = _row(ts=ts)

    # Act
    result = parse_fields(fields, b"raw", 6)

    # Assert
    assert isinstance(result, Rejected)
    assert (result.reason, result.line_number) == ("bad_timestamp", 6)


@pytest.mark.parametrize("missing", ["ts", "price", "size"])
def test_parse_fields_missing_required_field_returns_rejected_malformed_row(missing: str) -> None:
    # Arrange
    fields = _row()
    del fields[missing]

    # Act
    result = parse_fields(fields, b"raw", 7)

    # Assert
    assert isinstance(result, Rejected)
    assert (result.reason, result.line_number) == ("malformed_row", 7)
    assert missing in result.detail


# --- parse_csv --------------------------------------------------------------------------------


def test_parse_csv_good_rows_return_trades_in_file_order() -> None:
    # Arrange
    rows = [
        GOOD_CSV_ROW,
        "2026-01-05T16:30:00.000200+02:00,MSFT,410.50,5,sell,",
        "2026-01-05T14:30:00.000150,BRK.B,455,0.25,,",
    ]

    # Act
    items = _csv(*rows)

    # Assert
    assert items == [
        Trade("AAPL", TS_US, 190.12, 100.0, Side.BUY, "T1"),
        Trade("MSFT", TS_US + 100, 410.5, 5.0, Side.SELL, ""),
        Trade("BRK.B", TS_US + 50, 455.0, 0.25, Side.UNKNOWN, ""),
    ]


def test_parse_csv_crlf_line_endings_return_trades() -> None:
    # Arrange
    text = f"{HEADER}\r\n{GOOD_CSV_ROW}\r\n"

    # Act
    items = list(parse_csv(_lines(text)))

    # Assert
    assert items == [Trade("AAPL", TS_US, 190.12, 100.0, Side.BUY, "T1")]


def test_parse_csv_header_without_optional_columns_returns_trades() -> None:
    # Arrange / Act
    items = _csv(f"{TS},ES=F,5012.25,1", header="ts,symbol,price,size")

    # Assert
    assert items == [Trade("ES=F", TS_US, 5012.25, 1.0)]


def test_parse_csv_extra_and_reordered_columns_are_ignored() -> None:
    # Arrange
    header = "venue, size ,symbol,conditions,price,ts"

    # Act
    items = _csv(f"XNAS,7,MSFT,@F,410.5,{TS}", header=header)

    # Assert
    assert items == [Trade("MSFT", TS_US, 410.5, 7.0)]


def test_parse_csv_blank_lines_skipped_and_line_numbers_kept() -> None:
    # Arrange
    text = f"{HEADER}\n\n{GOOD_CSV_ROW}\n   \n{TS},AAPL,-1,1,buy,\n"

    # Act
    items = list(parse_csv(_lines(text)))

    # Assert
    assert len(items) == 2
    assert isinstance(items[0], Trade)
    assert isinstance(items[1], Rejected)
    assert (items[1].reason, items[1].line_number) == ("bad_price", 5)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"{TS},AAPL,190.12", "malformed_row"),
        (f"{TS},AAPL,190.12,100,buy,T1,extra", "malformed_row"),
        ("just-one-field", "malformed_row"),
        (f"{TS},,190.12,100,buy,", "bad_symbol"),
        (f"{TS},{'A' * 65},190.12,100,buy,", "bad_symbol"),
        (f"{TS},BRK B,190.12,100,buy,", "bad_symbol"),
        (f"{TS},A\x01B,190.12,100,buy,", "bad_symbol"),
        (f"{TS},AAPL,-190.12,100,buy,", "bad_price"),
        (f"{TS},AAPL,0,100,buy,", "bad_price"),
        (f"{TS},AAPL,nan,100,buy,", "bad_price"),
        (f"{TS},AAPL,inf,100,buy,", "bad_price"),
        (f"{TS},AAPL,abc,100,buy,", "bad_price"),
        (f"{TS},AAPL,190.12,-3,buy,", "bad_size"),
        (f"{TS},AAPL,190.12,0,buy,", "bad_size"),
        (f"{TS},AAPL,190.12,NaN,buy,", "bad_size"),
        (f"{TS},AAPL,190.12,-inf,buy,", "bad_size"),
        (f"{TS},AAPL,190.12,ten,buy,", "bad_size"),
        ("not-a-time,AAPL,190.12,100,buy,", "bad_timestamp"),
        (f"{TS},AAPL,190.12,100,hold,", "bad_side"),
    ],
)
def test_parse_csv_bad_row_returns_rejected_with_reason_and_line(row: str, reason: str) -> None:
    # Arrange
    rows = [GOOD_CSV_ROW, row, GOOD_CSV_ROW]

    # Act
    items = _csv(*rows)

    # Assert
    assert [type(i) for i in items] == [Trade, Rejected, Trade]
    rejected = items[1]
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.line_number, rejected.payload) == (reason, 3, row.encode())


@pytest.mark.parametrize("symbol", WELL_FORMED_SYMBOLS)
def test_parse_csv_well_formed_unusual_symbol_returns_trade(symbol: str) -> None:
    # Arrange / Act
    items = _csv(f"{TS},{symbol},1.5,2,,")

    # Assert
    assert items == [Trade(symbol, TS_US, 1.5, 2.0)]


@pytest.mark.parametrize(
    "header",
    [
        "ts,symbol,price",
        "time,symbol,price,size",
        "symbol;ts;price;size",
        "",
        "\ufeffts,symbol,price,size",
    ],
)
def test_parse_csv_header_missing_required_column_raises_fatal_error(header: str) -> None:
    # Arrange
    lines = _lines(f"{header}\n{GOOD_CSV_ROW}\n")

    # Act / Assert
    with pytest.raises(FatalError):
        list(parse_csv(lines))


def test_parse_csv_empty_file_raises_fatal_error() -> None:
    # Arrange
    lines = _lines("")

    # Act / Assert
    with pytest.raises(FatalError):
        list(parse_csv(lines))


def test_parse_csv_sample_file_with_3_bad_rows_returns_6_trades_and_3_rejections() -> None:
    # Arrange
    from conftest import ROOT

    path = ROOT / "tests/data/replay/trades_with_3_bad_rows.csv"

    # Act
    with path.open(encoding="utf-8", newline="") as handle:
        items = list(parse_csv(iter(handle)))

    # Assert
    rejected = [(i.reason, i.line_number) for i in items if isinstance(i, Rejected)]
    assert rejected == [("bad_size", 5), ("bad_timestamp", 7), ("bad_symbol", 8)]
    assert [t.instrument for t in items if isinstance(t, Trade)] == [
        "AAPL",
        "MSFT",
        "AAPL",
        "ES=F",
        "BTC-USD",
        "AAPL",
    ]


# --- parse_jsonl ------------------------------------------------------------------------------


def test_parse_jsonl_good_lines_return_trades_with_exact_values() -> None:
    # Arrange
    objects = [
        {"ts": TS, "symbol": "AAPL", "price": 190.12, "size": 100, "side": "buy", "trade_id": "T1"},
        {
            "ts": "2026-01-05T16:30:00.000100+02:00",
            "symbol": "EUR/USD",
            "price": "1.0842",
            "size": "1e6",
        },
        {
            "ts": "2026-01-05T14:30:00.000100",
            "symbol": "^GSPC",
            "price": 5000,
            "size": 1,
            "side": -1,
        },
    ]

    # Act
    items = _jsonl(*objects)

    # Assert
    assert items == [
        Trade("AAPL", TS_US, 190.12, 100.0, Side.BUY, "T1"),
        Trade("EUR/USD", TS_US, 1.0842, 1e6, Side.UNKNOWN, ""),
        Trade("^GSPC", TS_US, 5000.0, 1.0, Side.SELL, ""),
    ]


def test_parse_jsonl_extra_keys_are_ignored() -> None:
    # Arrange
    obj = {
        "ts": TS,
        "symbol": "BTC-USD",
        "price": 97000.5,
        "size": 0.25,
        "venue": "CB",
        "nested": {"a": [1]},
    }

    # Act
    items = _jsonl(obj)

    # Assert
    assert items == [Trade("BTC-USD", TS_US, 97000.5, 0.25)]


def test_parse_jsonl_blank_lines_skipped_and_line_numbers_kept() -> None:
    # Arrange
    good = orjson.dumps(_row()).decode()
    bad = orjson.dumps(_row(size=-1)).decode()
    text = f"\n{good}\n  \n\n{bad}\n"

    # Act
    items = list(parse_jsonl(_lines(text)))

    # Assert
    assert len(items) == 2
    assert isinstance(items[0], Trade)
    assert isinstance(items[1], Rejected)
    assert (items[1].reason, items[1].line_number, items[1].payload) == (
        "bad_size",
        5,
        bad.encode(),
    )


@pytest.mark.parametrize(
    "line",
    ['{"ts": "x", ', "not json", "[1, 2, 3]", '"a string"', "42", "null", '{"price": NaN}'],
    ids=["truncated", "text", "array", "string", "number", "null", "nan-literal"],
)
def test_parse_jsonl_malformed_line_returns_rejected_malformed_row(line: str) -> None:
    # Arrange
    text = f"{orjson.dumps(_row()).decode()}\n{line}\n"

    # Act
    items = list(parse_jsonl(_lines(text)))

    # Assert
    assert isinstance(items[0], Trade)
    rejected = items[1]
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.line_number, rejected.payload) == (
        "malformed_row",
        2,
        line.encode(),
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"symbol": ""}, "bad_symbol"),
        ({"symbol": "A" * 65}, "bad_symbol"),
        ({"symbol": "BRK B"}, "bad_symbol"),
        ({"symbol": "A\u0000"}, "bad_symbol"),
        ({"price": -1.5}, "bad_price"),
        ({"price": 0}, "bad_price"),
        ({"price": "NaN"}, "bad_price"),
        ({"price": "inf"}, "bad_price"),
        ({"price": "cheap"}, "bad_price"),
        ({"price": [190.12]}, "bad_price"),
        ({"price": {"value": 190.12}}, "bad_price"),
        ({"price": True}, "bad_price"),
        ({"size": -2}, "bad_size"),
        ({"size": 0.0}, "bad_size"),
        ({"size": "nan"}, "bad_size"),
        ({"size": "-Infinity"}, "bad_size"),
        ({"size": "lots"}, "bad_size"),
        ({"size": True}, "bad_size"),
        ({"ts": "yesterday"}, "bad_timestamp"),
        ({"ts": 1767623400}, "bad_timestamp"),
        ({"side": "short"}, "bad_side"),
        ({"side": True}, "bad_side"),
        ({"ts": None}, "malformed_row"),
        ({"price": None}, "malformed_row"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else str(v),
)
def test_parse_jsonl_bad_field_returns_rejected_with_reason_and_line(
    overrides: dict[str, object], reason: str
) -> None:
    # Arrange
    bad = _row(**overrides)

    # Act
    items = _jsonl(_row(), bad)

    # Assert
    assert isinstance(items[0], Trade)
    rejected = items[1]
    assert isinstance(rejected, Rejected), f"{bad!r} was accepted as {rejected!r}"
    assert (rejected.reason, rejected.line_number) == (reason, 2)
    assert rejected.payload == orjson.dumps(bad)


@pytest.mark.parametrize("symbol", WELL_FORMED_SYMBOLS)
def test_parse_jsonl_well_formed_unusual_symbol_returns_trade(symbol: str) -> None:
    # Arrange / Act
    items = _jsonl(_row(symbol=symbol))

    # Assert
    assert items == [Trade(symbol, TS_US, 190.12, 100.0)]
