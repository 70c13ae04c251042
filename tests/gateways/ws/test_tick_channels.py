"""`trades.<symbol>` and `quotes.<symbol>` channels: seqs from Kafka positions, snapshots of the
latest messages, resume within the buffer and across a gateway restart, and a resume the buffer
cannot serve. The hub part needs no broker; the rest runs the gateway process on a real one."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from test_gateway import events, subscribe
from test_gateway import start_gateway as start_gateway  # a fixture
from test_hub_fanout import joined, make_hub, received

from gateways.ws.protocol import ProtocolError, parse_channel
from gateways.ws.updates import ROWS_PER_MESSAGE, first_seq, quote_updates, trade_updates
from shared.codec import Codec
from shared.models import (
    Arbitrage,
    ArbitrageDirection,
    ArbitrageLeg,
    QuoteBatch,
    Side,
    Trade,
    TradeBatch,
)
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import ARBITRAGE, QUOTES, TRADES

T0 = 1_767_623_400_000_000  # 2026-01-05 14:30 UTC


def trades(instrument: str, n: int, first: int = 0) -> TradeBatch:
    """n trades of one instrument, a second apart from trade `first` on, prices around 187."""
    return TradeBatch.from_trades(
        "alpaca",
        [
            Trade(instrument, T0 + i * 1_000_000, 187.25 + i / 100, 100.0 + i, Side.BUY, f"t{i}")
            for i in range(first, first + n)
        ],
        ts_recv_us=time.time_ns() // 1000,
    )


def quotes(instrument: str, n: int) -> QuoteBatch:
    now_us = time.time_ns() // 1000
    i = np.arange(n)
    return QuoteBatch(
        "alpaca",
        (instrument,),
        np.zeros(n, dtype=np.int32),
        (T0 + i * 500_000).astype(np.int64),
        np.full(n, now_us, dtype=np.int64),
        np.round(187.20 + i / 100, 2),
        np.full(n, 300.0),
        np.round(187.30 + i / 100, 2),
        np.full(n, 200.0),
        provider="alpaca",
    )


def test_trade_updates_number_rows_from_the_kafka_offset_and_carry_the_trade_json() -> None:
    batch = TradeBatch.from_trades(
        "failover",
        [
            Trade("AAPL", T0, 187.25, 100.0, Side.BUY, "a1"),
            Trade("MSFT", T0 + 10, 411.5, 5.0, Side.SELL, "m1"),
            Trade("AAPL", T0 + 20, 187.26, 50.0),
        ],
        ts_recv_us=T0 + 2_000,
    )
    batch = dataclasses.replace(batch, provider="finnhub")

    updates = trade_updates(batch, offset=3420, held_after=first_seq(3000) - 1)

    assert [u.channel.name for u in updates] == ["trades.AAPL", "trades.MSFT", "trades.AAPL"]
    assert [u.entry.seq for u in updates] == [3420 * ROWS_PER_MESSAGE + r + 1 for r in range(3)]
    assert {u.held_after for u in updates} == {3000 * ROWS_PER_MESSAGE}
    first = orjson.loads(updates[0].entry.body)
    assert first == {
        "ts": "2026-01-05T14:30:00.000000Z",
        "instrument": "AAPL",
        "price": 187.25,
        "size": 100.0,
        "side": 1,
        "trade_id": "a1",
        "ts_event_us": T0,
        "ts_recv_us": T0 + 2_000,
        "source": "failover",
        "provider": "finnhub",
    }
    assert orjson.loads(updates[1].entry.event) == {
        "type": "trade",
        "channel": "trades.MSFT",
        "seq": 3420 * ROWS_PER_MESSAGE + 2,
        "trade": orjson.loads(updates[1].entry.body),
    }


def test_quote_updates_carry_both_sides_of_the_book() -> None:
    (update,) = quote_updates(quotes("AAPL", 1), offset=7, held_after=0)

    assert update.channel.name == "quotes.AAPL"
    assert orjson.loads(update.entry.event)["quote"] | {"ts_recv_us": 0} == {
        "ts": "2026-01-05T14:30:00.000000Z",
        "instrument": "AAPL",
        "bid_price": 187.2,
        "bid_size": 300.0,
        "ask_price": 187.3,
        "ask_size": 200.0,
        "ts_event_us": T0,
        "ts_recv_us": 0,
        "source": "alpaca",
        "provider": "alpaca",
    }


def test_hub_trade_channel_resumes_across_gaps_in_its_seqs_and_refuses_what_it_never_held() -> None:
    hub = make_hub()
    held_after = first_seq(40) - 1  # the source started reading the partition at offset 40
    for offset in range(40, 50):  # AAPL's and MSFT's trades share the partition's messages
        batch = TradeBatch.from_trades(
            "alpaca",
            [Trade("MSFT", T0 + offset, 411.0, 1.0), Trade("AAPL", T0 + offset, 187.0, 1.0)],
            ts_recv_us=T0,
        )
        hub.publish(trade_updates(batch, offset, held_after))
    aapl = [first_seq(offset) + 1 for offset in range(40, 50)]  # row 1 of every message

    resumed = joined(
        hub, {"op": "subscribe", "channels": ["trades.AAPL"], "resume": {"trades.AAPL": aapl[6]}}
    )
    before = joined(
        hub, {"op": "subscribe", "channels": ["trades.AAPL"], "resume": {"trades.AAPL": 5}}
    )
    ahead = joined(
        hub,
        {"op": "subscribe", "channels": ["trades.AAPL"], "resume": {"trades.AAPL": aapl[-1] + 9}},
    )
    fresh = joined(hub, {"op": "subscribe", "channels": ["trades.AAPL"], "snapshot": 3})

    got = received(hub, resumed)
    assert got[0] == {
        "type": "subscribed",
        "channel": "trades.AAPL",
        "seq": aapl[6],
        "recovered": True,
    }
    assert [e["seq"] for e in got[1:]] == aapl[7:]
    for session in (before, ahead):  # not held, or from a topic that is gone: start afresh
        subscribed, snapshot = received(hub, session)
        assert subscribed["recovered"] is False and subscribed["seq"] == aapl[-1]
        assert [t["ts_event_us"] for t in snapshot["trades"]][-1] == T0 + 49
    subscribed, snapshot = received(hub, fresh)
    assert [t["ts_event_us"] for t in snapshot["trades"]] == [T0 + 47, T0 + 48, T0 + 49]
    assert snapshot["seq"] == aapl[-1]


def test_hub_trade_channel_whose_topic_was_recreated_starts_afresh_for_its_subscribers() -> None:
    hub = make_hub()
    for offset in (3420, 3421):
        hub.publish(trade_updates(trades("AAPL", 2, offset), offset, first_seq(3420) - 1))
    session = joined(hub, {"op": "subscribe", "channels": ["trades.*"], "snapshot": 0})
    received(hub, session)

    hub.publish(trade_updates(trades("AAPL", 1, 9000), 0, 0))  # a new topic: offsets from 0

    assert received(hub, session) == [
        {"type": "subscribed", "channel": "trades.AAPL", "seq": 0, "recovered": False},
        {"type": "snapshot", "channel": "trades.AAPL", "seq": 0, "trades": []},
        {
            "type": "trade",
            "channel": "trades.AAPL",
            "seq": 1,
            "trade": orjson.loads(hub.buffer.channels["trades.AAPL"].entries[0].body),
        },
    ]
    assert hub.buffer.messages == 1 and len(hub.buffer.channels["trades.AAPL"].entries) == 1


def publish(bootstrap: str, codec: Codec, topic: str, batch: TradeBatch | QuoteBatch) -> None:
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    instrument = batch.instruments[0]
    value = (
        codec.encode_trade_batch(batch)
        if isinstance(batch, TradeBatch)
        else codec.encode_quote_batch(batch)
    )
    publisher.produce(topic, value, key=instrument.encode(), partition=partition_for(instrument, 3))
    publisher.flush()


def seqs(got: list[dict], kind: str) -> list[int]:  # type: ignore[type-arg]
    return [e["seq"] for e in got if e["type"] == kind]


async def test_gateway_trades_snapshot_live_and_resume_across_a_gateway_restart(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    for first in range(0, 30, 10):
        publish(bootstrap, codec, TRADES, trades("AAPL", 10, first))
    publish(bootstrap, codec, TRADES, trades("MSFT", 5))
    url = start_gateway()

    ws = await subscribe(url, {"op": "subscribe", "channels": ["trades.AAPL"], "snapshot": 4})
    subscribed, snapshot = await events(ws, lambda g: len(g) >= 2)
    assert [t["trade_id"] for t in snapshot["trades"]] == ["t26", "t27", "t28", "t29"]
    assert subscribed["seq"] == snapshot["seq"] > 0
    publish(bootstrap, codec, TRADES, trades("AAPL", 3, 30))
    live = await events(ws, lambda g: len(g) >= 3)
    assert [e["trade"]["trade_id"] for e in live] == ["t30", "t31", "t32"]
    assert live[0]["seq"] > snapshot["seq"] and seqs(live, "trade") == sorted(seqs(live, "trade"))
    await ws.close()

    publish(bootstrap, codec, TRADES, trades("AAPL", 4, 33))  # missed while away
    url = start_gateway()  # another replica (or the same after a restart): the same seqs
    ws = await subscribe(
        url,
        {
            "op": "subscribe",
            "channels": ["trades.AAPL"],
            "resume": {"trades.AAPL": live[-1]["seq"]},
        },
    )
    got = await events(ws, lambda g: len(g) >= 5)
    assert got[0]["recovered"] is True
    assert [e["trade"]["trade_id"] for e in got[1:]] == ["t33", "t34", "t35", "t36"]
    await ws.close()


async def test_gateway_quotes_and_wildcard_trades_channels(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    publish(bootstrap, codec, QUOTES, quotes("AAPL", 6))
    publish(bootstrap, codec, TRADES, trades("AAPL", 2))
    publish(bootstrap, codec, TRADES, trades("MSFT", 2))
    url = start_gateway()

    ws = await subscribe(
        url, {"op": "subscribe", "channels": ["quotes.AAPL", "trades.*"], "snapshot": 2}
    )
    got = await events(ws, lambda g: len(g) >= 6)
    snapshots = {e["channel"]: e for e in got if e["type"] == "snapshot"}
    assert [q["bid_price"] for q in snapshots["quotes.AAPL"]["quotes"]] == [187.24, 187.25]
    assert {name: len(s["trades"]) for name, s in snapshots.items() if name != "quotes.AAPL"} == {
        "trades.AAPL": 2,
        "trades.MSFT": 2,
    }
    await ws.close()


def arbitrage(pair: str, edge: float, closed_at_us: int | None = None) -> Arbitrage:
    opened_us = time.time_ns() // 1000 - 30_000_000
    return Arbitrage(
        pair=pair,
        direction=ArbitrageDirection.YES_A_NO_B,
        yes_leg=ArbitrageLeg(
            venue="kalshi",
            market_id=pair.split("|")[0][7:],
            outcome="Yes",
            price=0.41,
            size=120.0,
            fee=0.02,
        ),
        no_leg=ArbitrageLeg(
            venue="polymarket",
            market_id=pair.split("|")[1][11:],
            outcome="No",
            price=0.53,
            size=None,
            fee=0.0,
        ),
        contracts=120.0,
        cost=0.94 + 0.02 / 120,
        edge=edge,
        opened_at_us=opened_us,
        closed_at_us=closed_at_us,
        observed_at_us=closed_at_us or opened_us,
        ts_recv_us=opened_us + 1_000,
    )


def test_arb_channel_names_take_a_pair_and_refuse_spaces() -> None:
    channel = parse_channel("arb.kalshi:KXCPIYOY-26APR-T3.2|polymarket:500051")

    assert (channel.kind, channel.instrument, channel.is_wildcard) == (
        "arb",
        "kalshi:KXCPIYOY-26APR-T3.2|polymarket:500051",
        False,
    )
    assert parse_channel("arb.*").is_wildcard
    with pytest.raises(ProtocolError):
        parse_channel("arb.kalshi:A |polymarket:B")


async def test_gateway_arb_channels_snapshot_and_the_close_live(
    bootstrap: str, codec: Codec, start_gateway: Callable[..., str]
) -> None:
    pair = "kalshi:KXETHMAX-26JAN13-3800|polymarket:500246"
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(ARBITRAGE, codec.encode_arbitrage(arbitrage(pair, 0.0647)), key=b"k")
    publisher.flush()
    url = start_gateway()

    ws = await subscribe(url, {"op": "subscribe", "channels": ["arb.*"], "snapshot": 5})
    subscribed, snapshot = await events(ws, lambda g: len(g) >= 2)
    assert subscribed["channel"] == f"arb.{pair}"
    (opened,) = snapshot["arb"]
    assert (opened["edge"], opened["open"], opened["yes_leg"]["price"]) == (0.0647, True, 0.41)

    closed_us = time.time_ns() // 1000
    publisher.produce(
        ARBITRAGE, codec.encode_arbitrage(arbitrage(pair, 0.004, closed_us)), key=b"k"
    )
    publisher.flush()
    (live,) = await events(ws, lambda g: len(g) >= 1)
    assert live["type"] == "arbitrage" and live["seq"] > snapshot["seq"]
    assert live["arbitrage"]["open"] is False and 29 < live["arbitrage"]["lifetime_s"] < 60
    await ws.close()
