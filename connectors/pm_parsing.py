"""What the prediction-market parsers share: a page of parsed markets, JSON bodies that may be
HTML error pages, typed field access that names the field at fault. Pure: no HTTP here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from connectors.base import Rejected
from shared.models import Listing, PmPrice

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TITLE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class BadInput(ValueError):
    """A body or entry that is not in the venue's documented format; becomes a Rejected."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def rejected(self, payload: bytes) -> Rejected:
        return Rejected(self.reason, self.detail, payload)


@dataclass(slots=True)
class Page:
    """One listing page: Listings and Rejected in body order, the price rows it carried, every
    market id it named (rejected ones too: they did not vanish), where the next page starts;
    `complete` is False if the page itself was unreadable."""

    items: list[Listing | Rejected] = field(default_factory=list)
    prices: list[PmPrice] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    cursor: str | None = None
    entries: int = 0  # markets in the body, parsed or not
    complete: bool = True
    tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)  # market -> outcome tokens


def json_body(body: bytes, content_type: str) -> Any:
    """The JSON of a body; raise BadInput for an HTML page (naming its title) or bad JSON."""
    head = body[:512].lstrip().lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html")):
        found = _TITLE.search(body[:4096])
        title = found.group(1).decode(errors="replace").strip() if found else "no title"
        raise BadInput("not_json", f"an HTML page ({title}), not JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput("not_json", f"not JSON: {exc}") from None


def rejected_entry(exc: BadInput, entry: Any) -> Rejected:
    """A Rejected for one entry of a page, with the entry itself as its payload."""
    try:
        payload = orjson.dumps(entry)
    except TypeError:
        payload = repr(entry).encode()
    return exc.rejected(payload)


def required_str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise BadInput("missing_field", f"no {name}")
    if not isinstance(value, str) or not value.strip():
        raise BadInput("bad_type", f"{name} is {value!r}, not a non-empty string")
    return value


def optional_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput("bad_type", f"{name} is {value!r}, not a string")
    return value


def iso_us(obj: Mapping[str, Any], name: str) -> int | None:
    """An ISO 8601 time field as microseconds since the epoch (UTC if it names no zone)."""
    text = optional_str(obj, name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput("bad_time", f"{name} is {text!r}, not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(microseconds=1)
