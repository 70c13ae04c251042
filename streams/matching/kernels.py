"""Numba kernels of the matcher: hashed text vectors, the parameter comparison, blocked top-k.

A listing's parameters travel as one record of PARAM_DTYPE (dates as proleptic ordinals,
entities as sorted alias-table ids, 0-padded). Vectors are CSR rows of L2-normalized counts of
hashed character trigrams and words; a dot product of two rows is their cosine.
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np
from numpy.typing import NDArray

MAX_ENTITIES: Final = 6
PARAM_DTYPE: Final = np.dtype(
    [
        ("date_start", np.int32),
        ("date_end", np.int32),
        ("date_kind", np.int8),
        ("from_close", np.int8),
        ("close", np.int32),
        ("strike_low", np.float64),
        ("strike_high", np.float64),
        ("has_strike", np.int8),
        ("direction", np.int8),
        ("unit", np.int8),
        ("quantity", np.int8),
        ("announcement", np.int8),
        ("n_entities", np.int8),
        ("entities", np.int32, (MAX_ENTITIES,)),
        ("n_context", np.int8),
        ("context", np.int32, (MAX_ENTITIES,)),
    ]
)

# what compare() sets; AGREE_* are evidence only, HARD_* forbid a match, SOFT_* send it to review
AGREE_DATE: Final = 1 << 0
AGREE_STRIKE: Final = 1 << 1
AGREE_DIRECTION: Final = 1 << 2
AGREE_ENTITIES: Final = 1 << 3
AGREE_QUANTITY: Final = 1 << 4
AGREE_UNIT: Final = 1 << 5
HARD_DATE: Final = 1 << 8
HARD_STRIKE: Final = 1 << 9
HARD_DIRECTION: Final = 1 << 10
HARD_ENTITIES: Final = 1 << 11
HARD_QUANTITY: Final = 1 << 12
HARD_UNIT: Final = 1 << 13
SOFT_DATE: Final = 1 << 16
SOFT_STRIKE: Final = 1 << 17
SOFT_DIRECTION: Final = 1 << 18
SOFT_ENTITIES: Final = 1 << 19
WARN_BY_VS_ON: Final = 1 << 24
WARN_PERIOD: Final = 1 << 25
WARN_ANNOUNCEMENT: Final = 1 << 26
WARN_CLOSE_APART: Final = 1 << 27
HARD_MASK: Final = 0xFF << 8
SOFT_MASK: Final = 0xFF << 16

NO_MATCH: Final = 0
REVIEW: Final = 1
MATCH: Final = 2

_KIND_ON, _KIND_BY, _KIND_IN = 1, 2, 3
_UNIT_DEG_F, _UNIT_DEG_C, _UNIT_DEG = 3, 4, 5
_Q_TEMP_HIGH, _Q_TEMP_LOW, _Q_TEMPERATURE = 2, 3, 4
_FNV_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_FNV_PRIME: Final = np.uint64(0x100000001B3)
CLOSE_APART_DAYS: Final = 7


@numba.njit(cache=True, nogil=True, inline="always")
def _fnv(buf: NDArray[np.uint8], start: int, end: int, salt: np.uint64) -> np.uint64:
    h = _FNV_OFFSET ^ salt
    for i in range(start, end):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return h ^ (h >> np.uint64(29))


@numba.njit(cache=True, nogil=True)
def _doc_hashes(
    buf: NDArray[np.uint8], start: int, end: int, out: NDArray[np.int64], mask: int
) -> int:
    """Write the hashed trigrams of " text " and the hashed words of text[start:end] to `out`."""
    n = 0
    padded = np.empty(end - start + 2, dtype=np.uint8)
    padded[0] = 32
    padded[1:-1] = buf[start:end]
    padded[-1] = 32
    for i in range(padded.size - 2):
        out[n] = np.int64(_fnv(padded, i, i + 3, np.uint64(3)) & np.uint64(mask))
        n += 1
    word = 0
    for i in range(padded.size):
        if padded[i] == 32:
            if i > word:
                out[n] = np.int64(_fnv(padded, word, i, np.uint64(101)) & np.uint64(mask))
                n += 1
            word = i + 1
    return n


@numba.njit(cache=True, nogil=True, parallel=True)
def hash_vectors(
    buf: NDArray[np.uint8], offsets: NDArray[np.int64], n_bits: int
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """Return CSR (indptr, indices, data) of the texts buf[offsets[i]:offsets[i+1]].

    Each row holds the counts of its hashed features (sorted by index), L2-normalized.
    """
    n_docs = offsets.size - 1
    mask = (1 << n_bits) - 1
    bound = np.empty(n_docs + 1, dtype=np.int64)
    bound[0] = 0
    for i in range(n_docs):
        bound[i + 1] = bound[i] + 2 * (offsets[i + 1] - offsets[i]) + 2
    hashes = np.empty(bound[-1], dtype=np.int64)
    unique = np.zeros(n_docs, dtype=np.int64)
    for i in numba.prange(n_docs):
        seg = hashes[bound[i] : bound[i + 1]]
        n = _doc_hashes(buf, offsets[i], offsets[i + 1], seg, mask)
        seg[:n].sort()
        u = 0
        for j in range(n):
            if j == 0 or seg[j] != seg[j - 1]:
                u += 1
        unique[i] = u
        if n < seg.size:
            seg[n] = -1
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    for i in range(n_docs):
        indptr[i + 1] = indptr[i] + unique[i]
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    for i in numba.prange(n_docs):
        seg = hashes[bound[i] : bound[i + 1]]
        at = indptr[i] - 1
        norm = 0.0
        j = 0
        while j < seg.size and seg[j] >= 0:
            if j == 0 or seg[j] != seg[j - 1]:
                at += 1
                indices[at] = seg[j]
                data[at] = 0.0
            data[at] += 1.0
            j += 1
        for k in range(indptr[i], indptr[i + 1]):
            norm += data[k] * data[k]
        scale = 1.0 / np.sqrt(norm) if norm > 0 else 0.0
        for k in range(indptr[i], indptr[i + 1]):
            data[k] = data[k] * scale
    return indptr, indices, data


@numba.njit(cache=True, nogil=True)
def _quantities_clash(qa: int, qb: int) -> bool:
    if qa == 0 or qb == 0 or qa == qb:
        return False
    generic = (qa == _Q_TEMPERATURE and (qb == _Q_TEMP_HIGH or qb == _Q_TEMP_LOW)) or (
        qb == _Q_TEMPERATURE and (qa == _Q_TEMP_HIGH or qa == _Q_TEMP_LOW)
    )
    return not generic


@numba.njit(cache=True, nogil=True)
def _units_clash(ua: int, ub: int) -> bool:
    if ua == 0 or ub == 0 or ua == ub:
        return False
    degrees = (ua == _UNIT_DEG and (ub == _UNIT_DEG_F or ub == _UNIT_DEG_C)) or (
        ub == _UNIT_DEG and (ua == _UNIT_DEG_F or ua == _UNIT_DEG_C)
    )
    return not degrees


@numba.njit(cache=True, nogil=True)
def _same(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


@numba.njit(cache=True, nogil=True)
def _overlap(
    xs: NDArray[np.int32], nx: int, ys: NDArray[np.int32], ny: int
) -> tuple[int, int, int]:
    """How many ids two sorted id lists share, and their lengths."""
    i = j = common = 0
    while i < nx and j < ny:
        if xs[i] == ys[j]:
            common += 1
            i += 1
            j += 1
        elif xs[i] < ys[j]:
            i += 1
        else:
            j += 1
    return common, nx, ny


@numba.njit(cache=True, nogil=True)
def compare(pa: np.void, pb: np.void) -> int:
    """Return the evidence flags of two listings' parameters (symmetric in its arguments).

    Subject entities (people, assets, cities, teams, parties) must be the same set; context
    entities (offices, competitions) may be left out on one side but must not clash.
    """
    flags = 0
    if pa["from_close"] == 0 and pb["from_close"] == 0:
        if pa["date_end"] == pb["date_end"]:
            flags |= AGREE_DATE
        else:
            flags |= HARD_DATE
        ka, kb = pa["date_kind"], pb["date_kind"]
        if (ka == _KIND_ON and kb == _KIND_BY) or (ka == _KIND_BY and kb == _KIND_ON):
            flags |= WARN_BY_VS_ON
        elif ka != kb or pa["date_start"] != pb["date_start"]:
            flags |= WARN_PERIOD
    elif abs(pa["date_end"] - pb["date_end"]) <= 1:
        flags |= AGREE_DATE
    else:
        flags |= SOFT_DATE
    if abs(pa["close"] - pb["close"]) > CLOSE_APART_DAYS:
        flags |= WARN_CLOSE_APART
    if pa["has_strike"] and pb["has_strike"]:
        if _same(pa["strike_low"], pb["strike_low"]) and _same(
            pa["strike_high"], pb["strike_high"]
        ):
            flags |= AGREE_STRIKE
        else:
            flags |= HARD_STRIKE
        da, db = pa["direction"], pb["direction"]
        if da != 0 and db != 0:
            flags |= AGREE_DIRECTION if da == db else HARD_DIRECTION
        elif da != db:
            flags |= SOFT_DIRECTION
        if _units_clash(pa["unit"], pb["unit"]):
            flags |= HARD_UNIT
        elif pa["unit"] != 0 and pb["unit"] != 0:
            flags |= AGREE_UNIT
    elif pa["has_strike"] or pb["has_strike"]:
        flags |= SOFT_STRIKE
    common, na, nb = _overlap(pa["entities"], pa["n_entities"], pb["entities"], pb["n_entities"])
    if na > 0 and na == nb and common == na:
        flags |= AGREE_ENTITIES
    elif common < na and common < nb:
        flags |= HARD_ENTITIES
    elif na != nb:
        flags |= SOFT_ENTITIES
    common, na, nb = _overlap(pa["context"], pa["n_context"], pb["context"], pb["n_context"])
    if common < na and common < nb:
        flags |= HARD_ENTITIES
    if _quantities_clash(pa["quantity"], pb["quantity"]):
        flags |= HARD_QUANTITY
    elif pa["quantity"] != 0 and pa["quantity"] == pb["quantity"]:
        flags |= AGREE_QUANTITY
    if pa["announcement"] != pb["announcement"]:
        flags |= WARN_ANNOUNCEMENT
    return flags


@numba.njit(cache=True, nogil=True)
def decide(score: float, flags: int, high: float, low: float) -> int:
    """MATCH, REVIEW or NO_MATCH for a pair's score and evidence flags."""
    if flags & HARD_MASK:
        return NO_MATCH
    if score >= high and not flags & SOFT_MASK:
        return MATCH
    if score >= low:
        return REVIEW
    return NO_MATCH


