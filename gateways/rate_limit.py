"""Request rates per API key, in memory (each API replica limits on its own): the `limits`
library's moving window, so a burst at a window's edge cannot double the rate."""

from __future__ import annotations

import hashlib
import math
import time

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from shared.errors import ConfigError


class KeyRates:
    """At most `rate` requests (`"20/second"`, `"600/minute"`) per key."""

    def __init__(self, rate: str, variable: str) -> None:
        try:
            self.item = limits.parse(rate)
        except ValueError:
            raise ConfigError(f"{variable}={rate!r} is not a rate like 20/second") from None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after_s(self, key: str) -> int | None:
        """None if `key` may make one more request now (and count it), else the seconds to wait."""
        identity = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()  # not the key itself
        if self._limiter.hit(self.item, identity):
            return None
        reset = self._limiter.get_window_stats(self.item, identity).reset_time
        return max(1, math.ceil(reset - time.time()))
