"""The Bar's fields come from bar.avsc once; the dataclass and every mapping agree with it."""

from __future__ import annotations

import dataclasses

import pytest

from shared.bar_fields import BAR_ATTRIBUTES, BAR_DOUBLES, BAR_FIELDS, bar_field, select_list
from shared.models import Bar


def test_bar_dataclass_has_the_schemas_fields_in_order_with_units_on_times() -> None:
    assert tuple(f.name for f in dataclasses.fields(Bar)) == BAR_ATTRIBUTES
    assert [f.name for f in BAR_FIELDS if f.is_time] == ["ts", "ts_event", "ts_recv"]
    assert bar_field("ts_event").attribute == "ts_event_us"


def test_bar_doubles_are_the_float_fields_in_schema_order() -> None:
    assert BAR_DOUBLES == (
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "buy_volume",
        "sell_volume",
    )


def test_fields_added_later_carry_their_avro_default() -> None:
    added = {f.name: f.default for f in BAR_FIELDS if f.default is not None}

    assert added == {"buy_volume": 0.0, "sell_volume": 0.0, "seq": 0}


def test_select_list_reads_times_as_microseconds() -> None:
    text = select_list(("instrument", "ts"))

    assert text == "instrument, (extract(epoch from ts) * 1000000)::bigint as ts"


def test_bar_field_unknown_name_lists_the_fields() -> None:
    with pytest.raises(KeyError, match="trade_count"):
        bar_field("symbol")
