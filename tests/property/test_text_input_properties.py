"""Property tests of text parsers: replay rows (CSV and JSON Lines) give a Trade or a Rejected
each, and extract_params reads any listing text and close date, raising at most ValueError.

Inputs per run (derandomized): replay JSON Lines 400 random lines + 400 mutated rows, CSV 300
random files + 400 mutated rows, parse_timestamp_us 300 texts; extract_params 500 random
titles + 500 market-like titles. Total: EXAMPLES_TRIED = 2,800 inputs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any, Final

from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.base import Rejected
from connectors.replay import parse_csv, parse_jsonl, parse_timestamp_us
from shared.errors import FatalError
from shared.models import Trade
from streams.matching.params import Params, extract_params

JSONL_RANDOM: Final = 400
JSONL_ROWS: Final = 400
CSV_RANDOM: Final = 300
CSV_ROWS: Final = 400
TIMESTAMPS: Final = 300
TITLES_RANDOM: Final = 500
TITLES_SHAPED: Final = 500
EXAMPLES_TRIED: Final = (
    JSONL_RANDOM + JSONL_ROWS + CSV_RANDOM + CSV_ROWS + TIMESTAMPS + TITLES_RANDOM + TITLES_SHAPED
)

PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)
HEADER: Final = "ts,symbol,price,size,side,trade_id"

TIMES: Final = st.sampled_from(
    [
        "2024-03-12T13:30:00.123456Z",
        "2024-03-12T13:30:00.123456+00:00",
        "2024-03-12 13:30:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00-14:00",
        "9999-12-31T23:59:59.999999-14:00",
        "9999-12-31T23:59:59.999999+14:00",
        "2024-02-30T00:00:00",
        "1710250200",
        "",
    ]
)
NUMBER_TEXT: Final = st.sampled_from(
    ["187.5", "0", "-1", "nan", "NaN", "inf", "-inf", "1e999", "1e-400", "1_000", " 5 ", "x", ""]
)
NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
LEAVES: Final = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.text(max_size=8), TIMES, NUMBER_TEXT
)
JSON_VALUES: Final = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, values, values, JSON_VALUES)


ROWS: Final = st.fixed_dictionaries(
    {},
    optional={
        "ts": maybe(TIMES),
        "symbol": maybe(st.sampled_from(["AAPL", "BRK.B", "", "a b", "A" * 100])),
        "price": maybe(NUMBER_TEXT | NUMBERS),
        "size": maybe(NUMBER_TEXT | NUMBERS),
        "side": maybe(st.sampled_from(["buy", "S", "-1", "1", "", "hold"])),
        "trade_id": maybe(st.text(max_size=6)),
    },
)
CELL: Final = st.one_of(
    TIMES, NUMBER_TEXT, st.text(max_size=6), st.sampled_from(['"', '""', ",", "\n"])
)


def assert_trades_or_rejected(rows: list[Trade | Rejected]) -> None:
    assert all(isinstance(row, Trade | Rejected) for row in rows)


@settings(PROPERTY, max_examples=JSONL_RANDOM)
@given(lines=st.lists(st.text(max_size=60), max_size=4))
@example(lines=['{"ts":"2024-03-12T13:30:00Z","symbol":"AAPL","price":1e999,"size":1}'])
@example(lines=["[" * 10_000])
def test_parse_jsonl_random_lines_give_trades_or_rejected(lines: list[str]) -> None:
    assert_trades_or_rejected(list(parse_jsonl(iter(lines))))


@settings(PROPERTY, max_examples=JSONL_ROWS)
@given(rows=st.lists(maybe(ROWS), max_size=4))
@example(rows=[{"ts": "2024-03-12T13:30:00Z", "symbol": "AAPL", "price": 2**64 - 1, "size": 1}])
def test_parse_jsonl_mutated_rows_give_trades_or_rejected(rows: list[Any]) -> None:
    lines = [json.dumps(row, allow_nan=True) + "\n" for row in rows]
    assert_trades_or_rejected(list(parse_jsonl(iter(lines))))


def file_lines(text: str) -> Iterator[str]:
    """The lines of a file holding `text`, split as ReplayConnector's handle splits them."""
    return iter(io.StringIO(text, newline=""))


