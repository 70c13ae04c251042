"""Faust's aiokafka transport, with the worker consumer's fetch wait made a setting.

faust-streaming hard-codes `fetch_max_wait_ms=1500` for worker consumers. Kafka answers a fetch
as soon as any of its partitions has data, so there the wait only bounds an idle fetch. The
embedded broker (Tansu) answers at once too if data is there, but a fetch that found none looks
again only after half the wait, then after half of what is left: a message that lands meanwhile
is seen up to half the wait late, and so are the bars it closes. This transport is Faust's own,
except that the consumer is built with `WorkerSettings.fetch_wait_ms`.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads the attribute when the consumer starts, which is after this returns.
        consumer._fetch_max_wait_ms = cast(Transport, transport).fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """Faust's aiokafka transport; worker consumers wait at most `fetch_max_wait_ms` per fetch."""

    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
