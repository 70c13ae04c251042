"""Microseconds since the Unix epoch and aware UTC datetimes, converted exactly.

A float of seconds has too few digits for today's microseconds (`datetime.timestamp()` rounds
some of them off by one), and a window start off by one microsecond is another window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)
# The times Python's datetime can hold (years 1 to 9999): readers of our tables must be able to.
MIN_US: Final = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
MAX_US: Final = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND


def time_of(us: int) -> datetime:
    """The moment `us` microseconds after the Unix epoch, as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def micros_of(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly."""
    return (moment - EPOCH) // MICROSECOND


def rfc3339(us: int) -> str:
    """`us` as RFC 3339 UTC with a `Z`, to the microsecond."""
    return time_of(us).isoformat().replace("+00:00", "Z")
