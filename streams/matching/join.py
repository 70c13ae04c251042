"""The similarity join: an index per venue, the blocked batch join, one listing at a time.

A VenueIndex holds each listing's parameters, its hashed text vector and its blocking keys
(alias-table entities; else the measured quantity; else the category), with postings sorted by
the listing's decisive date. A pair is scored only when the two share a key and their dates are
within `window_days`; `join` (every listing of A, in parallel) and `match_listing` (one) run the
same comparison on the same candidates, so a rebuild equals the incremental results.
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from streams.matching import kernels
from streams.matching.normalize import CONTEXT_KINDS, ENTITIES
from streams.matching.params import Params, extract_params

log = logging.getLogger(__name__)

N_BITS: Final = 18
DecisionName = Literal["no_match", "review", "match"]
DECISIONS: Final[tuple[DecisionName, DecisionName, DecisionName]] = ("no_match", "review", "match")
_ENTITY_IDS: Final = {name: i + 1 for i, name in enumerate(ENTITIES)}
_QUANTITY_KEY: Final = 1 << 20
_CATEGORY_KEY: Final = 1 << 21


@dataclass(frozen=True, slots=True)
class Listing:
    """One venue's market as the matcher sees it."""

    id: str
    title: str
    close_date: dt.date | None = None
    category: str = ""
    rules: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """The project's defaults: cosine for `match` and for `review`, blocking window, top-k."""

    high: float = 0.5
    low: float = 0.3
    window_days: int = 7
    top_k: int = 10


@dataclass(frozen=True, slots=True)
class Pair:
    """One scored candidate: rank 1 is A's best (by decision, then score)."""

    a_id: str
    b_id: str
    score: float
    rank: int
    decision: DecisionName
    flags: int


def _param_record(params: Params, close_date: dt.date | None) -> NDArray[np.void]:
    rec = np.zeros(1, dtype=kernels.PARAM_DTYPE)
    r = rec[0]
    if params.date is not None:
        r["date_start"] = params.date.start.toordinal()
        r["date_end"] = params.date.end.toordinal()
        r["date_kind"] = int(params.date.kind)
        r["from_close"] = int(params.date.from_close_date)
    else:
        r["from_close"] = 1
    r["close"] = close_date.toordinal() if close_date else r["date_end"]
    if params.strike is not None:
        r["has_strike"] = 1
        r["strike_low"], r["strike_high"] = params.strike.low, params.strike.high
        r["direction"], r["unit"] = int(params.strike.direction), int(params.strike.unit)
    r["quantity"] = int(params.quantity)
    r["announcement"] = int(params.announcement)
    for field, context in (("entities", False), ("context", True)):
        ids = sorted(
            _ENTITY_IDS[e.name] for e in params.entities if (e.kind in CONTEXT_KINDS) == context
        )
        ids = ids[: kernels.MAX_ENTITIES]
        r[f"n_{field}"] = len(ids)
        r[field][: len(ids)] = ids
    return rec


def block_keys(params: Params) -> list[int]:
    """The blocking keys of a listing: its subject entities; else its context entities (an
    office, a competition); else its quantity; else its category."""
    for context in (False, True):
        keys = {
            _ENTITY_IDS[e.name] for e in params.entities if (e.kind in CONTEXT_KINDS) == context
        }
        if keys:
            return sorted(keys)
    if params.quantity:
        return [_QUANTITY_KEY + int(params.quantity)]
    return [_CATEGORY_KEY + zlib.crc32(params.category.encode())]


def _tie(listing_id: str) -> int:
    """A deterministic tie-break between equal scores, independent of insertion order."""
    return zlib.crc32(listing_id.encode()) << 31 | zlib.adler32(listing_id.encode()) >> 1


