"""The numba walk of Alpaca's MessagePack trade frames: the same trades as decode_frame, and
every frame it does not take left to decode_frame (so dead letters stay as they were)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

from connectors.alpaca_frames import Frame, FrameDecoder, decode_frame
from connectors.alpaca_kernels import OK, SymbolTable, decode_trades
from shared.models import TradeBatch

RECV_US = 1_710_250_201_123_456
OPEN_S = 1_710_250_200  # 2024-03-12T13:30:00Z
TRADE_ID = 52_983_525_029_481

# MessagePack, written by hand so that each test says which encoding a value takes (msgpack's
# packer always picks the shortest).


def fixstr(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


def str8(text: str) -> bytes:
    raw = text.encode()
    return b"\xd9" + struct.pack(">B", len(raw)) + raw


def str16(text: str) -> bytes:
    raw = text.encode()
    return b"\xda" + struct.pack(">H", len(raw)) + raw


def str32(text: str) -> bytes:
    raw = text.encode()
    return b"\xdb" + struct.pack(">I", len(raw)) + raw


def fixint(value: int) -> bytes:
    assert -32 <= value <= 127
    return struct.pack(">b" if value < 0 else ">B", value)


def uint(value: int, width: int) -> bytes:
    code, fmt = {8: (0xCC, ">B"), 16: (0xCD, ">H"), 32: (0xCE, ">I"), 64: (0xCF, ">Q")}[width]
    return bytes([code]) + struct.pack(fmt, value)


def sint(value: int, width: int) -> bytes:
    code, fmt = {8: (0xD0, ">b"), 16: (0xD1, ">h"), 32: (0xD2, ">i"), 64: (0xD3, ">q")}[width]
    return bytes([code]) + struct.pack(fmt, value)


def f32(value: float) -> bytes:
    return b"\xca" + struct.pack(">f", value)


def f64(value: float) -> bytes:
    return b"\xcb" + struct.pack(">d", value)


def ts32(seconds: int) -> bytes:
    return b"\xd6\xff" + struct.pack(">I", seconds)


def ts64(seconds: int, nanoseconds: int) -> bytes:
    return b"\xd7\xff" + struct.pack(">Q", nanoseconds << 34 | seconds)


def ts96(seconds: int, nanoseconds: int) -> bytes:
    return b"\xc7\x0c\xff" + struct.pack(">Iq", nanoseconds, seconds)


def array(items: list[bytes], wide: int = 0) -> bytes:
    if wide == 16:
        header = b"\xdc" + struct.pack(">H", len(items))
    elif wide == 32:
        header = b"\xdd" + struct.pack(">I", len(items))
    else:
        assert len(items) < 16
        header = bytes([0x90 | len(items)])
    return header + b"".join(items)


def fixmap(pairs: list[tuple[bytes, bytes]], wide: int = 0) -> bytes:
    if wide == 16:
        header = b"\xde" + struct.pack(">H", len(pairs))
    elif wide == 32:
        header = b"\xdf" + struct.pack(">I", len(pairs))
    else:
        assert len(pairs) < 16
        header = bytes([0x80 | len(pairs)])
    return header + b"".join(k + v for k, v in pairs)


NIL, FALSE, TRUE = b"\xc0", b"\xc2", b"\xc3"


def trade_pairs(**fields: bytes | None) -> list[tuple[bytes, bytes]]:
    """The fields of a trade message as Alpaca's iex feed sends it; None leaves one out."""
    message = {
        "T": fixstr("t"),
        "S": fixstr("AAPL"),
        "i": uint(TRADE_ID, 64),
        "x": fixstr("V"),
        "p": f64(172.83),
        "s": fixint(100),
        "t": ts64(OPEN_S, 123_456_789),
        "c": array([fixstr("@")]),
        "z": fixstr("C"),
    }
    message |= fields
    return [(fixstr(k), v) for k, v in message.items() if v is not None]


def trade(**fields: bytes | None) -> bytes:
    """A trade message as Alpaca's iex feed sends it; a field given None is left out."""
    return fixmap(trade_pairs(**fields))


TRADE_PAIRS = trade_pairs()


