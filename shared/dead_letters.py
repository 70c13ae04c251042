"""Dead letters: every rejected input goes to `md.dlq.v1` with its reason, and is counted."""

from __future__ import annotations

import logging
import time
from typing import Any

from shared.codec import Codec
from shared.metrics import DEAD_LETTERS
from shared.models import DeadLetter
from shared.publisher import Publisher
from shared.topics import DLQ

log = logging.getLogger(__name__)


def now_us() -> int:
    return time.time_ns() // 1000


class DeadLetterPublisher:
    """Publish dead letters for one component through a shared Publisher."""

    def __init__(self, publisher: Publisher, codec: Codec, component: str) -> None:
        self._publisher = publisher
        self._codec = codec
        self.component = component

    def publish(
        self,
        *,
        reason: str,
        detail: str,
        source: str,
        payload: bytes,
        ts_event_us: int | None = None,
        line_number: int | None = None,
        source_partition: int | None = None,
        source_offset: int | None = None,
        key: bytes | None = None,
    ) -> None:
        """Send one dead letter and count it under `dead_letters_total{component,reason}`."""
        received = now_us()
        letter = DeadLetter(
            component=self.component,
            reason=reason,
            detail=detail,
            source=source,
            payload=payload,
            ts_event_us=received if ts_event_us is None else ts_event_us,
            ts_recv_us=received,
            source_partition=source_partition,
            source_offset=source_offset,
            line_number=line_number,
            key=key,
        )
        self._publisher.produce(DLQ, self._codec.encode_dead_letter(letter), key=key)
        DEAD_LETTERS.labels(self.component, reason).inc()
        log.warning(
            "dead letter from %s: %s (%s) source=%s line=%s partition=%s offset=%s",
            self.component,
            reason,
            detail,
            source,
            line_number,
            source_partition,
            source_offset,
        )

    def reject_event(self, event: Any, reason: str, detail: str) -> None:
        """Dead-letter a Kafka message an agent could not process (a Faust event), with its position."""
        message = event.message
        self.publish(
            reason=reason,
            detail=detail,
            source=message.topic,
            payload=bytes(event.value or b""),
            source_partition=message.partition,
            source_offset=message.offset,
            key=message.key,
        )
