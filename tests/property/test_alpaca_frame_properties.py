"""Property tests of Alpaca's frame decoders: decode_frame and the numba FrameDecoder never raise,
and the kernel path gives exactly what decode_frame gives (or leaves the frame to it).

Inputs per run (derandomized): 400 random binary frames + 300 random text frames + 400
MessagePack trade frames with mutated values (decoded by a fresh decoder) + 200 such frames
through one long-lived decoder (its symbol table grows across frames) + 300 frames of arbitrary
MessagePack values. Total: EXAMPLES_TRIED = 1,600 frames, each decoded both ways.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.alpaca_frames import Frame, FrameDecoder, decode_frame
from shared.models import TradeBatch

RANDOM_BINARY: Final = 400
RANDOM_TEXT: Final = 300
TRADE_FRAMES: Final = 400
SHARED_DECODER_FRAMES: Final = 200
ANY_MSGPACK: Final = 300
EXAMPLES_TRIED: Final = (
    RANDOM_BINARY + RANDOM_TEXT + TRADE_FRAMES + SHARED_DECODER_FRAMES + ANY_MSGPACK
)

PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)
RECV_US: Final = 1_710_250_201_123_456
OPEN_S: Final = 1_710_250_200  # 2024-03-12T13:30:00Z
SHARED_DECODER: Final = FrameDecoder()


def batch_fields(batch: TradeBatch | None) -> object:
    if batch is None:
        return None
    return (
        batch.source,
        batch.instruments,
        (batch.instrument_index.dtype, batch.instrument_index.tolist()),
        (batch.ts_event_us.dtype, batch.ts_event_us.tolist()),
        (batch.ts_recv_us.dtype, batch.ts_recv_us.tolist()),
        (batch.price.dtype, [repr(p) for p in batch.price.tolist()]),
        (batch.size.dtype, [repr(s) for s in batch.size.tolist()]),
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
        [(c.kind, repr(dict(c.body))) for c in frame.controls],
        [(r.reason, r.detail, r.payload) for r in frame.rejected],
        frame.unpublished,
    )


def assert_kernel_agrees(payload: bytes | str, decoder: FrameDecoder | None = None) -> None:
    """Both decoders return (they never raise for bad input) and agree field by field."""
    expected = decode_frame(payload, "alpaca", RECV_US)
    got = (decoder or FrameDecoder()).decode(payload, "alpaca", RECV_US)
    assert frame_fields(got) == frame_fields(expected)


NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 187.5, -1.0, 2**53 + 1, 1e308]),
)
TIMESTAMPS: Final = st.one_of(
    st.builds(
        msgpack.Timestamp,
        seconds=st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.integers(min_value=OPEN_S - 86_400, max_value=OPEN_S + 86_400),
            st.sampled_from([-62_135_596_800, 253_402_300_799, 2**34, -1]),  # year 1, 9999
        ),
        nanoseconds=st.integers(min_value=0, max_value=999_999_999),
    ),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(["2024-03-12T13:30:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31Z"]),
    st.text(max_size=30),
)
SYMBOLS: Final = st.one_of(
    st.sampled_from(["AAPL", "MSFT", "BRK.B", "BTC/USD", "", " ", "a" * 40]), st.text(max_size=8)
)
VALUES: Final = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=6),
    st.binary(max_size=6),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(-(2**63), 2**63 - 1), max_size=2),
)
FIELDS: Final = {
    "T": st.one_of(st.just("t"), st.sampled_from(["q", "b", "s", "success", "error", "x"]), VALUES),
    "S": st.one_of(SYMBOLS, VALUES),
    "i": st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), VALUES),
    "x": st.one_of(st.sampled_from(["V", "D"]), VALUES),
    "p": st.one_of(NUMBERS, VALUES),
    "s": st.one_of(NUMBERS, VALUES),
    "t": st.one_of(TIMESTAMPS, VALUES),
    "c": st.one_of(st.lists(st.sampled_from(["@", "I", "F", "T"]), max_size=3), VALUES),
    "z": st.one_of(st.sampled_from(["A", "B", "C"]), VALUES),
    "tks": st.one_of(st.sampled_from(["B", "S", "-"]), VALUES),
}


@st.composite
def trade_messages(draw: st.DrawFn) -> dict[Any, Any]:
    """A trade message: its fields mostly well typed, each possibly missing, mistyped or odd."""
    message: dict[Any, Any] = {}
    for key, values in FIELDS.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # a field missing
        well_typed = draw(st.integers(0, 3)) > 0
        if key == "T" and well_typed:
            message[key] = "t"
        elif key == "S" and well_typed:
            message[key] = draw(st.sampled_from(["AAPL", "MSFT", "BRK.B", "SPY"]))
        elif key in "ps" and well_typed:
            message[key] = draw(st.floats(min_value=0.01, max_value=1e6) | st.integers(1, 10**6))
        elif key == "t" and well_typed:
            message[key] = msgpack.Timestamp(draw(st.integers(OPEN_S, OPEN_S + 23_400)), 5)
        else:
            message[key] = draw(values)
    if draw(st.integers(0, 4)) == 0:  # an unknown field, or a key of another type
        message[draw(st.one_of(st.text(max_size=3), st.binary(max_size=3)))] = draw(VALUES)
    return message


@st.composite
def trade_frames(draw: st.DrawFn) -> bytes:
    messages = draw(st.lists(trade_messages(), max_size=5))
    try:  # float32 where every float fits one, as some encoders do
        packed = msgpack.packb(messages, use_single_float=draw(st.booleans()))
    except OverflowError:
        packed = msgpack.packb(messages)
    return packed  # type: ignore[no-any-return]


@settings(PROPERTY, max_examples=RANDOM_BINARY)
@given(payload=st.binary(max_size=200))
@example(payload=b"")
@example(payload=b"\x91" * 100_000 + b"\xc0")  # arrays nested 100,000 deep
@example(payload=b"\xdd\xff\xff\xff\xff")  # an array32 claiming 4 billion items
@example(payload=b"\x91\x81\xa1T\xa1t")  # a trade with nothing but its type
def test_decode_random_bytes_never_raises_and_kernel_agrees(payload: bytes) -> None:
    assert_kernel_agrees(payload)


@settings(PROPERTY, max_examples=RANDOM_TEXT)
@given(payload=st.text(max_size=120))
@example(payload='[{"T":"t","S":"AAPL","p":1e999,"s":1,"t":"2024-03-12T13:30:00Z"}]')
@example(payload='[{"T":"t","S":"AAPL","p":1,"s":1,"t":"99999-03-12T13:30:00Z"}]')
@example(payload="[" * 10_000)
def test_decode_random_text_never_raises(payload: str) -> None:
    assert_kernel_agrees(payload)


@settings(PROPERTY, max_examples=TRADE_FRAMES)
@given(payload=trade_frames())
def test_decode_mutated_trade_frame_kernel_equals_decode_frame(payload: bytes) -> None:
    assert_kernel_agrees(payload)


@settings(PROPERTY, max_examples=SHARED_DECODER_FRAMES)
@given(payload=trade_frames())
def test_decode_mutated_trade_frames_through_one_decoder_equal_decode_frame(payload: bytes) -> None:
    assert_kernel_agrees(payload, SHARED_DECODER)


@settings(PROPERTY, max_examples=ANY_MSGPACK)
@given(
    value=st.recursive(
        st.one_of(VALUES, TIMESTAMPS),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.one_of(st.text(max_size=3), st.binary(max_size=2)), inner, max_size=4
            )
        ),
        max_leaves=12,
    )
)
@example(value=[{b"T": "t"}])  # a bytes key: not JSON-writable for a dead letter
@example(value=[{"T": "t", "S": "AAPL", "p": 1, "s": 1, "t": 2**63 - 1, b"k": 1}])
def test_decode_arbitrary_msgpack_value_never_raises(value: object) -> None:
    assert_kernel_agrees(msgpack.packb(value))