def frame_of(*messages: bytes) -> bytes:
    return array(list(messages), wide=16)


def kernel_takes(payload: bytes, decoder: FrameDecoder | None = None) -> bool:
    """Whether the kernel reads `payload` (rather than leaving it to decode_frame)."""
    return (decoder or FrameDecoder()).only_trades(payload, "alpaca", RECV_US) is not None


def batch_fields(batch: TradeBatch | None) -> object:
    if batch is None:
        return None
    return (
        batch.source,
        batch.instruments,
        (batch.instrument_index.dtype, batch.instrument_index.tolist()),
        (batch.ts_event_us.dtype, batch.ts_event_us.tolist()),
        (batch.ts_recv_us.dtype, batch.ts_recv_us.tolist()),
        (batch.price.dtype, batch.price.tolist()),
        (batch.size.dtype, batch.size.tolist()),
        None if batch.side is None else (batch.side.dtype, batch.side.tolist()),
        batch.trade_id,
        batch.watermark_us,
        batch.provider,
    )


def frame_fields(frame: Frame) -> object:
    return (
        batch_fields(frame.trades),
        frame.quotes is None,
        sorted(frame.bars),
        [(c.kind, dict(c.body)) for c in frame.controls],
        [(r.reason, r.detail, r.payload) for r in frame.rejected],
        frame.unpublished,
    )


def assert_same_as_decode_frame(payload: bytes, decoder: FrameDecoder | None = None) -> Frame:
    decoded = (decoder or FrameDecoder()).decode(payload, "alpaca", RECV_US)
    assert frame_fields(decoded) == frame_fields(decode_frame(payload, "alpaca", RECV_US))
    return decoded


# Frames the kernel takes: the same trades as decode_frame.


@pytest.mark.parametrize(
    ("field", "encoded", "expected"),
    [
        ("s", fixint(1), 1.0),
        ("s", fixint(127), 127.0),
        ("s", uint(200, 8), 200.0),
        ("s", uint(40_000, 16), 40_000.0),
        ("s", uint(3_000_000_000, 32), 3e9),
        ("s", uint(2**64 - 1, 64), float(2**64 - 1)),
        ("s", uint(2**53 + 1, 64), float(2**53 + 1)),
        ("s", sint(5, 8), 5.0),
        ("s", sint(300, 16), 300.0),
        ("s", sint(70_000, 32), 70_000.0),
        ("s", sint(2**62, 64), float(2**62)),
        ("s", f32(0.5), 0.5),
        ("s", f32(0.1), float(np.float32(0.1))),
        ("s", f64(0.012), 0.012),
        ("s", f64(float("inf")), float("inf")),
        ("s", f64(5e-324), 5e-324),
        ("s", f32(1e-45), float(np.float32(1e-45))),
        ("p", fixint(3), 3.0),
        ("p", uint(1271, 16), 1271.0),
        ("p", f32(919.125), 919.125),
        ("p", f32(172.83), float(np.float32(172.83))),
        ("p", f64(172.83), 172.83),
        ("p", f64(1.7976931348623157e308), 1.7976931348623157e308),
        ("p", f64(2.2250738585072014e-308), 2.2250738585072014e-308),
        ("p", f64(1e-310), 1e-310),
    ],
)
def test_decode_trades_number_encodings_read_as_decode_frame(
    field: str, encoded: bytes, expected: float
) -> None:
    # Arrange
    payload = frame_of(trade(**{field: encoded}))

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert kernel_takes(payload)
    assert frame.trades is not None
    assert getattr(frame.trades, "price" if field == "p" else "size").tolist() == [expected]


