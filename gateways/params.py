"""Values of HTTP requests (query parameters, JSON bodies), checked: a BadRequestError says what
is wrong, and the route answers it as a 400."""

from __future__ import annotations

from datetime import datetime

from shared.times import MAX_US, MIN_US, micros_of


class BadRequestError(ValueError):
    """A request we cannot act on; the message goes back in the 400."""


def parse_time(value: object, name: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time with a zone, or of an integer of
    microseconds (a JSON number, or digits in a query string), within years 1 to 9999."""
    us: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        us = value
    elif isinstance(value, str) and value.lstrip("-").isdigit():
        us = int(value)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                us = micros_of(moment)
    if us is not None and MIN_US <= us <= MAX_US:
        return us
    raise BadRequestError(
        f"{name!r} must be an RFC 3339 time with a zone, or microseconds, in years 1 to 9999"
    )


def parse_limit(text: str | None, default: int, most: int) -> int:
    """A `limit` query parameter: an integer from 1 to `most`."""
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise BadRequestError(f"limit is an integer from 1 to {most}")
    return int(text)
