"""The gateway's wire protocol: channel names, client requests, and server frames (JSON, orjson).

Channels are `bars.<interval>.<instrument>` (the instrument may contain dots),
`trades.<instrument>`, `quotes.<instrument>` and `arb.<pair>` (a matched pair of prediction
markets), and each with `*` for every one (`bars.<interval>.*`, `trades.*`, `quotes.*`,
`arb.*`). Every server message is a JSON array of one or more events, so a busy
connection gets many events per WebSocket frame.

A client that connects to `/ws/<instrument>` (the runbook's `wscat -c ws://host:8765/ws/AAPL`)
is subscribed by its path to `bars.1m.<instrument>` with the last PATH_SNAPSHOT bars;
`?interval=5m`, `?snapshot=N` and `?resume=<last seq received>` change that.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from shared.bar_fields import BAR_ATTRIBUTES
from shared.intervals import parse_interval
from shared.models import Bar
from shared.symbols import symbol_problem

WILDCARD: Final = "*"
MAX_CHANNELS_PER_REQUEST: Final = 1000
BARS: Final = "bars"
TRADES: Final = "trades"
QUOTES: Final = "quotes"
ARB: Final = "arb"
MAX_PAIR_LENGTH: Final = 200  # kalshi:<ticker>|polymarket:<id>
PATH_PREFIX: Final = "/ws/"
PATH_SNAPSHOT: Final = 120  # bars a path subscription starts with
# What one message of each kind is called in events: {"type": "trade", ..., "trade": {...}}.
ITEM: Final = {BARS: "bar", TRADES: "trade", QUOTES: "quote", ARB: "arbitrage"}


class ProtocolError(ValueError):
    """A client request we cannot act on; the message is sent back to the client."""


@dataclass(frozen=True, slots=True)
class Channel:
    kind: str  # BARS, TRADES or QUOTES
    instrument: str  # or WILDCARD
    interval: str = ""  # bars only

    @classmethod
    def bars(cls, interval: str, instrument: str) -> Channel:
        return cls(BARS, instrument, interval)

    @property
    def stream(self) -> str:
        """What the channel is of, without the instrument: `bars.1m`, `trades`, `quotes`.
        A wildcard subscription is to a stream."""
        return f"{BARS}.{self.interval}" if self.kind == BARS else self.kind

    @property
    def name(self) -> str:
        return f"{self.stream}.{self.instrument}"

    @property
    def is_wildcard(self) -> bool:
        return self.instrument == WILDCARD


def parse_channel(name: object) -> Channel:
    """Parse `bars.<interval>.<instrument|*>`, `trades.<instrument|*>` or
    `quotes.<instrument|*>`; raise ProtocolError saying what is wrong."""
    if not isinstance(name, str):
        raise ProtocolError(f"channel {name!r} is not a string")
    kind, _, rest = name.partition(".")
    interval = ""
    if kind == BARS:
        interval, _, instrument = rest.partition(".")
        if not interval or not instrument:
            raise ProtocolError(
                f"channel {name!r} is not bars.<interval>.<instrument> or bars.<interval>.*"
            )
        try:
            parse_interval(interval)
        except ValueError as exc:
            raise ProtocolError(f"channel {name!r}: {exc}") from None
    elif kind in (TRADES, QUOTES) and rest:
        instrument = rest
    elif kind == ARB and rest:
        if len(rest) > MAX_PAIR_LENGTH or any(c.isspace() for c in rest):
            raise ProtocolError(f"channel {name!r}: not a pair such as kalshi:X|polymarket:Y")
        return Channel(kind, rest)
    else:
        raise ProtocolError(
            f"channel {name!r} is not bars.<interval>.<instrument>, trades.<instrument>,"
            " quotes.<instrument> or arb.<pair> (or one of them with * for every one)"
        )
    if instrument != WILDCARD and (problem := symbol_problem(instrument)):
        raise ProtocolError(f"channel {name!r}: {problem}")
    return Channel(kind, instrument, interval)


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed client request."""

    op: Literal["subscribe", "unsubscribe", "ping"]
    channels: tuple[Channel, ...] = ()
    snapshot: int | None = None
    resume: dict[str, int] = field(default_factory=dict)


