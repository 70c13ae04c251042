"""What every worker exports about its consumption: `agent_messages_total{agent,topic}` (the
Kafka messages each agent took, each of them a batch on the hot topics) and
`consumer_lag_messages{group,topic,partition}` (the numbers `python -m streams groups
describe` prints, refreshed in the background)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.agents import current_agent
from faust.types import TP, EventT, StreamT
from prometheus_client import Counter

from shared import kafka_admin
from shared.errors import TransientError
from shared.metrics import AGENT_MESSAGES, CONSUMER_LAG

log = logging.getLogger(__name__)


class AgentThroughput(faust.Sensor):
    """Counts each event an agent's stream takes: one call per Kafka message, not per trade."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._counters: dict[tuple[str, str], Counter] = {}

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        agent = current_agent()
        key = (agent.name if agent is not None else "none", tp.topic)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = AGENT_MESSAGES.labels(key[0].rsplit(".", 1)[-1], key[1])
        counter.inc()
        return None


async def export_lag(bootstrap: str, group: str, interval_s: float) -> None:
    """Every `interval_s`, measure the group's lag per partition and export it; partitions the
    group no longer reads leave the metric."""
    while True:
        try:
            lags = await asyncio.to_thread(kafka_admin.group_lags, bootstrap, [group])
        except TransientError as exc:
            log.warning("consumer lag of %s not measured: %s", group, exc)
            CONSUMER_LAG.clear()  # no number rather than a stale one
        else:
            CONSUMER_LAG.clear()  # no await from here to the last set: a scrape sees all or none
            for row in lags:
                if row.lag is not None:
                    CONSUMER_LAG.labels(group, row.topic, str(row.partition)).set(row.lag)
        await asyncio.sleep(interval_s)
