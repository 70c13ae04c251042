"""Which partition an instrument's trades go to: Kafka's default (murmur2) partitioner.

Partition = (murmur2(utf-8 symbol) & 0x7fffffff) % partitions, exactly what the Java client's
default partitioner and librdkafka's `murmur2_random` do for a message keyed by the symbol. So
another team that produces trades keyed by symbol lands on the same partitions we do.
"""

from __future__ import annotations

import functools

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Return Kafka's murmur2 hash of `data` as a signed 32-bit int (seed 0x9747b28c)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=1_000_000)
def partition_for(instrument: str, partitions: int) -> int:
    """Return the partition of `instrument` in a topic with `partitions` partitions."""
    return (murmur2(instrument.encode()) & 0x7FFFFFFF) % partitions
