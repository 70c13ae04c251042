"""The fields of a bar, read from `schemas/avro/bar.avsc`: every mapping of a `Bar` derives here.

An Avro field's name is also its column in the `bars` table and in exports; the `Bar` attribute
(and WebSocket JSON key) of a time carries its unit (`ts` -> `ts_us`). A new field is one change
to the schema file plus the `Bar` dataclass, whose agreement with it is tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

import schemas

PgType = Literal["text", "int4", "int8", "float8", "timestamptz"]
_PG_TYPES: Final[dict[str, PgType]] = {
    "string": "text",
    "int": "int4",
    "long": "int8",
    "double": "float8",
    "timestamp-micros": "timestamptz",
}


@dataclass(frozen=True, slots=True)
class BarField:
    """One field of the `Bar` record."""

    name: str  # in bar.avsc, the bars table and exports
    pg_type: PgType  # in the bars table and the sink's binary COPY
    default: Any  # the Avro default of a field added later, None for the first ones

    @property
    def is_time(self) -> bool:
        return self.pg_type == "timestamptz"

    @property
    def attribute(self) -> str:
        """The `Bar` attribute and JSON key: times in microseconds carry the unit."""
        return f"{self.name}_us" if self.is_time else self.name


def _pg_type(avro_type: Any) -> PgType:
    if isinstance(avro_type, dict):
        return _PG_TYPES[avro_type.get("logicalType") or avro_type["type"]]
    return _PG_TYPES[avro_type]


BAR_FIELDS: Final = tuple(
    BarField(field["name"], _pg_type(field["type"]), field.get("default"))
    for field in json.loads(schemas.source("bar"))["fields"]
)
BAR_NAMES: Final = tuple(field.name for field in BAR_FIELDS)
BAR_ATTRIBUTES: Final = tuple(field.attribute for field in BAR_FIELDS)
# What BarBatch.doubles holds per bar, in schema order.
BAR_DOUBLES: Final = tuple(field.name for field in BAR_FIELDS if field.pg_type == "float8")
BAR_KEY: Final = ("instrument", "interval", "ts")  # one bar per key; the highest revision wins


def bar_field(name: str) -> BarField:
    """Return the field called `name`; raise KeyError naming the fields there are."""
    for field in BAR_FIELDS:
        if field.name == name:
            return field
    raise KeyError(f"no bar field {name!r}; fields: {', '.join(f.name for f in BAR_FIELDS)}")


def select_list(names: tuple[str, ...] = BAR_NAMES) -> str:
    """Return a SQL select list of bar columns, times as integer microseconds since the epoch."""
    micros = "(extract(epoch from {0}) * 1000000)::bigint as {0}"
    return ", ".join(micros.format(n) if bar_field(n).is_time else n for n in names)