@pytest.mark.parametrize(
    ("encoded", "expected_us"),
    [
        (ts32(OPEN_S), OPEN_S * 1_000_000),
        (ts64(OPEN_S, 999_999_999), OPEN_S * 1_000_000 + 999_999),
        (ts64(2**33, 1), 2**33 * 1_000_000),
        (ts96(OPEN_S, 1_500), OPEN_S * 1_000_000 + 1),
        (ts96(-1, 999_999_999), -1),  # before the epoch: floored, as numpy floors
        (ts96(-3, 5), -2_999_999 - 1),
        (ts96(9_223_372_035, 0), 9_223_372_035 * 1_000_000),
        (uint(1_710_250_200_123_456_789, 64), 1_710_250_200_123_456),  # an int: nanoseconds
        (fixint(7), 0),
        (sint(-1_001, 16), -2),
    ],
)
def test_decode_trades_timestamp_encodings_read_as_decode_frame(
    encoded: bytes, expected_us: int
) -> None:
    # Arrange
    payload = frame_of(trade(t=encoded))

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert kernel_takes(payload)
    assert frame.trades is not None
    assert frame.trades.ts_event_us.tolist() == [expected_us]


@pytest.mark.parametrize(
    "fields",
    [
        {"S": str8("BRK.B")},
        {"S": str16("BTC/USD")},
        {"S": str32("KXHIGHNY-24DEC01-B45")},
        {"S": str8("X" * 64)},
        {"i": None},
        {"i": NIL},
        {"i": fixint(0)},
        {"i": sint(-42, 8)},
        {"i": sint(-(2**63) + 1, 64)},
        {"i": uint(2**63 - 1, 64)},
        {"c": array([fixstr("@"), fixstr("I")])},
        {"c": array([], wide=32)},
        {"c": array([str8("@"), str16("F"), array([fixstr("T")])], wide=16)},
        {"c": NIL},
        {"x": None, "z": None, "c": None},
        {"x": str16("V"), "z": TRUE},
        {"tks": fixstr("B")},
        {"tks": fixstr("S")},
        {"tks": fixstr("X")},
        {"tks": fixint(1)},
        {"tks": NIL},
        {"unknown": array([f32(1.5), f64(2.5), uint(3, 32), NIL, FALSE, b"\xc4\x02ab"])},
        {"": fixstr("")},
    ],
)
def test_decode_trades_optional_and_unknown_fields_read_as_decode_frame(
    fields: dict[str, bytes | None],
) -> None:
    # Arrange
    payload = frame_of(trade(**fields), trade(S=fixstr("MSFT")))

    # Act / Assert
    assert_same_as_decode_frame(payload)
    assert kernel_takes(payload)


def test_decode_trades_keys_in_any_order_and_wide_containers_read_as_decode_frame() -> None:
    # Arrange
    pairs = [
        (fixstr("t"), ts96(OPEN_S, 7_000)),
        (str8("p"), f64(404.5)),
        (fixstr("S"), fixstr("MSFT")),
        (str16("s"), uint(300, 16)),
        (fixstr("T"), str8("t")),
        (b"\xc4\x01S", str8("a bin key: not the symbol")),
    ]
    payload = array([fixmap(pairs, wide=16), fixmap(pairs[::-1], wide=32)], wide=32)

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert kernel_takes(payload)
    assert frame.trades is not None
    assert frame.trades.instrument_column() == ["MSFT", "MSFT"]


def test_decode_trades_mixed_trade_ids_and_sides_read_as_decode_frame() -> None:
    # Arrange
    payload = frame_of(
        trade(i=None),
        trade(i=fixint(7), tks=fixstr("S")),
        trade(i=NIL, S=fixstr("TSLA")),
        trade(i=sint(-5, 8), tks=fixstr("B")),
    )

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert kernel_takes(payload)
    assert frame.trades is not None
    assert frame.trades.trade_id == ("", "7", "", "-5")
    assert frame.trades.side is not None and frame.trades.side.tolist() == [0, -1, 0, 1]


def test_decode_trades_without_ids_or_sides_leaves_them_none() -> None:
    # Arrange
    payload = frame_of(trade(i=None), trade(i=NIL))

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert frame.trades is not None
    assert frame.trades.trade_id is None and frame.trades.side is None


def test_decode_trades_empty_frame_has_no_trades() -> None:
    # Arrange / Act
    frame = assert_same_as_decode_frame(b"\x90")

    # Assert
    assert kernel_takes(b"\x90")
    assert frame.trades is None and not frame.rejected


