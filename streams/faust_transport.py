"""Faust's aiokafka transport, with the worker consumer's fetch wait made a setting.

faust-streaming hard-codes `fetch_max_wait_ms=1500` for worker consumers. A fetch for partitions
that have nothing new waits that long before the broker answers, and partitions with data wait
behind it in the same request: measured on the embedded broker, the last partitions of a
backlog arrived up to 1.5 s late, and a quiet stream's bars as much. This transport is Faust's
own, except that the consumer is built with `fetch_max_wait_ms` from `MS_WORKER_FETCH_MAX_WAIT_MS`.
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