@numba.njit(cache=True, nogil=True)
def _offer(
    top_row: NDArray[np.int32],
    top_score: NDArray[np.float64],
    top_decision: NDArray[np.int8],
    top_flags: NDArray[np.int64],
    top_tie: NDArray[np.int64],
    filled: int,
    row: int,
    score: float,
    decision: int,
    flags: int,
    tie: int,
) -> int:
    """Insert a candidate into the sorted top-k (decision, then score, then smaller tie first)."""
    k = top_row.size
    at = filled
    while at > 0:
        d, s, t = top_decision[at - 1], top_score[at - 1], top_tie[at - 1]
        if d > decision or (d == decision and (s > score or (s == score and t < tie))):
            break
        at -= 1
    if at >= k:
        return filled
    last = min(filled, k - 1)
    for m in range(last, at, -1):
        top_row[m] = top_row[m - 1]
        top_score[m] = top_score[m - 1]
        top_decision[m] = top_decision[m - 1]
        top_flags[m] = top_flags[m - 1]
        top_tie[m] = top_tie[m - 1]
    top_row[at], top_score[at], top_decision[at] = row, score, decision
    top_flags[at], top_tie[at] = flags, tie
    return min(filled + 1, k)


@numba.njit(cache=True, nogil=True)
def _dot(
    scratch: NDArray[np.float32],
    b_ptr: NDArray[np.int64],
    b_idx: NDArray[np.int32],
    b_val: NDArray[np.float32],
    row: int,
) -> float:
    total = 0.0
    for m in range(b_ptr[row], b_ptr[row + 1]):
        total += scratch[b_idx[m]] * b_val[m]
    return total


