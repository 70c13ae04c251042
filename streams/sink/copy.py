"""The `bars` columns, and bars as a PostgreSQL binary COPY stream built from numpy columns.

`BAR_COLUMNS`, the table's columns and their PostgreSQL types from `shared.bar_fields`, gives
the COPY column list, the stream's field layout and the merge statement. A
binary COPY row is an int16 field count, then per field an int32 length and the big-endian
value. The fixed-width fields of all rows are written through one structured numpy dtype; text
is encoded once per dictionary entry and gathered by code, so no Python runs per row. Pure:
imports no database client.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from shared.bar_fields import BAR_DOUBLES, BAR_FIELDS, BAR_KEY, PgType
from shared.models import Bar, BarBatch
from shared.times import MAX_US, MIN_US

# The columns of `bars`, in table order, from the Bar schema. A text column `c` is BarBatch
# dictionary `cs` with codes `c_index`; float8 columns are BarBatch.doubles; the others are
# BarBatch columns named as the Bar attribute.
BAR_COLUMNS: Final = tuple((field.name, field.pg_type) for field in BAR_FIELDS)
ATTRIBUTE: Final = {field.name: field.attribute for field in BAR_FIELDS}
COLUMNS: Final = tuple(column for column, _ in BAR_COLUMNS)
KEY: Final = BAR_KEY  # the primary key: one row per bar
# Which row of a key wins: the highest seq (the channel's later message, whatever its source:
# a backfill's bar replaces a live one that late trades revised), then the highest revision
# (rows written with no seq), then the later row.
SEQ: Final = "seq"
REVISION: Final = "revision"
TEXT_COLUMNS: Final = tuple(column for column, pg_type in BAR_COLUMNS if pg_type == "text")
_FIXED: Final = tuple((column, t) for column, t in BAR_COLUMNS if t != "text")
# The stream carries the fixed-width fields first, so that rows differ only in their tails.
COPY_COLUMNS: Final = (*(column for column, _ in _FIXED), *TEXT_COLUMNS)

_BIG_ENDIAN: Final[dict[PgType, str]] = {
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "timestamptz": ">i8",  # microseconds since 2000-01-01
}
_IN_MEMORY: Final[dict[PgType, type[np.generic]]] = {
    "text": np.int64,  # codes into the column's names
    "int4": np.int64,
    "int8": np.int64,
    "float8": np.float64,
    "timestamptz": np.int64,  # microseconds since the Unix epoch
}
_FIXED_DTYPE: Final = np.dtype(
    [("field_count", ">i2")]
    + [pair for c, t in _FIXED for pair in ((f"{c}.length", ">i4"), (c, _BIG_ENDIAN[t]))]
)
HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, no flags, no extension
TRAILER: Final = b"\xff\xff"
PG_EPOCH_US: Final = 946_684_800_000_000  # 2000-01-01, PostgreSQL's binary time origin
_INT4: Final = (-(2**31), 2**31 - 1)


def _unify(dictionaries: Sequence[Sequence[str]]) -> tuple[list[str], list[NDArray[np.int64]]]:
    """Return the sorted distinct names of `dictionaries` and, per dictionary, each name's code."""
    every = [name for names in dictionaries for name in names]
    # numpy strings drop trailing NULs, so names with a NUL are coded in Python, exactly
    if not every or "\x00" in "".join(every):
        distinct = sorted(set(every))
        code = {name: i for i, name in enumerate(distinct)}
        return distinct, [np.array([code[n] for n in names], np.int64) for names in dictionaries]
    distinct_array, inverse = np.unique(np.array(every, dtype=np.str_), return_inverse=True)
    cuts = np.cumsum([len(names) for names in dictionaries])[:-1]
    return distinct_array.tolist(), np.split(inverse.reshape(-1).astype(np.int64), cuts)


