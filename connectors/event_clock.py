"""A source's event-time clock, which the runner stamps on every batch as its watermark.

A data clock is the latest event time seen: replaying a file or a simulated feed then gives the
same watermarks, and so the same bars, at any speed. A live clock extrapolates that time with
the wall clock while the feed is quiet, so bars of quiet instruments still close on time.
"""

from __future__ import annotations

import time

END_OF_STREAM_ADVANCE_US = 2 * 86_400 * 1_000_000


class EventClock:
    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.latest_event_us: int | None = None
        self._seen_at_s = 0.0

    def observe(self, max_ts_event_us: int) -> None:
        """Note the latest event time of trades just received."""
        if self.latest_event_us is None or max_ts_event_us > self.latest_event_us:
            self.latest_event_us = max_ts_event_us
            self._seen_at_s = time.monotonic()

    def now_us(self) -> int:
        """Return the current watermark; 0 until a live feed or any trade says otherwise."""
        if self.live:
            if self.latest_event_us is None:
                return time.time_ns() // 1000
            return self.latest_event_us + int((time.monotonic() - self._seen_at_s) * 1e6)
        return self.latest_event_us or 0

    def end_of_stream_us(self) -> int:
        """Return a watermark past every window a finished feed opened (two days on)."""
        return self.now_us() + END_OF_STREAM_ADVANCE_US