def parse_request(raw: str | bytes, max_snapshot: int) -> Request:
    """Parse one client message; raise ProtocolError for anything malformed."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("a request is a JSON object with an 'op'")
    op = body.get("op")
    if op == "ping":
        return Request("ping")
    if op not in ("subscribe", "unsubscribe"):
        raise ProtocolError(f"unknown op {op!r}; use subscribe, unsubscribe or ping")
    names = body.get("channels")
    if not isinstance(names, list) or not names or len(names) > MAX_CHANNELS_PER_REQUEST:
        raise ProtocolError(
            f"'channels' must be a list of 1 to {MAX_CHANNELS_PER_REQUEST} channel names"
        )
    channels = tuple(parse_channel(n) for n in names)
    snapshot = body.get("snapshot")
    if snapshot is not None and (
        isinstance(snapshot, bool)
        or not isinstance(snapshot, int)
        or not 0 <= snapshot <= max_snapshot
    ):
        raise ProtocolError(f"'snapshot' must be an integer from 0 to {max_snapshot}")
    resume = body.get("resume", {})
    if not isinstance(resume, dict) or not all(
        isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 for seq in resume.values()
    ):
        raise ProtocolError("'resume' maps channel names to the last seq received (integers >= 0)")
    for name in resume:
        parse_channel(name)
    return Request(op, channels, snapshot, dict(resume))


_bar_values: Final = operator.attrgetter(*BAR_ATTRIBUTES)


def held_json(value: object) -> bytes:
    """`value` as JSON, to be held in the replay buffer: a copy of orjson's result, which keeps
    its whole output buffer allocated (about 4 KB, many times a bar's or a trade's JSON)."""
    return memoryview(orjson.dumps(value)).tobytes()


def bar_json(bar: Bar) -> bytes:
    """Encode a bar as the JSON object clients receive: its attributes (times in microseconds),
    and its window start `ts` in ISO-8601 too."""
    ts = datetime.fromtimestamp(bar.ts_us // 1_000_000, UTC).replace(
        microsecond=bar.ts_us % 1_000_000
    )
    fields = dict(zip(BAR_ATTRIBUTES, _bar_values(bar), strict=True))
    return held_json({"ts": ts.isoformat().replace("+00:00", "Z"), **fields})


def bar_event(channel: str, seq: int, revision: int, bar: bytes) -> bytes:
    return b'{"type":"bar","channel":%s,"seq":%d,"revision":%d,"bar":%s}' % (
        orjson.dumps(channel),
        seq,
        revision,
        bar,
    )


def snapshot_event(channel: Channel, seq: int, items: list[bytes]) -> bytes:
    """The channel's latest messages: `bars`, `trades` or `quotes`, after its kind."""
    return b'{"type":"snapshot","channel":%s,"seq":%d,"%s":[%s]}' % (
        orjson.dumps(channel.name),
        seq,
        channel.kind.encode(),
        b",".join(items),
    )


def event(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


def frame(events: list[bytes]) -> bytes:
    """Join events into one server message: a JSON array."""
    return b"[" + b",".join(events) + b"]"


def path_request(path: str, max_snapshot: int) -> Request | None:
    """The subscription a connection's path asks for (`/ws/AAPL?interval=1m&resume=41`), or
    None for any other path; raise ProtocolError for a malformed one."""
    parts = urlsplit(path)
    if not parts.path.startswith(PATH_PREFIX):
        return None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    channel = parse_channel(f"{BARS}.{query.get('interval', '1m')}.{unquote(parts.path[4:])}")
    if channel.is_wildcard:
        raise ProtocolError("a path subscription names one instrument: /ws/AAPL")
    numbers = {}
    for name, most in (("snapshot", max_snapshot), ("resume", 2**63 - 1)):
        if name in query:
            if not query[name].isdigit() or not 0 <= int(query[name]) <= most:
                raise ProtocolError(f"'{name}' must be an integer from 0 to {most}")
            numbers[name] = int(query[name])
    snapshot = numbers.get("snapshot", min(PATH_SNAPSHOT, max_snapshot))
    resume = {channel.name: numbers["resume"]} if "resume" in numbers else {}
    return Request("subscribe", (channel,), snapshot, resume)
