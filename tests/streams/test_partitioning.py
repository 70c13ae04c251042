"""Kafka's default partitioner: murmur2 as the Java client computes it, and its partition."""

from __future__ import annotations

import pytest

from shared.partitioning import murmur2, partition_for

# From Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2).
JAVA_VECTORS = [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
]
SYMBOLS = [
    "AAPL",
    "MSFT",
    "BRK.B",
    "BTC-USD",
    "ES=F",
    "^GSPC",
    "EUR/USD",
    "KXHIGHNY-24DEC01-B45",
    "日経225",
    "X",
]


@pytest.mark.parametrize(("text", "expected"), JAVA_VECTORS, ids=[t for t, _ in JAVA_VECTORS])
def test_murmur2_java_test_vector_matches_kafka(text: str, expected: int) -> None:
    # Arrange
    data = text.encode()

    # Act
    result = murmur2(data)

    # Assert
    assert result == expected


@pytest.mark.parametrize("length", range(0, 9))
def test_murmur2_any_length_returns_signed_32_bit_int(length: int) -> None:
    # Arrange
    data = bytes(range(0xF0, 0xF0 + length))

    # Act
    result = murmur2(data)

    # Assert
    assert -(2**31) <= result < 2**31


def test_murmur2_tail_bytes_change_the_hash() -> None:
    # Arrange: same 4-byte block, tails of 1, 2 and 3 bytes differing only in the last byte
    pairs = [
        (b"abcd" + tail[:-1] + b"x", b"abcd" + tail[:-1] + b"y") for tail in (b"1", b"12", b"123")
    ]

    # Act
    hashes = [(murmur2(a), murmur2(b)) for a, b in pairs]

    # Assert
    assert all(a != b for a, b in hashes)


@pytest.mark.parametrize("partitions", [1, 3, 7, 12, 64])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_partition_for_any_symbol_is_in_range(symbol: str, partitions: int) -> None:
    # Arrange / Act
    partition = partition_for(symbol, partitions)

    # Assert
    assert 0 <= partition < partitions


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_partition_for_repeated_call_returns_same_partition(symbol: str) -> None:
    # Arrange
    partition_for.cache_clear()
    first = partition_for(symbol, 12)

    # Act
    partition_for.cache_clear()
    second = partition_for(symbol, 12)

    # Assert
    assert first == second


@pytest.mark.parametrize(("text", "expected_hash"), JAVA_VECTORS, ids=[t for t, _ in JAVA_VECTORS])
def test_partition_for_java_vector_equals_kafka_default_partitioner(
    text: str, expected_hash: int
) -> None:
    # Arrange: Utils.toPositive(murmur2(key)) % numPartitions
    expected = (expected_hash & 0x7FFFFFFF) % 12

    # Act
    partition = partition_for(text, 12)

    # Assert
    assert partition == expected


def test_partition_for_many_symbols_uses_every_partition() -> None:
    # Arrange
    symbols = [f"SIM{i:04d}" for i in range(1000)]

    # Act
    used = {partition_for(s, 8) for s in symbols}

    # Assert
    assert used == set(range(8))