@numba.njit(cache=True, nogil=True, parallel=True)
def join_blocked(
    a_ptr: NDArray[np.int64],
    a_idx: NDArray[np.int32],
    a_val: NDArray[np.float32],
    a_params: NDArray[np.void],
    a_rows: NDArray[np.int32],
    a_key_ptr: NDArray[np.int64],
    a_keys: NDArray[np.int32],
    b_ptr: NDArray[np.int64],
    b_idx: NDArray[np.int32],
    b_val: NDArray[np.float32],
    b_params: NDArray[np.void],
    b_tie: NDArray[np.int64],
    b_alive: NDArray[np.bool_],
    post_ptr: NDArray[np.int64],
    post_dates: NDArray[np.int32],
    post_rows: NDArray[np.int32],
    n_bits: int,
    window_days: int,
    top_k: int,
    high: float,
    low: float,
    n_chunks: int,
) -> tuple[
    NDArray[np.int32], NDArray[np.float64], NDArray[np.int8], NDArray[np.int64], NDArray[np.int32]
]:
    """Top-k B rows for each A row in `a_rows`, among B rows sharing a key within the window.

    a_keys[a_key_ptr[i]:a_key_ptr[i+1]] are the posting lists (ids into post_ptr) of the i-th
    of `a_rows`; each list holds B rows sorted by date. Returns (b_row, score, decision, flags)
    as n x top_k arrays and the count filled per A row. Work is split into `n_chunks` (each
    with its own 2^n_bits scratch); a few per thread balance the load.
    """
    n = a_rows.size
    out_row = np.full((n, top_k), -1, dtype=np.int32)
    out_score = np.zeros((n, top_k), dtype=np.float64)
    out_decision = np.zeros((n, top_k), dtype=np.int8)
    out_flags = np.zeros((n, top_k), dtype=np.int64)
    out_count = np.zeros(n, dtype=np.int32)
    n_chunks = max(1, min(n, n_chunks))
    for chunk in numba.prange(n_chunks):
        scratch = np.zeros(1 << n_bits, dtype=np.float32)
        seen = np.full(b_tie.size, -1, dtype=np.int32)
        tie = np.zeros(top_k, dtype=np.int64)
        for i in range(chunk, n, n_chunks):
            a = a_rows[i]
            for m in range(a_ptr[a], a_ptr[a + 1]):
                scratch[a_idx[m]] = a_val[m]
            pa = a_params[a]
            date = pa["date_end"]
            filled = 0
            for kk in range(a_key_ptr[i], a_key_ptr[i + 1]):
                key = a_keys[kk]
                lo, hi = post_ptr[key], post_ptr[key + 1]
                start = lo + np.searchsorted(post_dates[lo:hi], date - window_days)
                for p in range(start, hi):
                    if post_dates[p] > date + window_days:
                        break
                    b = post_rows[p]
                    if seen[b] == i or not b_alive[b]:
                        continue
                    seen[b] = i
                    score = _dot(scratch, b_ptr, b_idx, b_val, b)
                    flags = compare(pa, b_params[b])
                    decision = decide(score, flags, high, low)
                    filled = _offer(
                        out_row[i],
                        out_score[i],
                        out_decision[i],
                        out_flags[i],
                        tie,
                        filled,
                        b,
                        score,
                        decision,
                        flags,
                        b_tie[b],
                    )
            out_count[i] = filled
            for m in range(a_ptr[a], a_ptr[a + 1]):
                scratch[a_idx[m]] = 0.0
    return out_row, out_score, out_decision, out_flags, out_count


