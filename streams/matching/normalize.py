"""Listing text made comparable: cleaned, lower-cased, aliases and numbers in one spelling.

The alias table is deliberately small and explicit: an entity missing from it is invisible to
the parameter check (only the text vector sees it), which the README says. Aliases match whole
words, longest first, so "philadelphia eagles" is the team and "philadelphia" the city.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

# canonical name -> (kind, aliases); a canonical name is also its own alias
ENTITIES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    # assets and tickers
    "bitcoin": ("asset", ("btc", "xbt", "bitcoin")),
    "ethereum": ("asset", ("eth", "ether", "ethereum")),
    "solana": ("asset", ("sol", "solana")),
    "xrp": ("asset", ("xrp", "ripple")),
    "dogecoin": ("asset", ("doge", "dogecoin")),
    "tesla": ("asset", ("tsla", "tesla")),
    "nvidia": ("asset", ("nvda", "nvidia")),
    "apple": ("asset", ("aapl", "apple")),
    "sp500": ("asset", ("s&p 500", "s&p500", "spx", "sp500", "s&p")),
    "nasdaq100": ("asset", ("nasdaq 100", "nasdaq-100", "ndx", "nasdaq")),
    "gold": ("asset", ("gold", "xau")),
    "oil": ("asset", ("wti", "crude oil", "oil")),
    # cities
    "new_york": ("city", ("nyc", "new york city", "new york", "ny", "manhattan")),
    "chicago": ("city", ("chicago", "chi")),
    "miami": ("city", ("miami", "mia")),
    "los_angeles": ("city", ("los angeles", "la", "lax")),
    "austin": ("city", ("austin", "aus")),
    "denver": ("city", ("denver", "den")),
    "philadelphia": ("city", ("philadelphia", "philly", "phl")),
    "houston": ("city", ("houston", "hou")),
    "seattle": ("city", ("seattle",)),
    "boston": ("city", ("boston",)),
    "phoenix": ("city", ("phoenix",)),
    "dallas": ("city", ("dallas", "dfw")),
    # people
    "trump": ("person", ("donald trump", "donald j. trump", "trump")),
    "harris": ("person", ("kamala harris", "harris", "kamala")),
    "biden": ("person", ("joe biden", "biden")),
    "vance": ("person", ("jd vance", "j.d. vance", "vance")),
    "newsom": ("person", ("gavin newsom", "newsom")),
    "desantis": ("person", ("ron desantis", "desantis")),
    "haley": ("person", ("nikki haley", "haley")),
    "shapiro": ("person", ("josh shapiro", "shapiro")),
    "buttigieg": ("person", ("pete buttigieg", "buttigieg")),
    "ocasio_cortez": ("person", ("alexandria ocasio-cortez", "ocasio-cortez", "aoc")),
    "rubio": ("person", ("marco rubio", "rubio")),
    "whitmer": ("person", ("gretchen whitmer", "whitmer")),
    "musk": ("person", ("elon musk", "musk")),
    "powell": ("person", ("jerome powell", "jay powell", "powell")),
    # organisations and parties
    "fed": ("org", ("federal reserve", "the fed", "fomc", "fed")),
    "democrats": ("org", ("democratic party", "democrats", "democratic", "democrat", "dems")),
    "republicans": ("org", ("republican party", "republicans", "republican", "gop")),
    # teams
    "chiefs": ("team", ("kansas city chiefs", "kc chiefs", "chiefs")),
    "eagles": ("team", ("philadelphia eagles", "eagles")),
    "bills": ("team", ("buffalo bills", "bills")),
    "ravens": ("team", ("baltimore ravens", "ravens")),
    "lions": ("team", ("detroit lions", "lions")),
    "49ers": ("team", ("san francisco 49ers", "49ers", "niners")),
    "cowboys": ("team", ("dallas cowboys", "cowboys")),
    "packers": ("team", ("green bay packers", "packers")),
    "celtics": ("team", ("boston celtics", "celtics")),
    "lakers": ("team", ("los angeles lakers", "la lakers", "lakers")),
    "nuggets": ("team", ("denver nuggets", "nuggets")),
    "knicks": ("team", ("new york knicks", "ny knicks", "knicks")),
    "warriors": ("team", ("golden state warriors", "warriors")),
    "thunder": ("team", ("oklahoma city thunder", "okc thunder", "thunder")),
    "yankees": ("team", ("new york yankees", "ny yankees", "yankees")),
    "dodgers": ("team", ("los angeles dodgers", "la dodgers", "dodgers")),
    # offices and competitions
    "president": ("office", ("presidential election", "presidency", "president", "presidential")),
    "senate": ("office", ("senate",)),
    "house": ("office", ("house of representatives", "house")),
    "super_bowl": ("event", ("super bowl", "superbowl")),
    "nba_finals": ("event", ("nba finals", "nba championship", "nba champion")),
    "world_series": ("event", ("world series",)),
}

ENTITY_KINDS: Final = ("asset", "city", "person", "org", "team", "office", "event")
# Kinds that set the scene rather than name the subject: one side may leave them out
CONTEXT_KINDS: Final = frozenset(("office", "event"))

_ALIAS_TO_NAME: Final[dict[str, str]] = {
    alias: name for name, (_, aliases) in ENTITIES.items() for alias in (*aliases, name)
}
ENTITY_PATTERN: Final = re.compile(
    r"(?<![\w&])("
    + "|".join(re.escape(a) for a in sorted(_ALIAS_TO_NAME, key=len, reverse=True))
    + r")(?![\w&])"
)

_TRANSLATE: Final = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2265": ">=",
        "\u2264": "<=",
        "\u00ba": "\u00b0",
    }
)
_SPACES: Final = re.compile(r"\s+")
_PUNCT: Final = re.compile(r"[?!:;\"()\[\]]|(?<!\d)[.,](?!\d)")
STOPWORDS: Final = frozenset(("will", "the", "be", "a", "an", "of", "is", "to", "in", "at", "for"))


def clean(text: str) -> str:
    """Return `text` NFKC-normalized, lower-cased, with one spelling of quotes, dashes and spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).lower()
    return _SPACES.sub(" ", text).strip()


def entity_name(alias: str) -> str:
    """Return the canonical name of an alias matched by ENTITY_PATTERN (raise KeyError if none)."""
    return _ALIAS_TO_NAME[alias]


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch [start, end) of cleaned text and the canonical words that stand for it."""

    start: int
    end: int
    canonical: str


def canonical_text(cleaned: str, spans: list[Span]) -> str:
    """Return `cleaned` with non-overlapping `spans` replaced, punctuation and stopwords dropped.

    Overlapping spans keep the earliest-starting (then longest) one.
    """
    parts: list[str] = []
    at = 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.start < at:
            continue
        parts.append(cleaned[at : span.start])
        parts.append(f" {span.canonical} ")
        at = span.end
    parts.append(cleaned[at:])
    words = _PUNCT.sub(" ", "".join(parts)).split()
    return " ".join(w for w in words if w not in STOPWORDS)