@dataclass(frozen=True, slots=True, eq=False)
class BarRows:
    """Bars as one set of columns in arrival order, the rows one COPY may write.

    Text columns hold codes into `names[column]`, which is sorted and distinct, so equal
    strings have equal codes and code order is string order; timestamps are microseconds
    since the Unix epoch.
    """

    names: dict[str, list[str]]
    columns: dict[str, NDArray[Any]]

    def __len__(self) -> int:
        return len(self.columns[COLUMNS[0]])

    @classmethod
    def from_batches(cls, batches: Sequence[BarBatch]) -> BarRows:
        """Join batches (each with its own dictionaries and ts_recv_us) into one set of rows."""
        names: dict[str, list[str]] = {}
        columns: dict[str, NDArray[Any]] = {}
        for column, pg_type in BAR_COLUMNS:
            field = ATTRIBUTE[column]
            if pg_type == "text":
                dictionaries = [getattr(b, f"{column}s") for b in batches]
                names[column], codes = _unify(dictionaries)
                parts = [
                    code[getattr(b, f"{column}_index")]
                    for b, code in zip(batches, codes, strict=True)
                ]
            elif pg_type == "float8":
                parts = [b.doubles[:, BAR_DOUBLES.index(field)] for b in batches]
            else:  # a column, or one value for the whole batch (ts_recv_us)
                parts = [
                    np.broadcast_to(np.asarray(getattr(b, field), np.int64), (len(b),))
                    for b in batches
                ]
            columns[column] = np.concatenate(
                [np.empty(0, _IN_MEMORY[pg_type]), *parts], dtype=_IN_MEMORY[pg_type]
            )
        return cls(names, columns)

    @classmethod
    def from_bars(cls, bars: Sequence[Bar]) -> BarRows:
        """Build rows from Bar objects; raise OverflowError for an int beyond int64."""
        names: dict[str, list[str]] = {}
        columns: dict[str, NDArray[Any]] = {}
        for column, pg_type in BAR_COLUMNS:
            values = [getattr(b, ATTRIBUTE[column]) for b in bars]
            if pg_type == "text":
                names[column] = sorted(set(values))
                code = {name: i for i, name in enumerate(names[column])}
                values = [code[v] for v in values]
            columns[column] = np.array(values, _IN_MEMORY[pg_type])
        return cls(names, columns)

    def bar(self, row: int) -> Bar:
        """Row `row` as a Bar, e.g. for a dead letter."""
        fields: dict[str, Any] = {}
        for column, pg_type in BAR_COLUMNS:
            value = self.columns[column][row].item()
            fields[ATTRIBUTE[column]] = (
                self.names[column][value] if pg_type == "text" else value
            )
        return Bar(**fields)


@dataclass(frozen=True, slots=True, eq=False)
class EncodedNames:
    """One text column's names as COPY fields (int32 length, then the bytes), padded to a grid.

    `problems[i]` says why name i cannot be written (it has a NUL, or no bytes in the
    connection's encoding); such names get no bytes.
    """

    widths: NDArray[np.int64]  # field length per name, the 4-byte length included
    grid: NDArray[np.uint8]  # (names, widest): name i's field in grid[i, : widths[i]]
    problems: list[str | None]

    @classmethod
    def of(cls, column: str, names: Sequence[str], encoding: str) -> EncodedNames:
        if codecs.lookup(encoding).name == "utf-8":
            try:  # all names at once: NUL encodes as the only zero byte, so it splits them
                joined = "\x00".join(names).encode(encoding)
            except UnicodeEncodeError:
                joined = b""
            flat = np.frombuffer(joined, np.uint8)
            zeros = np.flatnonzero(flat == 0)
            if joined and len(zeros) == len(names) - 1:
                ends = np.append(zeros, len(flat))
                return cls._grid(flat, ends - np.diff(ends, prepend=-1) + 1, ends, len(names))
        return cls._one_by_one(column, names, encoding)

    @classmethod
    def _one_by_one(cls, column: str, names: Sequence[str], encoding: str) -> EncodedNames:
        """Encode name by name, finding those with a NUL or no encoding."""
        texts: list[bytes] = []
        problems: list[str | None] = []
        for name in names:
            problem = None
            try:
                text = name.encode(encoding)
            except UnicodeEncodeError as exc:
                text, problem = b"", f"{column} {name!r} has no {encoding} encoding: {exc.reason}"
            if b"\x00" in text:
                text, problem = (
                    b"",
                    f"{column} {name!r} contains NUL (0x00), which text cannot hold",
                )
            texts.append(text)
            problems.append(problem)
        lengths = np.array([len(t) for t in texts], np.int64)
        ends = np.cumsum(lengths)
        encoded = cls._grid(
            np.frombuffer(b"".join(texts), np.uint8), ends - lengths, ends, len(texts)
        )
        return cls(encoded.widths, encoded.grid, problems)

    @classmethod
    def _grid(
        cls, flat: NDArray[np.uint8], starts: NDArray[np.int64], ends: NDArray[np.int64], n: int
    ) -> EncodedNames:
        """Lay out name i, bytes flat[starts[i]:ends[i]], as a field in row i of a grid."""
        lengths = ends - starts
        widths = lengths + 4
        grid = np.zeros((n, int(widths.max(initial=4))), np.uint8)
        grid[:, :4] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        row = np.repeat(np.arange(n), lengths)
        offset = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        grid[row, 4 + offset] = flat[np.repeat(starts, lengths) + offset]
        return cls(widths, grid, [None] * n)


