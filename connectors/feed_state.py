"""What `GET /stats/providers` says of a connector that has one provider: its session's state,
its errors by kind, how fresh its data is and how many instruments it served.

A failover connector reports its providers itself (health scores, breakers); every other
connector gets this from its runner, which sees every session start, fail and deliver.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Literal

State = Literal["connecting", "streaming", "reconnecting", "down", "stopped"]


class FeedState:
    def __init__(self) -> None:
        self.state: State = "connecting"
        self.since_us = time.time_ns() // 1000
        self.reconnects = 0
        self.last_error: str | None = None
        self.errors: Counter[str] = Counter()  # transient:<type>, fatal:<type>, rejected:<reason>
        self.last_data_us: int | None = None
        self.instruments: set[str] = set()

    def _enter(self, state: State) -> None:
        if state != self.state:
            self.state, self.since_us = state, time.time_ns() // 1000

    def data(self, instruments: tuple[str, ...] = ()) -> None:
        self.last_data_us = time.time_ns() // 1000
        self.instruments.update(instruments)
        self._enter("streaming")

    def failed(self, exc: Exception, *, fatal: bool) -> None:
        self.errors[f"{'fatal' if fatal else 'transient'}:{type(exc).__name__}"] += 1
        self.last_error = str(exc)
        if fatal:
            self._enter("down")
        else:
            self.reconnects += 1
            self._enter("reconnecting")

    def rejected(self, reason: str) -> None:
        self.errors[f"rejected:{reason}"] += 1

    def stopped(self) -> None:
        if self.state != "down":
            self._enter("stopped")

    def stats(self, published: int) -> dict[str, Any]:
        now_us = time.time_ns() // 1000
        return {
            "state": self.state,
            "state_for_s": round((now_us - self.since_us) / 1e6, 3),
            "last_data_age_s": (
                None if self.last_data_us is None else round((now_us - self.last_data_us) / 1e6, 3)
            ),
            "instruments_served": len(self.instruments),
            "trades_published": published,
            "reconnects": self.reconnects,
            "errors": dict(self.errors),
            "last_error": self.last_error,
        }
