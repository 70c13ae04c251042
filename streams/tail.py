"""`python -m streams trades tail`: print trades as they arrive on md.trades.v1, for people."""

from __future__ import annotations

import datetime as dt
import uuid

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from shared.codec import Codec
from shared.errors import DecodeError, TransientError
from shared.topics import TRADES


def tail_trades(bootstrap: str, codec: Codec, count: int, timeout_s: float) -> int:
    """Print up to `count` new trades (0 = until interrupted); return how many were printed.

    Raise TransientError if the broker fails or the topic is missing.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        try:
            topic = consumer.list_topics(TRADES, timeout=10).topics[TRADES]
        except KafkaException as exc:
            raise TransientError(f"cannot read metadata of {TRADES} at {bootstrap}: {exc}") from exc
        if topic.error is not None or not topic.partitions:
            raise TransientError(
                f"topic {TRADES} is missing at {bootstrap}; run `python -m streams topics create`"
            )
        consumer.assign([TopicPartition(TRADES, p, OFFSET_END) for p in topic.partitions])
        printed = 0
        idle = 0.0
        while (not count or printed < count) and idle < timeout_s:
            messages = consumer.consume(100, 0.5)
            idle = idle + 0.5 if not messages else 0.0
            for msg in messages:
                try:
                    batch = codec.decode_trade_batch(msg.value() or b"")
                except DecodeError as exc:
                    print(f"partition {msg.partition()} offset {msg.offset()}: undecodable ({exc})")
                    continue
                for symbol, ts, price, size in zip(
                    batch.instrument_column(),
                    batch.ts_event_us.tolist(),
                    batch.price.tolist(),
                    batch.size.tolist(),
                    strict=True,
                ):
                    when = dt.datetime.fromtimestamp(ts / 1e6, dt.UTC).isoformat()
                    print(
                        f"{when}  {symbol:<12} {price:>12.4f} x {size:g}  (partition {msg.partition()})"
                    )
                    printed += 1
                    if count and printed >= count:
                        return printed
        return printed
    finally:
        consumer.close()
