"""When a market trades, so that a silent feed can be told from a quiet market.

US equities trade, with the extended hours that IEX and the SIPs carry, from 04:00 to 20:00
New York time on weekdays. Exchange holidays are not known here (a calendar library such as
exchange_calendars would bring pandas into every connector): on a holiday a silent stock feed
is taken for a dead one and reconnected once per stale period, which costs a reconnect a minute.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo

NEW_YORK: Final = ZoneInfo("America/New_York")
EXTENDED_OPEN: Final = time(4, 0)
EXTENDED_CLOSE: Final = time(20, 0)


def us_equities_trading(now: datetime) -> bool:
    """Whether US equities trade at `now` (an aware datetime), extended hours included."""
    local = now.astimezone(NEW_YORK)
    return local.weekday() < 5 and EXTENDED_OPEN <= local.time() < EXTENDED_CLOSE