@numba.njit(cache=True, nogil=True)
def match_candidates(
    a_idx: NDArray[np.int32],
    a_val: NDArray[np.float32],
    a_param: NDArray[np.void],
    candidates: NDArray[np.int32],
    b_ptr: NDArray[np.int64],
    b_idx: NDArray[np.int32],
    b_val: NDArray[np.float32],
    b_params: NDArray[np.void],
    b_tie: NDArray[np.int64],
    scratch: NDArray[np.float32],
    top_k: int,
    high: float,
    low: float,
) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.int8], NDArray[np.int64], int]:
    """Top-k of one listing (a_param: a 1-record array) among `candidates` (distinct, alive).

    `scratch` is a zeroed float32 array of 2^n_bits, left zeroed on return.
    """
    row = np.full(top_k, -1, dtype=np.int32)
    score_out = np.zeros(top_k, dtype=np.float64)
    decision_out = np.zeros(top_k, dtype=np.int8)
    flags_out = np.zeros(top_k, dtype=np.int64)
    tie = np.zeros(top_k, dtype=np.int64)
    for m in range(a_idx.size):
        scratch[a_idx[m]] = a_val[m]
    pa = a_param[0]
    filled = 0
    for b in candidates:
        score = _dot(scratch, b_ptr, b_idx, b_val, b)
        flags = compare(pa, b_params[b])
        decision = decide(score, flags, high, low)
        filled = _offer(
            row,
            score_out,
            decision_out,
            flags_out,
            tie,
            filled,
            b,
            score,
            decision,
            flags,
            b_tie[b],
        )
    for m in range(a_idx.size):
        scratch[a_idx[m]] = 0.0
    return row, score_out, decision_out, flags_out, filled