class VenueIndex:
    """One venue's listings, vectors, parameters and postings; rows are never reused.

    A changed listing gets a new row and its old row is marked dead, so postings only grow;
    `compacted()` rebuilds without dead rows.
    """

    def __init__(self, n_bits: int = N_BITS) -> None:
        self.n_bits = n_bits
        self.ids: list[str] = []
        self.listings: list[Listing] = []
        self.params: list[Params] = []
        self.row_of: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=np.bool_)
        self._records = np.zeros(0, dtype=kernels.PARAM_DTYPE)
        self._tie = np.zeros(0, dtype=np.int64)
        self._ptr = np.zeros(1, dtype=np.int64)
        self._idx = np.zeros(0, dtype=np.int32)
        self._val = np.zeros(0, dtype=np.float32)
        self._n = 0
        self._nnz = 0
        self.postings: dict[int, tuple[NDArray[np.int32], NDArray[np.int32]]] = {}
        self._scratch = np.zeros(1 << n_bits, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def alive(self) -> NDArray[np.bool_]:
        return self._alive[: self._n]

    @property
    def records(self) -> NDArray[np.void]:
        return self._records[: self._n]

    @property
    def ties(self) -> NDArray[np.int64]:
        return self._tie[: self._n]

    def csr(self) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
        return self._ptr[: self._n + 1], self._idx[: self._nnz], self._val[: self._nnz]

    def vector(self, row: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        lo, hi = self._ptr[row], self._ptr[row + 1]
        return self._idx[lo:hi], self._val[lo:hi]

    def upsert(self, listings: Iterable[Listing]) -> list[int]:
        """Add new listings and replace changed ones (same id); return their rows."""
        batch = list(listings)
        params = [
            extract_params(x.title, close_date=x.close_date, category=x.category, rules=x.rules)
            for x in batch
        ]
        return self.upsert_extracted(batch, params)

    def upsert_extracted(self, listings: Sequence[Listing], params: Sequence[Params]) -> list[int]:
        """`upsert` for listings whose parameters were already extracted (in the same order)."""
        if not listings:
            return []
        texts = [p.text.encode() for p in params]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in texts], out=offsets[1:])
        buf = (
            np.frombuffer(b"".join(texts), dtype=np.uint8) if offsets[-1] else np.zeros(0, np.uint8)
        )
        ptr, idx, val = kernels.hash_vectors(buf, offsets, self.n_bits)
        first = self._n
        self._grow(first + len(listings), self._nnz + idx.size)
        self._ptr[first + 1 : first + len(listings) + 1] = ptr[1:] + self._nnz
        self._idx[self._nnz : self._nnz + idx.size] = idx
        self._val[self._nnz : self._nnz + idx.size] = val
        self._nnz += idx.size
        new_keys: dict[int, list[tuple[int, int]]] = {}
        rows: list[int] = []
        for offset, (listing, p) in enumerate(zip(listings, params, strict=True)):
            row = first + offset
            old = self.row_of.get(listing.id)
            if old is not None:
                self._alive[old] = False
            self.row_of[listing.id] = row
            self.ids.append(listing.id)
            self.listings.append(listing)
            self.params.append(p)
            self._records[row] = _param_record(p, listing.close_date)[0]
            self._alive[row] = True
            self._tie[row] = _tie(listing.id)
            for key in block_keys(p):
                new_keys.setdefault(key, []).append((int(self._records[row]["date_end"]), row))
            rows.append(row)
        for key, entries in new_keys.items():
            dates = np.array([d for d, _ in entries], dtype=np.int32)
            rows_ = np.array([r for _, r in entries], dtype=np.int32)
            if key in self.postings:
                dates = np.concatenate((self.postings[key][0], dates))
                rows_ = np.concatenate((self.postings[key][1], rows_))
            order = np.argsort(dates, kind="stable")
            self.postings[key] = (dates[order], rows_[order])
        self._n = first + len(listings)
        return rows

    def remove(self, listing_id: str) -> bool:
        """Forget a listing (closed or delisted); return whether it was there."""
        row = self.row_of.pop(listing_id, None)
        if row is None:
            return False
        self._alive[row] = False
        return True

    def candidates(
        self, record: np.void, keys: Sequence[int], window_days: int
    ) -> NDArray[np.int32]:
        """Alive rows that share one of `keys` with a date within `window_days` of the record's."""
        date = int(record["date_end"])
        found: list[NDArray[np.int32]] = []
        for key in keys:
            entry = self.postings.get(key)
            if entry is None:
                continue
            dates, rows = entry
            lo = np.searchsorted(dates, date - window_days, side="left")
            hi = np.searchsorted(dates, date + window_days, side="right")
            found.append(rows[lo:hi])
        if not found:
            return np.zeros(0, dtype=np.int32)
        rows_all = np.unique(np.concatenate(found)) if len(found) > 1 else found[0]
        return rows_all[self.alive[rows_all]]

    def flat_postings(
        self,
    ) -> tuple[dict[int, int], NDArray[np.int64], NDArray[np.int32], NDArray[np.int32]]:
        """The postings as one CSR: key -> list id, pointers, dates, rows."""
        keys = list(self.postings)
        ptr = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum([self.postings[k][0].size for k in keys], out=ptr[1:])
        dates = (
            np.concatenate([self.postings[k][0] for k in keys]) if keys else np.zeros(0, np.int32)
        )
        rows = (
            np.concatenate([self.postings[k][1] for k in keys]) if keys else np.zeros(0, np.int32)
        )
        return (
            {k: i for i, k in enumerate(keys)},
            ptr,
            dates.astype(np.int32),
            rows.astype(np.int32),
        )

    def _grow(self, rows: int, nnz: int) -> None:
        if rows > self._alive.size:
            size = max(rows, 2 * self._alive.size, 1024)
            self._alive = np.resize(self._alive, size)
            self._alive[self._n :] = False
            self._records = np.resize(self._records, size)
            self._tie = np.resize(self._tie, size)
            ptr = np.zeros(size + 1, dtype=np.int64)
            ptr[: self._n + 1] = self._ptr[: self._n + 1]
            self._ptr = ptr
        if nnz > self._idx.size:
            size = max(nnz, 2 * self._idx.size, 1 << 16)
            self._idx = np.resize(self._idx, size)
            self._val = np.resize(self._val, size)