def test_decode_trades_generated_frames_read_as_decode_frame() -> None:
    # Arrange: seeded frames, each field in an encoding drawn from those Alpaca's may use
    rng = random.Random(20240312)
    symbols = ["AAPL", "MSFT", "BRK.B", "BTC/USD", "ES=F", "^GSPC", "A", "X" * 40]
    decoder = FrameDecoder()

    def size_encoding() -> bytes:
        value = rng.choice([1, 5, 99, 100, 250, 1_000, 65_535, 70_000, 2**32 + 1])
        options: list[Callable[[], bytes]] = [
            lambda: f64(float(value)),
            lambda: uint(value, 64),
            lambda: f32(float(value)),
        ]
        if value < 128:
            options.append(lambda: fixint(value))
        if value < 256:
            options.append(lambda: uint(value, 8))
        if value < 2**16:
            options += [lambda: uint(value, 16), lambda: sint(value, 32)]
        if value < 2**32:
            options.append(lambda: uint(value, 32))
        return rng.choice(options)()

    def price_encoding() -> bytes:
        cents = rng.randrange(1, 200_000_00)
        return rng.choice([f64(cents / 100), f32(cents / 100), uint(cents // 100 + 1, 32)])

    def time_encoding() -> bytes:
        seconds, nanoseconds = OPEN_S + rng.randrange(0, 23_400), rng.randrange(0, 10**9)
        return rng.choice([ts64(seconds, nanoseconds), ts96(seconds, nanoseconds), ts32(seconds)])

    def symbol_encoding() -> bytes:
        symbol = rng.choice(symbols)
        return rng.choice([str8, str16, str32] + ([fixstr] if len(symbol) < 32 else []))(symbol)

    def message() -> bytes:
        fields = {
            "T": fixstr("t"),
            "S": symbol_encoding(),
            "p": price_encoding(),
            "s": size_encoding(),
            "t": time_encoding(),
        }
        if rng.random() < 0.9:
            fields["i"] = rng.choice([uint(rng.randrange(2**63), 64), fixint(rng.randrange(128))])
        if rng.random() < 0.3:
            fields["tks"] = fixstr(rng.choice("BSX"))
        fields["x"] = fixstr(rng.choice("VPQ"))
        fields["c"] = array([fixstr(c) for c in rng.sample(["@", "I", "F", "T"], rng.randrange(3))])
        fields["z"] = fixstr(rng.choice("ABC"))
        pairs = [(fixstr(k), v) for k, v in fields.items()]
        rng.shuffle(pairs)
        return fixmap(pairs)

    # Act / Assert
    for _ in range(300):
        payload = array([message() for _ in range(rng.randrange(1, 80))], wide=16)
        assert_same_as_decode_frame(payload, decoder)
        assert kernel_takes(payload, decoder)
    assert sorted(decoder.symbols.names) == sorted(symbols)


def test_decode_trades_recorded_frames_read_as_decode_frame() -> None:
    # Arrange: frames as msgpack-python packs them, as Alpaca's servers and our fake do
    messages = [
        {
            "T": "t",
            "S": symbol,
            "i": TRADE_ID + k,
            "x": "V",
            "p": 100 + k / 8,
            "s": [1, 100, 250, 70_000][k % 4],
            "c": ["@", "I"] if k % 3 else ["@"],
            "z": "C",
            "t": msgpack.Timestamp(OPEN_S + k, k * 1_001),
        }
        for k, symbol in enumerate(["AAPL", "MSFT", "AAPL", "NVDA", "TSLA", "AAPL"] * 20)
    ]
    decoder = FrameDecoder()

    # Act / Assert
    for start in range(0, len(messages), 25):
        payload = msgpack.packb(messages[start : start + 25])
        frame = assert_same_as_decode_frame(payload, decoder)
        assert kernel_takes(payload, decoder)
        assert frame.trades is not None and frame.trades.instruments[0] == messages[start]["S"]


# Frames the kernel leaves to decode_frame: what they hold, and every dead letter, as before.


@pytest.mark.parametrize(
    "payload",
    [
        frame_of(trade(p=fixstr("172.5"))),
        frame_of(trade(p=TRUE)),
        frame_of(trade(p=NIL)),
        frame_of(trade(p=None)),
        frame_of(trade(p=fixint(0))),
        frame_of(trade(p=fixint(-1))),
        frame_of(trade(p=f64(-0.0))),
        frame_of(trade(s=f64(float("nan")))),
        frame_of(trade(s=f32(float("nan")))),
        frame_of(trade(s=sint(-(2**63), 64))),
        frame_of(trade(S=fixint(1))),
        frame_of(trade(S=fixstr(""))),
        frame_of(trade(S=fixstr("BRK B"))),
        frame_of(trade(S=str8("A\tB"))),
        frame_of(trade(S=str8("X" * 65))),
        frame_of(trade(S=None)),
        frame_of(trade(S=str8("Ünïcode"))),
        frame_of(trade(t=fixstr("2024-03-12T13:30:01Z"))),
        frame_of(trade(t=f64(1.5))),
        frame_of(trade(t=TRUE)),
        frame_of(trade(t=None)),
        frame_of(trade(t=b"\xd6\x05\x00\x00\x00\x01")),  # another extension type
        frame_of(trade(t=b"\xc7\x08\xff" + struct.pack(">Q", 5))),  # 64-bit in an ext8
        frame_of(trade(t=ts64(OPEN_S, 10**9))),
        frame_of(trade(t=ts96(OPEN_S, 10**9))),
        frame_of(trade(t=ts96(2**62, 0))),  # nanoseconds past an int64
        frame_of(trade(t=ts64(2**34 - 1, 0))),
        frame_of(trade(t=uint(2**63, 64))),
        frame_of(trade(i=fixstr("abc"))),
        frame_of(trade(i=f64(1.0))),
        frame_of(trade(i=uint(2**64 - 1, 64))),
        frame_of(trade(i=TRUE)),
        frame_of(trade(T=fixstr("q"))),
        frame_of(trade(T=fixint(1))),
        frame_of(trade(T=None)),
        frame_of(trade(x=str8("ÿ"))),  # valid UTF-8, not ASCII: left to msgpack-python
        frame_of(trade(c=array([fixmap([(fixstr("a"), fixint(1))])]))),
        frame_of(trade(c=b"\xd4\x05\x01")),
        frame_of(trade(c=b"\xa5abc")),  # a str cut short inside the message
        frame_of(trade(), fixmap([(fixstr("T"), fixstr("q")), (fixstr("S"), fixstr("AAPL"))])),
        frame_of(trade(), fixmap([(fixstr("T"), fixstr("success")), (fixstr("msg"), fixstr("x"))])),
        frame_of(trade(), fixmap([(fixstr("T"), fixstr("s"))])),
        frame_of(trade(), fixint(1)),
        frame_of(trade(), array([])),
        fixmap([(fixstr("T"), fixstr("t"))]),
        fixint(3),
        b"",
        b"\xc1",
        frame_of(trade()) + b"\x00",  # bytes after the array
        b"\xdd\xff\xff\xff\xff" + trade(),  # more messages than the frame could hold
        array([fixmap([(fixint(1), fixint(2))])]),  # an int key: msgpack-python refuses it
        frame_of(fixmap([(fixstr("T"), fixstr("t")), (fixstr("T"), fixstr("t"))])),
        frame_of(fixmap([(fixstr("p"), fixstr("x")), *TRADE_PAIRS])),  # the last "p" wins
    ],
)
def test_decode_trades_frames_it_does_not_take_go_to_decode_frame(payload: bytes) -> None:
    # Act / Assert
    assert_same_as_decode_frame(payload)
    assert not kernel_takes(payload)


def test_decode_trades_invalid_utf8_anywhere_is_undecodable_as_before() -> None:
    # Arrange
    payload = frame_of(trade(x=b"\xa1\xff"))

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert [r.reason for r in frame.rejected] == ["undecodable"]


def test_decode_trades_malformed_trade_is_a_dead_letter_the_rest_kept() -> None:
    # Arrange
    payload = frame_of(trade(), trade(p=fixstr("172.5")), trade(S=fixstr("MSFT")))

    # Act
    frame = assert_same_as_decode_frame(payload)

    # Assert
    assert [r.reason for r in frame.rejected] == ["malformed_trade"]
    assert "'172.5' is not a positive number" in frame.rejected[0].detail
    assert frame.trades is not None and frame.trades.instrument_column() == ["AAPL", "MSFT"]


def test_decode_trades_every_truncation_reads_as_decode_frame_never_raises() -> None:
    # Arrange
    whole = frame_of(trade(), trade(S=str16("MSFT"), t=ts96(OPEN_S, 5), tks=fixstr("B")))
    decoder = FrameDecoder()

    # Act / Assert
    for end in range(len(whole)):
        assert_same_as_decode_frame(whole[:end], decoder)
        assert not kernel_takes(whole[:end], decoder)
    assert kernel_takes(whole, decoder)


def test_decode_trades_invalid_symbol_is_never_interned() -> None:
    # Arrange
    decoder = FrameDecoder()
    payload = frame_of(trade(S=fixstr("BRK B")), trade())

    # Act
    for _ in range(3):
        assert_same_as_decode_frame(payload, decoder)

    # Assert
    assert decoder.symbols.names == []


def test_decode_trades_symbols_interned_once_across_frames_and_past_capacity() -> None:
    # Arrange: more symbols than the table's first capacity, then all of them again
    decoder = FrameDecoder()
    names = [f"S{k:05d}" for k in range(1_500)]
    payloads = [
        frame_of(*(trade(S=fixstr(s)) for s in names[k : k + 10])) for k in range(0, 1_500, 10)
    ]

    # Act
    for payload in payloads + payloads[::-1]:
        assert_same_as_decode_frame(payload, decoder)

    # Assert
    assert decoder.symbols.names == names
    assert len(decoder.symbols.lengths) >= 1_500


def test_decode_trades_repeated_new_symbol_in_one_frame_is_interned_once() -> None:
    # Arrange
    decoder = FrameDecoder()
    payload = frame_of(trade(S=fixstr("NVDA")), trade(S=fixstr("AMD")), trade(S=fixstr("NVDA")))

    # Act
    frame = assert_same_as_decode_frame(payload, decoder)

    # Assert
    assert decoder.symbols.names == ["NVDA", "AMD"]
    assert frame.trades is not None and frame.trades.instrument_index.tolist() == [0, 1, 0]


def test_decode_trades_full_table_leaves_new_symbols_to_decode_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange
    monkeypatch.setattr("connectors.alpaca_frames.MAX_INTERNED_SYMBOLS", 2)
    decoder = FrameDecoder()
    first = frame_of(trade(S=fixstr("AAPL")), trade(S=fixstr("MSFT")))

    # Act
    assert_same_as_decode_frame(first, decoder)
    frame = assert_same_as_decode_frame(frame_of(trade(S=fixstr("TSLA")), trade()), decoder)

    # Assert
    assert decoder.symbols.names == ["AAPL", "MSFT"]
    assert frame.trades is not None and frame.trades.instrument_column() == ["TSLA", "AAPL"]


def test_decode_trades_json_frames_go_to_decode_frame() -> None:
    # Arrange
    text = '[{"T":"t","S":"AAPL","p":172.5,"s":100,"t":"2024-03-12T13:30:01.5Z","i":7}]'

    # Act
    decoded = FrameDecoder().decode(text, "alpaca", RECV_US)

    # Assert
    assert frame_fields(decoded) == frame_fields(decode_frame(text, "alpaca", RECV_US))


def test_symbol_table_ids_follow_insertion_and_survive_growth() -> None:
    # Arrange
    table = SymbolTable(capacity=2)

    # Act
    for name in ["AAPL", "MSFT", "TSLA", "NVDA", "AMD"]:
        table.add(name)
    buf = np.frombuffer(frame_of(trade(S=fixstr("NVDA")), trade(S=fixstr("AAPL"))), np.uint8)
    status, _, _, used, index, *_ = decode_trades(
        buf=buf, slots=table.slots, keys=table.keys, lengths=table.lengths, local=table.local
    )

    # Assert
    assert status == OK
    assert used.tolist() == [3, 0]
    assert index.tolist() == [0, 1]
    assert (table.local == -1).all()