def encode_names(rows: BarRows, encoding: str) -> dict[str, EncodedNames]:
    """Encode every text column's names in `encoding` (the connection's client encoding)."""
    return {c: EncodedNames.of(c, rows.names[c], encoding) for c in TEXT_COLUMNS}


def refusals(rows: BarRows, names: dict[str, EncodedNames]) -> list[tuple[int, str]]:
    """Return (row, reason) for each row the database would refuse or readers could not read.

    Refused: a time outside the years 1 to 9999 (Python's datetime), an int4 value out of
    range, a name with a NUL or not encodable. NaN and infinities are stored as they are.
    """
    reason = np.full(len(rows), -1, np.int64)
    reasons: list[str] = []

    def mark(bad: NDArray[np.bool_], text: str) -> None:
        new = bad & (reason < 0)
        if new.any():
            reason[new] = len(reasons)
            reasons.append(text)

    for column, pg_type in BAR_COLUMNS:
        values = rows.columns[column]
        if pg_type == "text":
            for code, problem in enumerate(names[column].problems):
                if problem is not None:
                    mark(values == code, problem)
        elif pg_type == "timestamptz":
            mark((values < MIN_US) | (values > MAX_US), f"{column} is outside the years 1 to 9999")
        elif pg_type == "int4":
            mark((values < _INT4[0]) | (values > _INT4[1]), f"{column} is out of range for int4")
    return [(int(row), reasons[reason[row]]) for row in np.flatnonzero(reason >= 0)]


def winners(rows: BarRows, candidates: NDArray[np.intp]) -> NDArray[np.intp]:
    """Return the rows to merge, in key order: per key, the highest (seq, revision), the later
    on a tie.

    That is the row a row-by-row upsert `where (excluded.seq, excluded.revision) >= (bars.seq,
    bars.revision)` would leave, so the merge needs neither `distinct on` nor a sort.
    """
    keys = [rows.columns[c][candidates] for c in KEY]
    order = np.lexsort(
        (
            np.arange(len(candidates)),
            rows.columns[REVISION][candidates],
            rows.columns[SEQ][candidates],
            *reversed(keys),
        )
    )
    last = np.ones(len(order), np.bool_)
    if len(order) > 1:
        last[:-1] = np.logical_or.reduce([k[order][1:] != k[order][:-1] for k in keys])
    return candidates[order[last]]


def encode_copy(rows: BarRows, which: NDArray[np.intp], names: dict[str, EncodedNames]) -> bytes:
    """Return the binary COPY stream (header to trailer) of rows `which`, in COPY_COLUMNS order.

    Rows are grouped by the widths of their text fields, so that each group is a strided
    structured array over the output; within a group they keep the order of `which`.
    """
    codes = np.stack([rows.columns[c][which] for c in TEXT_COLUMNS], axis=1)
    widths = np.stack([names[c].widths[codes[:, k]] for k, c in enumerate(TEXT_COLUMNS)], axis=1)
    # one int per combination of widths: cheaper to group than rows of a 2-D array
    scale = np.cumprod([1, *(int(names[c].widths.max(initial=4)) + 1 for c in TEXT_COLUMNS)])
    combined = widths @ scale[:-1]
    if len(combined) and combined.min() == combined.max():  # the usual case: one group
        tails, group = widths[:1], np.zeros(len(combined), np.int64)
    else:
        _, first, group = np.unique(combined, return_index=True, return_inverse=True)
        tails, group = widths[first], group.reshape(-1)
    sizes = _FIXED_DTYPE.itemsize + tails.sum(axis=1)
    counts = np.bincount(group, minlength=len(tails))
    out = np.empty(len(HEADER) + int(sizes @ counts) + len(TRAILER), np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    out[len(out) - len(TRAILER) :] = np.frombuffer(TRAILER, np.uint8)
    at = len(HEADER)
    for g, tail in enumerate(tails):
        members = np.flatnonzero(group == g)
        picked, size = which[members], int(sizes[g])
        fixed = np.ndarray((len(members),), _FIXED_DTYPE, out, at, (size,))
        fixed["field_count"] = len(COPY_COLUMNS)
        for column, pg_type in _FIXED:
            values = rows.columns[column][picked]
            fixed[f"{column}.length"] = np.dtype(_BIG_ENDIAN[pg_type]).itemsize
            fixed[column] = values - PG_EPOCH_US if pg_type == "timestamptz" else values
        offset = at + _FIXED_DTYPE.itemsize
        for k, column in enumerate(TEXT_COLUMNS):
            width = int(tail[k])
            field = np.ndarray((len(members), width), np.uint8, out, offset, (size, 1))
            field[:] = names[column].grid[codes[members, k], :width]
            offset += width
        at += size * len(members)
    return out.tobytes()