def build_index(listings: Iterable[Listing], n_bits: int = N_BITS) -> VenueIndex:
    """Return a VenueIndex of `listings`."""
    index = VenueIndex(n_bits)
    index.upsert(listings)
    return index


def _pairs(
    a: VenueIndex, a_row: int, b: VenueIndex, rows: NDArray[np.int32], scores: NDArray[np.float64],
    decisions: NDArray[np.int8], flags: NDArray[np.int64], count: int,
) -> list[Pair]:  # fmt: skip
    return [
        Pair(
            a.ids[a_row],
            b.ids[int(rows[r])],
            float(scores[r]),
            r + 1,
            DECISIONS[int(decisions[r])],
            int(flags[r]),
        )
        for r in range(count)
    ]


def match_listing(
    a: VenueIndex, a_row: int, b: VenueIndex, thresholds: Thresholds = Thresholds()
) -> list[Pair]:
    """Match one listing (row `a_row` of index `a`) against index `b`; best first."""
    record = a.records[a_row : a_row + 1]
    keys = block_keys(a.params[a_row])
    candidates = b.candidates(record[0], keys, thresholds.window_days)
    idx, val = a.vector(a_row)
    b_ptr, b_idx, b_val = b.csr()
    rows, scores, decisions, flags, count = kernels.match_candidates(
        idx, val, record, candidates, b_ptr, b_idx, b_val, b.records, b.ties, b._scratch,
        thresholds.top_k, thresholds.high, thresholds.low,
    )  # fmt: skip
    return _pairs(a, a_row, b, rows, scores, decisions, flags, int(count))


@dataclass(frozen=True, slots=True)
class JoinResult:
    """Every A listing's top-k in B as n x k arrays (row -1 where fewer than k were found)."""

    a_rows: NDArray[np.int32]
    b_rows: NDArray[np.int32]
    scores: NDArray[np.float64]
    decisions: NDArray[np.int8]
    flags: NDArray[np.int64]
    counts: NDArray[np.int32]

    def pairs(self, a: VenueIndex, b: VenueIndex) -> list[Pair]:
        """All pairs, sorted by a_id then rank."""
        out: list[Pair] = []
        order = sorted(range(self.a_rows.size), key=lambda i: a.ids[int(self.a_rows[i])])
        for i in order:
            out += _pairs(a, int(self.a_rows[i]), b, self.b_rows[i], self.scores[i],
                          self.decisions[i], self.flags[i], int(self.counts[i]))  # fmt: skip
        return out


def join(a: VenueIndex, b: VenueIndex, thresholds: Thresholds = Thresholds()) -> JoinResult:
    """Every alive listing of `a` matched against `b` (numba, parallel over A)."""
    if a.n_bits != b.n_bits:
        raise ValueError("both indexes must hash into the same number of bits")
    key_ids, post_ptr, post_dates, post_rows = b.flat_postings()
    a_rows = np.flatnonzero(a.alive).astype(np.int32)
    key_lists = [[key_ids[k] for k in block_keys(a.params[r]) if k in key_ids] for r in a_rows]
    a_key_ptr = np.zeros(len(key_lists) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in key_lists], out=a_key_ptr[1:])
    a_keys = np.array([k for keys in key_lists for k in keys], dtype=np.int32)
    a_ptr, a_idx, a_val = a.csr()
    b_ptr, b_idx, b_val = b.csr()
    rows, scores, decisions, flags, counts = kernels.join_blocked(
        a_ptr, a_idx, a_val, a.records, a_rows, a_key_ptr, a_keys,
        b_ptr, b_idx, b_val, b.records, b.ties, b.alive, post_ptr, post_dates, post_rows,
        a.n_bits, thresholds.window_days, thresholds.top_k, thresholds.high, thresholds.low,
        4 * numba.get_num_threads(),
    )  # fmt: skip
    return JoinResult(a_rows, rows, scores, decisions, flags, counts)