@settings(PROPERTY, max_examples=CSV_RANDOM)
@given(text=st.one_of(st.text(max_size=120), st.text(max_size=80).map(lambda t: HEADER + "\n" + t)))
@example(text=HEADER + '\n"unterminated\r\n')
@example(text=HEADER + "\n\x00,\x00,\x00,\x00,\x00,\x00")
@example(text="\n0")
def test_parse_csv_random_file_gives_rows_or_fatal_header(text: str) -> None:
    try:
        assert_trades_or_rejected(list(parse_csv(file_lines(text))))
    except FatalError:  # the documented answer to a header without the columns we need
        pass


@settings(PROPERTY, max_examples=CSV_ROWS)
@given(rows=st.lists(st.lists(CELL, min_size=5, max_size=7), max_size=4))
def test_parse_csv_mutated_rows_give_trades_or_rejected(rows: list[list[str]]) -> None:
    lines = [HEADER + "\n", *(",".join(cells) + "\n" for cells in rows)]
    assert_trades_or_rejected(list(parse_csv(iter(lines))))


@settings(PROPERTY, max_examples=TIMESTAMPS)
@given(text=st.one_of(TIMES, st.text(max_size=40)))
def test_parse_timestamp_us_any_text_raises_only_value_error(text: str) -> None:
    try:
        assert isinstance(parse_timestamp_us(text), int)
    except ValueError:
        pass


CLOSE_DATES: Final = st.one_of(st.none(), st.dates(), st.sampled_from([dt.date.min, dt.date.max]))
TITLE_WORDS: Final = st.sampled_from(
    [
        "Will", "Bitcoin", "BTC", "be", "above", "below", "between", "$100,000", "$1.5k", "$2M",
        "$9999999999999999999999999B", "100k", "25bps", "4.5%", "-3%", "on", "by", "in", "Dec",
        "December", "31", "31st", "2025", "99999", "0", "Feb 30", "Q4", "2025?", "end", "of",
        "year", "°F", "80°", "high", "temp", "NYC", "the", "Fed", "cut", "rates", "to", "and",
        "1e999", "NaN", "inf", "Jan 1, 1", "Dec 31, 9999", "week", "month", "-", "\u2013", "?",
    ]
)  # fmt: skip
TITLES: Final = st.lists(TITLE_WORDS, max_size=12).map(" ".join)


def assert_params_or_value_error(title: str, close_date: dt.date | None, rules: str = "") -> None:
    try:
        found = extract_params(title, close_date=close_date, category="Crypto", rules=rules)
    except ValueError:  # the documented refusal
        return
    assert isinstance(found, Params)


@settings(PROPERTY, max_examples=TITLES_RANDOM)
@given(title=st.text(max_size=80), close_date=CLOSE_DATES, rules=st.text(max_size=40))
@example(title="Will BTC be above $100k on Dec 31?", close_date=dt.date.max, rules="")
@example(title="Will BTC be above $100k on Jan 1?", close_date=dt.date.min, rules="")
def test_extract_params_random_text_raises_at_most_value_error(
    title: str, close_date: dt.date | None, rules: str
) -> None:
    assert_params_or_value_error(title, close_date, rules)


@settings(PROPERTY, max_examples=TITLES_SHAPED)
@given(title=TITLES, close_date=CLOSE_DATES, rules=TITLES)
@example(title="Will BTC be above $100k in December 9999?", close_date=dt.date.max, rules="")
@example(title="Will BTC be above $100k by Feb 29?", close_date=dt.date(2100, 3, 1), rules="")
@example(title="Will BTC be above $1e999 on Dec 31 99999?", close_date=None, rules="")
def test_extract_params_market_like_titles_raise_at_most_value_error(
    title: str, close_date: dt.date | None, rules: str
) -> None:
    assert_params_or_value_error(title, close_date, rules)
