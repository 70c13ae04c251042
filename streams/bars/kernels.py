"""Numba kernels that fold trades into bar slots and emit bars; no faust, Kafka or database here.

Layout: every row (a source's instrument) has a ring of slots per interval (ring k has
`ring_sizes[k]` slots from `ring_offsets[k]`, covering the windows that can still change); slot
s of row i is i * slots_per_instrument + s in every column array. A ring holds the windows from
floor(latest trade - max_lateness) to the latest trade, so a slot is reused only once its
window can no longer receive trades.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

EMPTY = 0  # slot holds no window
OPEN = 1  # window receiving trades, never emitted
EMITTED = 2  # emitted, unchanged since
DIRTY = 3  # emitted, then changed by a late trade: a revision is due

# Columns of the float and int state matrices (one row per slot).
F_OPEN, F_HIGH, F_LOW, F_CLOSE, F_VOLUME, F_PV, F_BUY, F_SELL = range(8)
N_FLOAT = 8
I_START, I_OPEN_TS, I_CLOSE_TS, I_COUNT, I_REVISION, I_SOURCE = range(6)
N_INT = 6


@numba.njit(cache=True, nogil=True)
def _emit(
    slot: int,
    fstate: NDArray[np.float64],
    istate: NDArray[np.int64],
    state: NDArray[np.int8],
    out_slot: NDArray[np.int64],
    out_f: NDArray[np.float64],
    out_i: NDArray[np.int64],
    n_out: int,
) -> int:
    """Copy slot into output row n_out with its next revision; mark it emitted."""
    if state[slot] == DIRTY:
        istate[slot, I_REVISION] += 1
    out_slot[n_out] = slot
    out_f[n_out, :] = fstate[slot, :]
    out_i[n_out, :] = istate[slot, :]
    state[slot] = EMITTED
    return n_out + 1


@numba.njit(cache=True, nogil=True)
def fold_trades(
    rows: NDArray[np.int64],
    ts: NDArray[np.int64],
    price: NDArray[np.float64],
    size: NDArray[np.float64],
    side: NDArray[np.int8],
    source: int,
    latest_trade_us: NDArray[np.int64],
    max_lateness_us: int,
    intervals_us: NDArray[np.int64],
    ring_offsets: NDArray[np.int64],
    ring_sizes: NDArray[np.int64],
    slots_per_instrument: int,
    window_start: NDArray[np.int64],
    window_slot: NDArray[np.int64],
    fstate: NDArray[np.float64],
    istate: NDArray[np.int64],
    state: NDArray[np.int8],
    too_late: NDArray[np.bool_],
    out_slot: NDArray[np.int64],
    out_f: NDArray[np.float64],
    out_i: NDArray[np.int64],
) -> int:
    """Fold one source's trades in arrival order; return how many bars went to the out arrays.

    `latest_trade_us[source]` is the source's latest trade in the partition, advanced here. A
    trade older than it minus max_lateness is flagged in `too_late`
    and not folded. A window displaced from its ring slot is emitted first if anything is due.
    Open/close follow event time, ties by arrival: a later trade with an equal time closes.
    `window_start`/`window_slot` (instrument, interval) remember the last window a trade fell in
    and its slot (-1: none yet), which saves the three integer divisions finding them costs.
    """
    n_out = 0
    wm = latest_trade_us[source]
    for t in range(ts.shape[0]):
        when = ts[t]
        if when < wm - max_lateness_us:
            too_late[t] = True
            continue
        if when > wm:
            wm = when
        p = price[t]
        q = size[t]
        row = rows[t]
        for k in range(intervals_us.shape[0]):
            length = intervals_us[k]
            start = window_start[row, k]
            slot = window_slot[row, k]  # -1: nothing remembered yet
            # when - start wraps negative only if the true difference exceeds int64: a miss
            if slot < 0 or start > when or not 0 <= when - start < length:
                start = when - (when % length)
                slot = (
                    row * slots_per_instrument + ring_offsets[k] + (start // length) % ring_sizes[k]
                )
                window_start[row, k] = start
                window_slot[row, k] = slot
            st = state[slot]
            if st != EMPTY and istate[slot, I_START] != start:
                if istate[slot, I_START] > start:  # cannot happen within max lateness; never fold
                    too_late[t] = True
                    break
                if st == OPEN or st == DIRTY:
                    n_out = _emit(slot, fstate, istate, state, out_slot, out_f, out_i, n_out)
                st = EMPTY
            if st == EMPTY:
                fstate[slot, F_OPEN] = p
                fstate[slot, F_HIGH] = p
                fstate[slot, F_LOW] = p
                fstate[slot, F_CLOSE] = p
                fstate[slot, F_VOLUME] = q
                fstate[slot, F_PV] = p * q
                fstate[slot, F_BUY] = q if side[t] > 0 else 0.0
                fstate[slot, F_SELL] = q if side[t] < 0 else 0.0
                istate[slot, I_START] = start
                istate[slot, I_OPEN_TS] = when
                istate[slot, I_CLOSE_TS] = when
                istate[slot, I_COUNT] = 1
                istate[slot, I_REVISION] = 0
                istate[slot, I_SOURCE] = source
                state[slot] = OPEN
                continue
            if when < istate[slot, I_OPEN_TS]:
                fstate[slot, F_OPEN] = p
                istate[slot, I_OPEN_TS] = when
            if when >= istate[slot, I_CLOSE_TS]:
                fstate[slot, F_CLOSE] = p
                istate[slot, I_CLOSE_TS] = when
            if p > fstate[slot, F_HIGH]:
                fstate[slot, F_HIGH] = p
            if p < fstate[slot, F_LOW]:
                fstate[slot, F_LOW] = p
            fstate[slot, F_VOLUME] += q
            fstate[slot, F_PV] += p * q
            if side[t] > 0:
                fstate[slot, F_BUY] += q
            elif side[t] < 0:
                fstate[slot, F_SELL] += q
            istate[slot, I_COUNT] += 1
            istate[slot, I_SOURCE] = source
            if st == EMITTED:
                state[slot] = DIRTY
    latest_trade_us[source] = wm
    return n_out


@numba.njit(cache=True, nogil=True)
def close_due(
    n_rows: int,
    watermarks: NDArray[np.int64],
    grace_us: int,
    intervals_us: NDArray[np.int64],
    ring_offsets: NDArray[np.int64],
    ring_sizes: NDArray[np.int64],
    slots_per_instrument: int,
    fstate: NDArray[np.float64],
    istate: NDArray[np.int64],
    state: NDArray[np.int8],
    out_slot: NDArray[np.int64],
    out_f: NDArray[np.float64],
    out_i: NDArray[np.int64],
    n_out: int,
) -> int:
    """Emit open windows whose end plus grace the watermark has passed, and every due revision."""
    for i in range(n_rows):
        base = i * slots_per_instrument
        for k in range(intervals_us.shape[0]):
            length = intervals_us[k]
            first = base + ring_offsets[k]
            for slot in range(first, first + ring_sizes[k]):
                st = state[slot]
                if st == DIRTY or (
                    st == OPEN
                    and istate[slot, I_START] + length + grace_us
                    <= watermarks[istate[slot, I_SOURCE]]
                ):
                    n_out = _emit(slot, fstate, istate, state, out_slot, out_f, out_i, n_out)
    return n_out


@numba.njit(cache=True, nogil=True)
def number_bars(
    out_slot: NDArray[np.int64],
    n_out: int,
    slots_per_instrument: int,
    slot_interval: NDArray[np.int64],
    row_instrument: NDArray[np.int64],
    channel_seq: NDArray[np.int64],
    instrument: NDArray[np.int64],
    interval: NDArray[np.int64],
    seq: NDArray[np.int64],
) -> None:
    """Give each emitted bar its instrument, interval and next seq in its channel.

    A channel is (instrument, interval): rows of several sources for one instrument share it.
    """
    for b in range(n_out):
        r = out_slot[b] // slots_per_instrument
        i = row_instrument[r]
        k = slot_interval[out_slot[b] % slots_per_instrument]
        channel_seq[i, k] += 1
        instrument[b] = i
        interval[b] = k
        seq[b] = channel_seq[i, k]
