"""Trades messages are decoded once for all the agents that read them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from shared.codec import Codec
from shared.errors import DecodeError
from shared.models import TradeBatch
from streams.decoded import DecodedTradeBatches


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes


def test_same_message_decodes_once_other_offsets_and_garbage_apart(codec: Codec) -> None:
    batch = TradeBatch(
        "test",
        ("X",),
        np.zeros(1, np.int32),
        np.ones(1, np.int64),
        np.ones(1, np.int64),
        np.ones(1),
        np.ones(1),
    )
    decoded = DecodedTradeBatches(codec, keep=2)
    first = decoded.of(Message("t", 0, 1, codec.encode_trade_batch(batch)))

    assert decoded.of(Message("t", 0, 1, b"")) is first  # same message: the first decode
    assert decoded.of(Message("t", 1, 1, codec.encode_trade_batch(batch))) is not first
    for _ in range(2):  # each agent that reads it gets the error
        with pytest.raises(DecodeError):
            decoded.of(Message("t", 0, 2, b"\x00\x00\x00\x00\x01garbage"))
    with pytest.raises(DecodeError):  # (t, 0, 1) fell out of the two kept: decoded again
        decoded.of(Message("t", 0, 1, b""))
