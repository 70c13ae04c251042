"""The parameters that decide whether two listings ask the same question, read from their text.

`extract_params(title, close_date=…, category=…, rules=…)` returns a `Params` that lists what it
found and where (each item keeps the words it came from), so that a reviewer can see why a pair
agreed or differed. Dates without a year, and periods such as "end of year", are resolved
against the listing's close date.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from streams.matching.normalize import (
    ENTITIES,
    ENTITY_PATTERN,
    Span,
    canonical_text,
    clean,
    entity_name,
)


class DateKind(IntEnum):
    """How a question is tied to its date: on the day, by (on or before) it, or within a period."""

    NONE = 0
    ON = 1
    BY = 2
    IN = 3


class Direction(IntEnum):
    """Which side of the strike resolves YES."""

    NONE = 0
    ABOVE = 1
    BELOW = 2
    BETWEEN = 3


class Unit(IntEnum):
    """The unit of a number; DEG (a bare °) is compatible with either scale."""

    NONE = 0
    USD = 1
    PERCENT = 2
    DEG_F = 3
    DEG_C = 4
    DEG = 5


class Quantity(IntEnum):
    """What the question measures; UNKNOWN is compatible with anything."""

    UNKNOWN = 0
    PRICE = 1
    TEMP_HIGH = 2
    TEMP_LOW = 3
    TEMPERATURE = 4
    RATE = 5
    CPI = 6
    GDP = 7
    UNEMPLOYMENT = 8
    SEATS = 9
    POPULAR_VOTE = 10
    ELECTORAL_VOTES = 11
    NOMINATION = 12
    WIN = 13


@dataclass(frozen=True, slots=True)
class DatePart:
    """A date or period found in the text (or the close date when the text names none)."""

    kind: DateKind
    start: dt.date
    end: dt.date  # the day that decides: the day itself, or a period's last day
    text: str
    from_close_date: bool = False


@dataclass(frozen=True, slots=True)
class Number:
    """A number with its unit; k/M/B suffixes applied, basis points given as percent."""

    value: float
    unit: Unit
    text: str


@dataclass(frozen=True, slots=True)
class Strike:
    """The threshold a question resolves on: a direction and a value, or a range [low, high]."""

    direction: Direction
    low: float
    high: float
    unit: Unit
    text: str


@dataclass(frozen=True, slots=True)
class Entity:
    """A named thing from the alias table: canonical name, kind, and the words that named it."""

    name: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Params:
    """Everything extracted from one listing, and the canonical text its vector is built from."""

    date: DatePart | None
    dates: tuple[DatePart, ...]
    numbers: tuple[Number, ...]
    strike: Strike | None
    entities: tuple[Entity, ...]
    quantity: Quantity
    announcement: bool
    category: str
    text: str

    @property
    def entity_names(self) -> frozenset[str]:
        return frozenset(e.name for e in self.entities)


_MONTH: Final = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_MONTHS: Final = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_ORD: Final = r"(?:st|nd|rd|th)?"
_ISO: Final = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_DAY: Final = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}}){_ORD}(?:,?\s+(\d{{4}}))?\b")
_DAY_MONTH: Final = re.compile(rf"\b(\d{{1,2}}){_ORD}\s+{_MONTH}(?:,?\s+(\d{{4}}))?\b")
_SLASH: Final = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?\b")
_END_OF_YEAR: Final = re.compile(
    r"\b(?:(?:the\s+)?end\s+of\s+(?:the\s+)?(?:year|(\d{4}))|year[\s-]end|eoy|this\s+year)\b"
)
_END_OF_MONTH: Final = re.compile(rf"\b(?:the\s+)?end\s+of\s+{_MONTH}(?:\s+(\d{{4}}))?\b")
_QUARTER: Final = re.compile(
    r"\b(?:q([1-4])|(first|second|third|fourth|1st|2nd|3rd|4th)\s+quarter(?:\s+of)?)"
    r"(?:\s+(\d{4}))?\b"
)
_MONTH_YEAR: Final = re.compile(rf"\b{_MONTH}(?:\s+(\d{{4}}))?\b")
_YEAR: Final = re.compile(r"\b(20\d{2})\b")
_PREFIX: Final = re.compile(
    r"(?:^|\s)(by the end of|by end of|on or before|before|by|on|in|during|after|through|until"
    r"|at|for)\s+$"
)
_QUARTER_WORDS: Final = {"first": 1, "second": 2, "third": 3, "fourth": 4} | {
    "1st": 1, "2nd": 2, "3rd": 3, "4th": 4,
}  # fmt: skip

_NUMBER: Final = re.compile(
    r"(?<![\w.])(?P<cur>\$\s?)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:\s?(?P<suf>k|mm|m|bn|b|t|thousand|million|billion|trillion)(?![\w]))?"
    r"(?P<plus>\+)?(?:\s?(?P<unit>%|percent\b|bps\b|bp\b|basis points?\b|°\s?[fc]\b|°|degrees?\s(?:fahrenheit"
    r"|celsius|f|c)\b|degrees?\b|fahrenheit\b|celsius\b|dollars?\b|usd\b))?"
)
_SUFFIX: Final = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "million": 1e6} | {
    "b": 1e9, "bn": 1e9, "billion": 1e9, "t": 1e12, "trillion": 1e12,
}  # fmt: skip
_ABOVE_BEFORE: Final = re.compile(
    r"(above|over|more than|greater than|higher than|at least|exceeds?|exceeding|surpass(?:es)?"
    r"|reach(?:es)?|hits?|>=|>|\bat or above)\s*(?:an?\s+)?$"
)
_BELOW_BEFORE: Final = re.compile(
    r"(below|under|less than|lower than|at most|fewer than|beneath|<=|<|\bat or below)\s*(?:an?\s+)?$"
)
_ABOVE_AFTER: Final = re.compile(r"^\s*(\+|or (?:more|higher|above|greater|over)\b|and above\b)")
_BELOW_AFTER: Final = re.compile(r"^\s*(or (?:less|lower|below|fewer|under)\b|and below\b)")
_RANGE_GAP: Final = re.compile(r"^\s*(?:-|to|and)\s*$")
_CHANGE_DOWN: Final = re.compile(r"\b(cuts?|cutting|decreases?|lowers?|reduces?|drops?)\b")
_CHANGE_UP: Final = re.compile(r"\b(hikes?|hiking|raises?|increases?)\b")
_QUANTITIES: Final = (
    (re.compile(r"\bhigh(?:est)?\s+temp|\bmax(?:imum)?\s+temp"), Quantity.TEMP_HIGH),
    (re.compile(r"\blow(?:est)?\s+temp|\bmin(?:imum)?\s+temp"), Quantity.TEMP_LOW),
    (re.compile(r"\btemp(?:erature)?s?\b|°"), Quantity.TEMPERATURE),
    (re.compile(r"\belectoral (?:votes?|college)\b"), Quantity.ELECTORAL_VOTES),
    (re.compile(r"\bpopular vote\b"), Quantity.POPULAR_VOTE),
    (re.compile(r"\bseats?\b"), Quantity.SEATS),
    (re.compile(r"\b(?:cpi|inflation)\b"), Quantity.CPI),
    (re.compile(r"\bgdp\b"), Quantity.GDP),
    (re.compile(r"\b(?:unemployment|jobless)\b"), Quantity.UNEMPLOYMENT),
    (re.compile(r"\b(?:interest rates?|rates?|fed funds|bps|basis points?)\b"), Quantity.RATE),
    (re.compile(r"\b(?:nominat\w*|primary)\b"), Quantity.NOMINATION),
    (re.compile(r"\b(?:win|wins|winner|won|champions?|championship|beats?)\b"), Quantity.WIN),
    (re.compile(r"\b(?:price|close|closes|trade|trades|settle|settles)\b"), Quantity.PRICE),
)
_ANNOUNCEMENT: Final = re.compile(
    r"\b(?:announce\w*|says?|said|mention\w*|tweets?|confirm\w*|declares?)\b"
)


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _nearest_year(month: int, day: int, close: dt.date | None) -> dt.date | None:
    """The date month/day in the year that puts it nearest `close` (None without a close date)."""
    if close is None:
        return None
    found: list[dt.date] = []
    for year in (close.year - 1, close.year, close.year + 1):
        try:
            found.append(dt.date(year, month, day))
        except ValueError:
            continue
    return min(found, key=lambda d: abs((d - close).days)) if found else None


def _year(text: str | None, close: dt.date | None) -> int | None:
    if text:
        year = int(text)
        return year + 2000 if year < 100 else year
    return close.year if close else None


def _day(month: int, day: int, year: str | None, close: dt.date | None) -> dt.date | None:
    if year is None:
        return _nearest_year(month, day, close)
    try:
        return dt.date(_year(year, close) or 0, month, day)
    except ValueError:
        return None


def _find_dates(text: str, close: dt.date | None) -> list[tuple[int, int, dt.date, dt.date, bool]]:
    """Each date phrase as (start, end, first day, last day, is a single day), in text order."""
    found: list[tuple[int, int, dt.date, dt.date, bool]] = []
    taken: list[tuple[int, int]] = []

    def add(m: re.Match[str], first: dt.date | None, last: dt.date | None, day: bool) -> None:
        s, e = m.span()
        if first is None or last is None or any(s < b and a < e for a, b in taken):
            return
        taken.append((s, e))
        found.append((s, e, first, last, day))

    has_digit = any(c.isdigit() for c in text)
    for m in _ISO.finditer(text) if has_digit and "-" in text else ():
        with_day = _day(int(m[2]), int(m[3]), m[1], close)
        add(m, with_day, with_day, True)
    for m in _MONTH_DAY.finditer(text) if has_digit else ():
        with_day = _day(_MONTHS[m[1][:3].title()], int(m[2]), m[3], close)
        add(m, with_day, with_day, True)
    for m in _DAY_MONTH.finditer(text) if has_digit else ():
        with_day = _day(_MONTHS[m[2][:3].title()], int(m[1]), m[3], close)
        add(m, with_day, with_day, True)
    for m in _SLASH.finditer(text) if "/" in text else ():
        month, day = int(m[1]), int(m[2])
        if 1 <= month <= 12:
            with_day = _day(month, day, m[3], close)
            add(m, with_day, with_day, True)
    for m in (
        _END_OF_YEAR.finditer(text) if "year" in text or "end" in text or "eoy" in text else ()
    ):
        year = _year(m[1], close)
        if year is not None:
            add(m, dt.date(year, 12, 31), dt.date(year, 12, 31), True)
    for m in _END_OF_MONTH.finditer(text) if "end" in text else ():
        month = _MONTHS[m[1][:3].title()]
        near = _nearest_year(month, 28, close)
        year = _year(m[2], near)
        if year is not None:
            add(m, _month_end(year, month), _month_end(year, month), True)
    for m in _QUARTER.finditer(text) if "q" in text else ():
        quarter = int(m[1]) if m[1] else _QUARTER_WORDS[m[2]]
        year = _year(m[3], close)
        if year is not None:
            first = dt.date(year, 3 * quarter - 2, 1)
            add(m, first, _month_end(year, 3 * quarter), False)
    for m in _MONTH_YEAR.finditer(text):
        if m[2] is None and not _PREFIX.search(text[max(0, m.start() - 20) : m.start()]):
            continue  # a bare month name ("may") counts only after "in", "by", … or with a year
        month = _MONTHS[m[1][:3].title()]
        near = _nearest_year(month, 15, close)
        year = _year(m[2], near)
        if year is not None:
            add(m, dt.date(year, month, 1), _month_end(year, month), False)
    for m in _YEAR.finditer(text) if "20" in text else ():
        year = int(m[1])
        add(m, dt.date(year, 1, 1), dt.date(year, 12, 31), False)
    return sorted(found)


def _date_parts(
    text: str, close: dt.date | None
) -> tuple[list[DatePart], list[Span], list[tuple[int, int]]]:
    parts: list[DatePart] = []
    spans: list[Span] = []
    taken: list[tuple[int, int]] = []
    for s, e, first, last, day in _find_dates(text, close):
        prefix = _PREFIX.search(text[max(0, s - 20) : s])
        word = prefix[1] if prefix else ""
        if word in ("on", "at", "after"):
            kind = DateKind.ON
        elif word in ("in", "during", "for"):
            kind = DateKind.IN
        elif word:
            kind = DateKind.BY
        else:
            kind = DateKind.ON if day else DateKind.IN
        if word == "before":
            last = first - dt.timedelta(days=1)
            first = last
        elif kind is DateKind.BY and not day:
            first = last
        parts.append(DatePart(kind, first, last, text[s:e]))
        spans.append(Span(s, e, last.isoformat() if first == last else f"{first}..{last}"))
        taken.append((s, e))
    return parts, spans, taken


def _numbers(masked: str) -> tuple[list[tuple[int, int, Number, Direction, int, int]], list[Span]]:
    """Each number as (start, end, Number, direction, cmp start, cmp end), and canonical spans."""
    out: list[tuple[int, int, Number, Direction, int, int]] = []
    spans: list[Span] = []
    for m in _NUMBER.finditer(masked):
        value = float(m["num"].replace(",", ""))
        if m["suf"]:
            value *= _SUFFIX[m["suf"]]
        unit_text = (m["unit"] or "").replace(" ", "")
        unit = Unit.USD if m["cur"] or unit_text.startswith(("dollar", "usd")) else Unit.NONE
        if unit_text in ("%", "percent"):
            unit = Unit.PERCENT
        elif unit_text.startswith(("bp", "basis")):
            unit, value = Unit.PERCENT, value / 100
        elif unit_text.endswith(("f", "fahrenheit")) and unit_text.startswith(("°", "deg", "f")):
            unit = Unit.DEG_F
        elif unit_text.endswith(("c", "celsius")) and unit_text.startswith(("°", "deg", "c")):
            unit = Unit.DEG_C
        elif unit_text.startswith(("°", "degree")):
            unit = Unit.DEG
        s, e = m.span()
        direction, cs, ce = Direction.NONE, s, s
        if found := _ABOVE_BEFORE.search(masked, max(0, s - 16), s):
            direction, cs, ce = Direction.ABOVE, found.start(1), found.end(1)
        elif found := _BELOW_BEFORE.search(masked, max(0, s - 16), s):
            direction, cs, ce = Direction.BELOW, found.start(1), found.end(1)
        elif m["plus"]:
            direction, cs, ce = Direction.ABOVE, m.end("plus") - 1, m.end("plus")
        elif found := _ABOVE_AFTER.search(masked[e : e + 16]):
            direction, cs, ce = Direction.ABOVE, e + found.start(1), e + found.end(1)
        elif found := _BELOW_AFTER.search(masked[e : e + 16]):
            direction, cs, ce = Direction.BELOW, e + found.start(1), e + found.end(1)
        number = Number(value, unit, m[0].strip())
        out.append((s, e, number, direction, cs, ce))
        spans.append(Span(s, e, f"{value:.6g}{_UNIT_WORDS[unit]}"))
        if ce > cs:
            spans.append(Span(cs, ce, direction.name.lower()))
    return out, spans


_UNIT_WORDS: Final = {Unit.NONE: "", Unit.USD: " usd", Unit.PERCENT: " pct"} | {
    Unit.DEG_F: " deg", Unit.DEG_C: " degc", Unit.DEG: " deg",
}  # fmt: skip


def _strike(
    masked: str, numbers: list[tuple[int, int, Number, Direction, int, int]]
) -> Strike | None:
    for (_, e1, n1, _, _, _), (s2, e2, n2, _, _, _) in itertools.pairwise(numbers):
        if _RANGE_GAP.match(masked[e1:s2]):
            unit = n1.unit or n2.unit
            return Strike(
                Direction.BETWEEN, n1.value, n2.value, unit, masked[e1 - len(n1.text) : e2]
            )
    for _, _, number, direction, _, _ in numbers:
        if direction is not Direction.NONE:
            return Strike(direction, number.value, number.value, number.unit, number.text)
    if numbers:
        _, _, number, _, _, _ = numbers[0]
        return Strike(Direction.NONE, number.value, number.value, number.unit, number.text)
    return None


def _quantity(text: str, entities: list[Entity], strike: Strike | None) -> Quantity:
    for pattern, quantity in _QUANTITIES:
        if pattern.search(text):
            return quantity
    if strike is not None and any(e.kind == "asset" for e in entities):
        return Quantity.PRICE
    return Quantity.UNKNOWN


def extract_params(
    title: str,
    *,
    close_date: dt.date | None = None,
    category: str = "",
    rules: str = "",
) -> Params:
    """Return the parameters of one listing; `rules` only adds entities and the quantity.

    The title decides dates and strikes (rules texts quote many dates and numbers that are not
    the question's); a date without a year takes the year that puts it nearest `close_date`.
    """
    text = clean(title)
    parts, spans, taken = _date_parts(text, close_date)
    masked = list(text)
    for s, e in taken:
        masked[s:e] = " " * (e - s)
    masked_text = "".join(masked)
    numbers, number_spans = _numbers(masked_text)
    spans += number_spans
    strike = _strike(masked_text, numbers)
    rate_change = strike is not None and strike.unit is Unit.PERCENT and "rate" in text
    if strike is not None and (strike.direction is Direction.NONE or rate_change):
        if _CHANGE_DOWN.search(text):
            strike = Strike(Direction.BELOW, strike.low, strike.high, strike.unit, strike.text)
        elif _CHANGE_UP.search(text):
            strike = Strike(Direction.ABOVE, strike.low, strike.high, strike.unit, strike.text)
    entities: list[Entity] = []
    seen: set[str] = set()
    for m in ENTITY_PATTERN.finditer(masked_text):
        name = entity_name(m[1])
        spans.append(Span(m.start(), m.end(), name))
        if name not in seen:
            seen.add(name)
            entities.append(Entity(name, ENTITIES[name][0], m[1]))
    rules_text = clean(rules) if rules else ""
    for m in ENTITY_PATTERN.finditer(rules_text):
        name = entity_name(m[1])
        if name not in seen and ENTITIES[name][0] in ("office", "event"):
            seen.add(name)
            entities.append(Entity(name, ENTITIES[name][0], m[1]))
    quantity = _quantity(text, entities, strike)
    if quantity is Quantity.UNKNOWN and rules_text:
        quantity = _quantity(rules_text, entities, strike)
    date: DatePart | None = parts[0] if parts else None
    if date is None and close_date is not None:
        date = DatePart(DateKind.NONE, close_date, close_date, "", from_close_date=True)
    return Params(
        date=date,
        dates=tuple(parts),
        numbers=tuple(n for _, _, n, _, _, _ in numbers),
        strike=strike,
        entities=tuple(entities),
        quantity=quantity,
        announcement=bool(_ANNOUNCEMENT.search(text)),
        category=clean(category),
        text=canonical_text(text, spans),
    )
