"""The hub's shared log: what each client is to get, built once for clients in the same state,
with the seam of a new subscription exact and the slow-client policy where writes wait. No
broker and no sockets: the hub is pure, and the server's frame encoding is checked on its own."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from test_replay_buffer import make_bar as make_window_bar

from gateways.ws import protocol
from gateways.ws.buffer import ReplayBuffer, Update
from gateways.ws.hub import MAX_MESSAGE_EVENTS, Hub, Session, Shared
from gateways.ws.server import text_frame
from gateways.ws.updates import bar_update
from shared.models import Bar


def make_bar(instrument: str, seq: int) -> Bar:
    """The bar of window `seq`, first revision, with channel seq `seq`."""
    return make_window_bar(instrument, seq, window=seq)


def updates(*bars: Bar) -> list[Update]:
    return [bar_update(bar) for bar in bars]


def make_hub(queue_max: int = 100_000, policy: Literal["resync", "disconnect"] = "resync") -> Hub:
    return Hub(ReplayBuffer(1024, 64 * 1024**2), 120, 1, policy, 3, queue_max, 5.0)


def request(message: dict[str, object]) -> protocol.Request:
    return protocol.parse_request(orjson.dumps(message), 1000)


def joined(hub: Hub, message: dict[str, object]) -> Session:
    session = Session(object())
    hub.add(session)
    session.enqueue(hub.subscribe(session, request(message)))
    return session


def received(hub: Hub, session: Session) -> list[Any]:
    """Every event the session gets now, in order, from the messages written to it."""
    out = hub.outgoing(session, {})
    return [] if out is None else list(orjson.loads(out.data))


def bar_seqs(events: list[Any]) -> list[tuple[str, int]]:
    return [(e["channel"], e["seq"]) for e in events if e["type"] == "bar"]


def test_hub_clients_in_the_same_state_share_one_built_message() -> None:
    hub = make_hub()
    first, second = (joined(hub, {"op": "subscribe", "channels": ["bars.1s.*"]}) for _ in "ab")
    received(hub, first), received(hub, second)  # the subscription replies, theirs alone
    hub.publish(updates(make_bar("AAPL", 1), make_bar("MSFT", 1)))

    shared: Shared = {}
    one, other = hub.outgoing(first, shared), hub.outgoing(second, shared)

    assert one is not None and one is other
    assert one.events == 2 and one.oldest_us > 0
    assert bar_seqs(orjson.loads(one.data)) == [("bars.1s.AAPL", 1), ("bars.1s.MSFT", 1)]
    assert hub.outgoing(first, shared) is None, "taken once"


def test_hub_subscribing_while_bars_wait_keeps_the_seam_exact() -> None:
    hub = make_hub()
    joined(hub, {"op": "subscribe", "channels": ["bars.1s.AAPL"]})  # AAPL bars get logged
    session = joined(hub, {"op": "subscribe", "channels": ["bars.1s.MSFT"], "snapshot": 0})
    hub.publish(updates(make_bar("AAPL", 1), make_bar("MSFT", 1)))  # not yet written to the client

    session.enqueue(
        hub.subscribe(session, request({"op": "subscribe", "channels": ["bars.1s.AAPL"]}))
    )
    hub.publish(updates(make_bar("AAPL", 2)))
    got = received(hub, session)

    snapshot = next(e for e in got if e["type"] == "snapshot" and e["channel"] == "bars.1s.AAPL")
    assert [b["seq"] for b in snapshot["bars"]] == [1]
    assert bar_seqs(got) == [("bars.1s.MSFT", 1), ("bars.1s.AAPL", 2)], (
        "AAPL 1 came in the snapshot, not again as a live bar"
    )


def test_hub_unsubscribing_still_sends_what_was_published_before() -> None:
    hub = make_hub()
    session = joined(hub, {"op": "subscribe", "channels": ["bars.1s.AAPL"], "snapshot": 0})
    received(hub, session)
    hub.publish(updates(make_bar("AAPL", 1)))

    hub.unsubscribe(session, [protocol.parse_channel("bars.1s.AAPL")])
    hub.publish(updates(make_bar("AAPL", 2)))

    assert bar_seqs(received(hub, session)) == [("bars.1s.AAPL", 1)]


def test_hub_resume_beyond_the_buffer_skips_what_the_client_has() -> None:
    hub = make_hub()
    hub.publish(updates(make_bar("AAPL", 1), make_bar("AAPL", 2)))
    session = joined(
        hub, {"op": "subscribe", "channels": ["bars.1s.AAPL"], "resume": {"bars.1s.AAPL": 4}}
    )
    received(hub, session)

    hub.publish(updates(*[make_bar("AAPL", seq) for seq in (3, 4, 5, 6)]))

    assert bar_seqs(received(hub, session)) == [("bars.1s.AAPL", 5), ("bars.1s.AAPL", 6)]


def test_hub_client_held_back_past_queue_max_is_resynced() -> None:
    hub = make_hub(queue_max=5)
    session = joined(hub, {"op": "subscribe", "channels": ["bars.1s.*"], "snapshot": 0})
    received(hub, session)

    for seq in range(1, 4):  # the server cannot write to it: each turn holds what it gets
        hub.publish(updates(make_bar("AAPL", seq), make_bar("MSFT", seq)))
        hub.hold(session)
    got = received(hub, session)

    assert got[0] == {"type": "lagging", "dropped": 6, "action": "resync"}
    assert {e["type"] for e in got[1:]} == {"subscribed", "snapshot"}
    assert bar_seqs(got) == []


def test_hub_client_held_back_under_the_disconnect_policy_is_closed() -> None:
    hub = make_hub(queue_max=1, policy="disconnect")
    session = joined(hub, {"op": "subscribe", "channels": ["bars.1s.*"], "snapshot": 0})
    received(hub, session)
    hub.publish(updates(make_bar("AAPL", 1), make_bar("MSFT", 1)))

    hub.hold(session)

    assert session.closing and hub.to_close == [session] and not session.queue


def test_hub_trim_drops_deliveries_every_client_has_taken() -> None:
    hub = make_hub()
    first, second = (joined(hub, {"op": "subscribe", "channels": ["bars.1s.*"]}) for _ in "ab")
    hub.publish(updates(make_bar("AAPL", 1)))
    hub.publish(updates(make_bar("AAPL", 2)))
    received(hub, first)

    hub.trim()
    held = len(hub.log)
    received(hub, second)
    hub.trim()

    assert held == 2 and hub.log == [] and hub.log_start == 2
    hub.publish(updates(make_bar("AAPL", 3)))
    assert bar_seqs(received(hub, second)) == [("bars.1s.AAPL", 3)]


def test_hub_outgoing_splits_a_backlog_into_messages_of_bounded_size() -> None:
    hub = make_hub()
    session = joined(hub, {"op": "subscribe", "channels": ["bars.1s.*"], "snapshot": 0})
    received(hub, session)
    for seq in range(1, 4):
        hub.publish(updates(*[make_bar(f"S{i}", seq) for i in range(MAX_MESSAGE_EVENTS // 2 + 1)]))
    hub.hold(session)  # the three deliveries wait in its queue

    out = hub.outgoing(session, {})

    assert out is not None and out.events == 3 * (MAX_MESSAGE_EVENTS // 2 + 1)
    messages, rest = [], out.data
    while rest:  # the hub's default encoding writes each message as it is: one JSON array
        end = rest.index(b"][") + 1 if b"][" in rest else len(rest)
        messages.append(orjson.loads(rest[:end]))
        rest = rest[end:]
    assert [len(m) for m in messages] == [MAX_MESSAGE_EVENTS // 2 + 1] * 3


def test_text_frame_is_an_unmasked_final_text_frame_at_every_length_encoding() -> None:
    for size in (0, 125, 126, 65_535, 65_536):
        message = b"x" * size

        frame = text_frame(message)

        code = frame[1] & 0x7F
        head, length = {
            126: (4, int.from_bytes(frame[2:4], "big")),
            127: (10, int.from_bytes(frame[2:10], "big")),
        }.get(code, (2, code))
        assert frame[0] == 0x81, "FIN and opcode text"
        assert frame[1] & 0x80 == 0, "server frames are not masked"
        assert (length, frame[head:]) == (size, message)
