"""When a market trades, so that a silent feed can be told from a quiet market.

US equities trade on weekdays, New York time: the SIPs carry 04:00 to 20:00 (extended hours),
IEX its own system hours, 08:00 to 17:00. Exchange holidays are not known here (a calendar library such as
exchange_calendars would bring pandas into every connector): on a holiday a silent stock feed
is taken for a dead one and reconnected once per stale period, which costs a reconnect a minute.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo

NEW_YORK: Final = ZoneInfo("America/New_York")
SIP_HOURS: Final = (time(4, 0), time(20, 0))
IEX_HOURS: Final = (time(8, 0), time(17, 0))


def us_equities_trading(now: datetime, hours: tuple[time, time] = SIP_HOURS) -> bool:
    """Whether US equities trade at `now` (an aware datetime) within `hours` (New York)."""
    local = now.astimezone(NEW_YORK)
    return local.weekday() < 5 and hours[0] <= local.time() < hours[1]
