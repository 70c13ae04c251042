"""What each record read from Kafka becomes in the hub: channel updates with their seq and JSON.

A bar carries the seq its channel's worker gave it. Trades and quotes carry none, so their seq
comes from where they are on Kafka: row r (from 0) of the batch at offset o of its partition has
seq `o * ROWS_PER_MESSAGE + r + 1`. Every replica derives the same seq for the same trade,
they grow with every trade of a channel (all of an instrument's trades are in one partition),
and unlike a bar channel's they have gaps (the other instruments' rows), so a log also knows
from where it holds everything: the seq where the source started reading the partition.
Seqs stay below 2**53 (exact in JavaScript) up to offset 9e9 of a partition.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import orjson
from numpy.typing import NDArray

from gateways.ws import protocol
from gateways.ws.buffer import Entry, Update
from shared.models import Arbitrage, ArbitrageLeg, Bar, QuoteBatch, TradeBatch
from shared.settings import BACKFILL_SOURCE_PREFIX
from shared.times import rfc3339

ROWS_PER_MESSAGE: Final = 1_000_000

_TRADE_EVENT: Final = b'{"type":"trade","channel":%s,"seq":%d,"trade":%s}'
_QUOTE_EVENT: Final = b'{"type":"quote","channel":%s,"seq":%d,"quote":%s}'
_ARB_EVENT: Final = b'{"type":"arbitrage","channel":%s,"seq":%d,"arbitrage":%s}'


class TooManyRowsError(ValueError):
    """A batch with more rows than a message's share of the seq space."""


def first_seq(offset: int) -> int:
    """The seq of row 0 of the batch at `offset`; the source starting there holds every
    message after `first_seq(offset) - 1`."""
    return offset * ROWS_PER_MESSAGE + 1


def bar_update(bar: Bar) -> Update:
    channel = protocol.Channel.bars(bar.interval, bar.instrument)
    body = protocol.bar_json(bar)
    event = protocol.bar_event(channel.name, bar.seq, bar.revision, body)
    return Update(
        channel, Entry(bar.seq, bar.ts_us, bar.revision, body, event), bar.ts_recv_us, bar.seq - 1
    )


def _iso(ts_us: NDArray[np.int64]) -> list[str]:
    """RFC 3339 UTC times to the microsecond, for the whole column at once."""
    return [f"{t}Z" for t in np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us")]


def _updates(
    kind: str,
    template: bytes,
    batch: TradeBatch | QuoteBatch,
    values: dict[str, list[object]],
    offset: int,
    held_after: int,
) -> list[Update]:
    """One update per row, its JSON the row's common fields with `values` (the kind's own)."""
    n = len(batch)
    if n > ROWS_PER_MESSAGE:
        raise TooManyRowsError(
            f"a batch of {n} rows: the gateway numbers at most {ROWS_PER_MESSAGE}"
        )
    names = batch.instruments
    columns: dict[str, list[object]] = {
        "ts": list(_iso(batch.ts_event_us)),
        "instrument": [names[i] for i in batch.instrument_index.tolist()],
        **values,
        "ts_event_us": batch.ts_event_us.tolist(),
        "ts_recv_us": batch.ts_recv_us.tolist(),
        "source": [batch.source] * n,
        "provider": [batch.provider or batch.source] * n,
    }
    keys = list(columns)
    rows = zip(*columns.values(), strict=True)
    bodies = [protocol.held_json(dict(zip(keys, row, strict=True))) for row in rows]
    channels = [protocol.Channel(kind, name) for name in names]
    quoted = [orjson.dumps(channel.name) for channel in channels]
    seq0 = first_seq(offset)
    updates = []
    for row, (i, recv_us, body) in enumerate(
        zip(batch.instrument_index.tolist(), batch.ts_recv_us.tolist(), bodies, strict=True)
    ):
        seq = seq0 + row
        entry = Entry(seq, seq, 0, body, template % (quoted[i], seq, body))
        updates.append(Update(channels[i], entry, recv_us, held_after))
    return updates


def trade_updates(batch: TradeBatch, offset: int, held_after: int) -> list[Update]:
    """The trades of the batch at `offset`, one update each, on `trades.<instrument>`; none
    for a backfill's, which are history filling a gap in the bars, not live trades."""
    if batch.source.startswith(BACKFILL_SOURCE_PREFIX):
        return []
    n = len(batch)
    values: dict[str, list[object]] = {
        "price": batch.price.tolist(),
        "size": batch.size.tolist(),
        "side": batch.side.tolist() if batch.side is not None else [None] * n,
        "trade_id": list(batch.trade_id) if batch.trade_id is not None else [None] * n,
    }
    return _updates(protocol.TRADES, _TRADE_EVENT, batch, values, offset, held_after)


def quote_updates(batch: QuoteBatch, offset: int, held_after: int) -> list[Update]:
    """The quotes of the batch at `offset`, one update each, on `quotes.<instrument>`."""
    values: dict[str, list[object]] = {
        "bid_price": batch.bid_price.tolist(),
        "bid_size": batch.bid_size.tolist(),
        "ask_price": batch.ask_price.tolist(),
        "ask_size": batch.ask_size.tolist(),
    }
    return _updates(protocol.QUOTES, _QUOTE_EVENT, batch, values, offset, held_after)


def _leg_json(leg: ArbitrageLeg) -> dict[str, object]:
    return {
        "venue": leg.venue,
        "market_id": leg.market_id,
        "outcome": leg.outcome,
        "price": leg.price,
        "size": leg.size,
        "fee": leg.fee,
    }


def arbitrage_update(arb: Arbitrage, offset: int, held_after: int) -> Update:
    """An opportunity's opening, change or closing (the message at `offset`) on `arb.<pair>`."""
    channel = protocol.Channel(protocol.ARB, arb.pair)
    seq = first_seq(offset)
    body = protocol.held_json(
        {
            "pair": arb.pair,
            "direction": str(arb.direction),
            "yes_leg": _leg_json(arb.yes_leg),
            "no_leg": _leg_json(arb.no_leg),
            "contracts": arb.contracts,
            "cost": arb.cost,
            "edge": arb.edge,
            "open": arb.closed_at_us is None,
            "opened_at": rfc3339(arb.opened_at_us),
            "closed_at": None if arb.closed_at_us is None else rfc3339(arb.closed_at_us),
            "lifetime_s": arb.lifetime_s,
            "observed_at": rfc3339(arb.observed_at_us),
            "ts_recv_us": arb.ts_recv_us,
        }
    )
    event = _ARB_EVENT % (orjson.dumps(channel.name), seq, body)
    return Update(channel, Entry(seq, seq, 0, body, event), arb.ts_recv_us, held_after)
