"""A stock confluent-kafka consumer with AvroDeserializer reads our topics through our API."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import wait_http

from shared.codec import Codec
from shared.models import TradeBatch
from shared.publisher import Publisher
from shared.topics import TRADES


@pytest.fixture
def api_url(database_url: str, start_api: Callable[[str], str]) -> str:
    return start_api(database_url)


def test_stock_avro_deserializer_via_our_api_reads_trades_topic(
    bootstrap: str, codec: Codec, api_url: str
) -> None:
    batch = TradeBatch(
        source="test",
        instruments=("AAPL", "ES=F"),
        instrument_index=np.array([0, 1, 0], np.int32),
        ts_event_us=np.array([1_767_225_600_000_001, 1_767_225_600_000_002, 1_767_225_600_000_003]),
        ts_recv_us=np.array([1_767_225_600_000_010] * 3),
        price=np.array([190.5, 5000.25, 190.75]),
        size=np.array([100.0, 1.0, 5.0]),
        side=np.array([1, -1, 0], np.int8),
        trade_id=None,
    )
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(TRADES, codec.encode_trade_batch(batch), partition=0)
    publisher.flush()

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "stock-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(TRADES, 0, OFFSET_BEGINNING)])
    msg = consumer.poll(20)
    consumer.close()
    assert msg is not None and msg.error() is None
    with SchemaRegistryClient({"url": api_url}) as client:
        record = AvroDeserializer(client)(
            msg.value(), SerializationContext(TRADES, MessageField.VALUE)
        )

    assert record["instruments"] == ["AAPL", "ES=F"]
    assert record["instrument_index"] == [0, 1, 0]
    assert record["price"] == [190.5, 5000.25, 190.75]
    assert record["side"] == [1, -1, 0]
    assert record["ts_event"][0] == dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)


def test_registry_api_lists_subjects_and_latest_versions(api_url: str) -> None:
    subjects = orjson.loads(wait_http(f"{api_url}/subjects"))
    assert subjects == [
        "md.arbitrage.v1-value",
        "md.bars.batch.v1-value",
        "md.bars.v1-value",
        "md.dlq.v1-value",
        "md.feed_events.v1-value",
        "md.fundamentals.v1-value",
        "md.gaps.v1-value",
        "md.listings.v1-value",
        "md.matches.v1-value",
        "md.pm_prices.v1-value",
        "md.provider_bars.v1-value",
        "md.quotes.v1-value",
        "md.statuses.v1-value",
        "md.trades.v1-value",
    ]
    latest = orjson.loads(wait_http(f"{api_url}/subjects/md.trades.v1-value/versions/latest"))
    assert latest["subject"] == "md.trades.v1-value" and latest["version"] == 2
    schema = orjson.loads(latest["schema"])
    assert schema["name"] == "TradeBatch" and schema["fields"][-1]["name"] == "provider"


def test_registry_api_unknown_id_answers_registry_error_shape(api_url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{api_url}/schemas/ids/999999", timeout=5)
    assert info.value.code == 404
    assert orjson.loads(info.value.read())["error_code"] == 40403
