"""Two seeded venues of prediction-market listings for the `matching` scenario, with ground truth.

Venue A is written in Kalshi's style ("Will the high temp in NYC be >45° on Dec 1, 2024?"),
venue B in Polymarket's ("Highest temperature in New York City above 45°F on December 1?").
Each question is a tuple of parameters (its key). Some A questions are re-phrased into B (the
positives); around them B gets hard negatives that move exactly one parameter (date, strike,
direction, city, asset, candidate, team, party, measured quantity); the rest of B is drawn at
random. Keys are unique per venue, so a pair is positive exactly when its keys are equal.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

FIRST_DAY: Final = dt.date(2024, 11, 1)
DAYS: Final = 425
CRYPTO: Final[dict[str, tuple[str, list[float]]]] = {  # ticker, name, strike grid
    "BTC": ("Bitcoin", [60_000 + 2_500 * i for i in range(40)]),
    "ETH": ("Ethereum", [2_000 + 100 * i for i in range(30)]),
    "SOL": ("Solana", [100 + 10 * i for i in range(25)]),
    "XRP": ("XRP", [round(0.5 + 0.1 * i, 2) for i in range(25)]),
    "DOGE": ("Dogecoin", [round(0.10 + 0.02 * i, 2) for i in range(25)]),
}
INDEXES: Final[dict[str, tuple[str, list[float]]]] = {
    "S&P 500": ("S&P 500", [5_000 + 50 * i for i in range(40)]),
    "NASDAQ-100": ("Nasdaq 100", [18_000 + 200 * i for i in range(30)]),
    "TSLA": ("Tesla", [200 + 10 * i for i in range(30)]),
    "NVDA": ("Nvidia", [100 + 5 * i for i in range(30)]),
}
CITIES: Final = {
    "NYC": "New York City", "Chicago": "Chicago", "Miami": "Miami", "LA": "Los Angeles",
    "Austin": "Austin", "Denver": "Denver", "Philadelphia": "Philadelphia", "Houston": "Houston",
}  # fmt: skip
PEOPLE: Final = {
    "Trump": "Donald Trump", "Harris": "Kamala Harris", "Vance": "JD Vance",
    "Newsom": "Gavin Newsom", "DeSantis": "Ron DeSantis", "Haley": "Nikki Haley",
    "Shapiro": "Josh Shapiro", "Buttigieg": "Pete Buttigieg", "Rubio": "Marco Rubio",
    "Whitmer": "Gretchen Whitmer", "Ocasio-Cortez": "Alexandria Ocasio-Cortez",
}  # fmt: skip
TEAMS: Final = {
    "Super Bowl": ["Chiefs", "Eagles", "Bills", "Ravens", "Lions", "49ers", "Cowboys", "Packers"],
    "NBA Finals": ["Celtics", "Lakers", "Nuggets", "Knicks", "Warriors", "Thunder"],
}
TEAM_CITY: Final = {
    "Chiefs": "Kansas City", "Eagles": "Philadelphia", "Bills": "Buffalo", "Ravens": "Baltimore",
    "Lions": "Detroit", "49ers": "San Francisco", "Cowboys": "Dallas", "Packers": "Green Bay",
    "Celtics": "Boston", "Lakers": "Los Angeles", "Nuggets": "Denver", "Knicks": "New York",
    "Warriors": "Golden State", "Thunder": "Oklahoma City",
}  # fmt: skip
INDICATORS: Final = {
    "CPI": "CPI inflation",
    "unemployment": "unemployment rate",
    "GDP": "GDP growth",
}
FED: Final = ("cut25", "cut50", "hike25", "hold")
CHAMBERS: Final = {"Senate": list(range(44, 60)), "House": list(range(200, 240, 2))}
NOMINATION_PARTY: Final = {"Trump": "Republican", "Vance": "Republican", "DeSantis": "Republican",
                           "Haley": "Republican", "Rubio": "Republican"}  # fmt: skip
HARD_KINDS: Final[tuple[str, ...]] = ("date", "strike", "direction", "city", "asset", "candidate", "team",
                     "party", "quantity")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Question:
    """One question's parameters; equal questions are the same market."""

    family: str
    subject: str  # the asset, city, person, team, party or indicator
    day: dt.date  # the decisive day (a period's last day for monthly and yearly questions)
    direction: str = ""  # above, below, between; cut/hike/hold for the Fed
    strike: float = 0.0
    strike_high: float = 0.0
    variant: str = ""  # high/low temperature, Senate/House, championship, race


@dataclass(frozen=True, slots=True)
class Venues:
    """Both venues' listings (id, title, close_date, category) and the truth about their pairs."""

    a: list[tuple[str, str, str, str]]
    b: list[tuple[str, str, str, str]]
    positives: set[tuple[str, str]]
    hard_negatives: dict[tuple[str, str], str]  # pair -> the parameter kind that moved


def _money(x: float, style: str) -> str:
    if x >= 1000 and style == "k" and x % 1000 == 0:
        return f"${x / 1000:g}k"
    if x >= 1000:
        return f"${x:,.0f}" if style != "plain" else f"{x:,.0f}"
    return f"${x:g}" if style != "plain" else f"{x:g}"


def _kalshi_day(d: dt.date, rng: random.Random) -> str:
    return f"{d:%b} {d.day}, {d.year}" if rng.random() < 0.8 else f"{d:%b} {d.day}"


def _poly_day(d: dt.date, rng: random.Random) -> str:
    return f"{d:%B} {d.day}" if rng.random() < 0.8 else f"{d:%B} {d.day}, {d.year}"


def _month_end(year: int, month: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def _draw(rng: random.Random) -> Question:
    family = rng.choices(
        ["crypto", "index", "weather", "fed", "macro", "seats", "election", "sports"],
        weights=[30, 12, 40, 2, 6, 3, 3, 4],
    )[0]
    day = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS))
    if family in ("crypto", "index"):
        table = CRYPTO if family == "crypto" else INDEXES
        ticker = rng.choice(list(table))
        return Question(
            family, ticker, day, rng.choice(["above", "below"]), rng.choice(table[ticker][1])
        )
    if family == "weather":
        direction = rng.choice(["above", "below", "between"])
        strike = float(rng.randrange(20, 100))
        high = strike + 1 if direction == "between" else 0.0
        return Question(family, rng.choice(list(CITIES)), day, direction, strike, high,
                        rng.choice(["high", "low"]))  # fmt: skip
    if family == "fed":
        month = rng.randrange(24)
        end = _month_end(2025 + month // 12, month % 12 + 1)
        return Question(family, "Fed", end, rng.choice(FED))
    if family == "macro":
        month = rng.randrange(18)
        end = _month_end(2024 + (month + 10) // 12, (month + 10) % 12 + 1)
        strike = round(1.5 + 0.1 * rng.randrange(30), 1)
        return Question(
            family, rng.choice(list(INDICATORS)), end, rng.choice(["above", "below"]), strike
        )
    if family == "seats":
        chamber = rng.choice(list(CHAMBERS))
        year = rng.choice([2024, 2026, 2028])
        return Question(family, rng.choice(["Democrats", "Republicans"]), dt.date(year, 12, 31),
                        rng.choice(["above", "below"]), rng.choice(CHAMBERS[chamber]), 0.0, chamber)  # fmt: skip
    if family == "election":
        year = rng.choice([2024, 2028, 2032])
        return Question(
            family,
            rng.choice(list(PEOPLE)),
            dt.date(year, 12, 31),
            variant=rng.choice(["win", "popular"]),
        )
    league = rng.choice(list(TEAMS))
    year = rng.randrange(2025, 2031)
    return Question(family, rng.choice(TEAMS[league]), dt.date(year, 12, 31), variant=league)


def _kalshi(q: Question, rng: random.Random) -> tuple[str, dt.date, str]:
    """Title, close date and category of `q` as Kalshi words it."""
    sign = {"above": ">", "below": "<"}
    if q.family in ("crypto", "index"):
        word = {"above": "above", "below": "below"}[q.direction]
        price = _money(q.strike, rng.choice(["k", "comma"]))
        title = rng.choice([
            f"Will {q.subject} close {word} {price} on {_kalshi_day(q.day, rng)}?",
            f"Will the {q.subject} price be {word} {price} on {_kalshi_day(q.day, rng)}?",
            f"{q.subject} {word} {price} on {_kalshi_day(q.day, rng)}?",
        ])  # fmt: skip
        return title, q.day, "Crypto" if q.family == "crypto" else "Financials"
    if q.family == "weather":
        value = (f"{q.strike:g}-{q.strike_high:g}°" if q.direction == "between"
                 else f"{sign[q.direction]}{q.strike:g}°")  # fmt: skip
        return (f"Will the {q.variant} temp in {q.subject} be {value} on {_kalshi_day(q.day, rng)}?",
                q.day, "Climate and Weather")  # fmt: skip
    if q.family == "fed":
        month = f"{q.day:%B %Y}"
        title = {
            "cut25": f"Will the Fed cut rates by 25bps in {month}?",
            "cut50": f"Will the Fed cut rates by 50bps in {month}?",
            "hike25": f"Will the Fed hike rates by 25bps in {month}?",
            "hold": f"Will the Fed hold rates steady in {month}?",
        }[q.direction]
        return title, q.day, "Economics"
    if q.family == "macro":
        word = (
            rng.choice(["above", "over"])
            if q.direction == "above"
            else rng.choice(["below", "under"])
        )
        return (f"Will {INDICATORS[q.subject]} be {word} {q.strike:g}% in {q.day:%B %Y}?",
                q.day + dt.timedelta(days=12), "Economics")  # fmt: skip
    if q.family == "seats":
        word = "at least" if q.direction == "above" else "fewer than"
        return (f"Will {q.subject} win {word} {q.strike:g} {q.variant} seats in {q.day.year}?",
                dt.date(q.day.year, 11, 10), "Politics")  # fmt: skip
    if q.family == "election":
        what = "the popular vote in" if q.variant == "popular" else "the"
        return (f"Will {q.subject} win {what} {q.day.year} presidential election?",
                dt.date(q.day.year, 11, 8), "Politics")  # fmt: skip
    return (f"Will the {TEAM_CITY[q.subject]} {q.subject} win the {q.day.year} {q.variant}?",
            dt.date(q.day.year, 6, 30), "Sports")  # fmt: skip


def _poly(q: Question, rng: random.Random) -> tuple[str, dt.date, str]:
    """Title, close date and category of `q` as Polymarket words it."""
    if q.family in ("crypto", "index"):
        name = (CRYPTO if q.family == "crypto" else INDEXES)[q.subject][0]
        word = {"above": rng.choice(["above", "over"]), "below": rng.choice(["below", "under"])}[
            q.direction
        ]
        price = _money(q.strike, rng.choice(["plain", "comma", "k"]))
        title = rng.choice([
            f"{name} {word} {price} on {_poly_day(q.day, rng)}?",
            f"Will {name} be {word} {price} on {_poly_day(q.day, rng)}?",
            f"{name} price on {_poly_day(q.day, rng)}: {word} {price}?",
        ])  # fmt: skip
        return title, q.day + dt.timedelta(days=1), "Crypto" if q.family == "crypto" else "Finance"
    if q.family == "weather":
        label = "Highest" if q.variant == "high" else "Lowest"
        city = CITIES[q.subject] if rng.random() < 0.7 else q.subject
        if q.direction == "between":
            value = f"between {q.strike:g}°F and {q.strike_high:g}°F"
        else:
            value = (
                f"{q.direction} {q.strike:g}°F"
                if rng.random() < 0.5
                else (f"{q.strike:g}°F or {'higher' if q.direction == 'above' else 'lower'}")
            )
        return (f"{label} temperature in {city} {value} on {_poly_day(q.day, rng)}?",
                q.day + dt.timedelta(days=1), "Weather")  # fmt: skip
    if q.family == "fed":
        month = f"{q.day:%B %Y}"
        title = {
            "cut25": f"Fed decreases interest rates by 25 bps after {month} meeting?",
            "cut50": f"Fed decreases interest rates by 50+ bps after {month} meeting?",
            "hike25": f"Fed increases interest rates by 25+ bps after {month} meeting?",
            "hold": f"No change in Fed interest rates after {month} meeting?",
        }[q.direction]
        return title, q.day, "Economy"
    if q.family == "macro":
        short = {"CPI": "CPI", "unemployment": "Unemployment", "GDP": "GDP growth"}[q.subject]
        word = "above" if q.direction == "above" else "below"
        title = rng.choice([f"{q.day:%B %Y} {short} {word} {q.strike:g}%?",
                            f"US {short} {word} {q.strike:g}% in {q.day:%B %Y}?"])  # fmt: skip
        return title, q.day + dt.timedelta(days=14), "Economy"
    if q.family == "seats":
        value = f"{q.strike:g}+" if q.direction == "above" else f"under {q.strike:g}"
        return (f"{q.subject} {value} {q.variant} seats after {q.day.year} election?",
                dt.date(q.day.year, 11, 20), "Politics")  # fmt: skip
    if q.family == "election":
        what = "Popular Vote Winner" if q.variant == "popular" else "Presidential Election Winner"
        return f"{what} {q.day.year}: {PEOPLE[q.subject]}?", dt.date(q.day.year, 11, 30), "Politics"
    event = "Super Bowl Champion" if q.variant == "Super Bowl" else "NBA Champion"
    return f"{event} {q.day.year}: {q.subject}?", dt.date(q.day.year, 7, 1), "Sports"


def _moves(q: Question) -> dict[str, Callable[[random.Random], Question]]:
    """The one-parameter moves that apply to `q`, by kind."""
    rep = dataclasses.replace
    moves: dict[str, Callable[[random.Random], Question]] = {}
    if q.family in ("crypto", "index", "weather"):
        moves["date"] = lambda r: rep(q, day=q.day + dt.timedelta(days=r.choice([-2, -1, 1, 2, 7])))
    elif q.family in ("fed", "macro"):
        moves["date"] = lambda r: rep(
            q, day=_month_end(q.day.year + q.day.month // 12, q.day.month % 12 + 1)
        )
    if q.family in ("crypto", "index"):
        grid = (CRYPTO if q.family == "crypto" else INDEXES)[q.subject][1]
        i = grid.index(q.strike)
        moves["strike"] = lambda r: rep(q, strike=grid[i + 1] if i + 1 < len(grid) else grid[i - 1])
        moves["direction"] = lambda r: rep(
            q, direction="below" if q.direction == "above" else "above"
        )
        others = [t for t in (CRYPTO if q.family == "crypto" else INDEXES) if t != q.subject]
        moves["asset"] = lambda r: rep(q, subject=r.choice(others))
    if q.family == "weather":
        moves["strike"] = lambda r: rep(
            q, strike=q.strike + 2, strike_high=q.strike_high and q.strike_high + 2
        )
        moves["direction"] = lambda r: rep(
            q, direction="below" if q.direction == "above" else "above", strike_high=0.0
        )
        moves["city"] = lambda r: rep(q, subject=r.choice([c for c in CITIES if c != q.subject]))
        moves["quantity"] = lambda r: rep(q, variant="low" if q.variant == "high" else "high")
    if q.family == "fed":
        moves["direction"] = lambda r: rep(
            q, direction={"cut25": "hike25", "hike25": "cut25"}.get(q.direction, "cut25")
        )
        if q.direction in ("cut25", "cut50"):
            moves["strike"] = lambda r: rep(
                q, direction="cut50" if q.direction == "cut25" else "cut25"
            )
    if q.family == "macro":
        moves["strike"] = lambda r: rep(q, strike=round(q.strike + 0.1, 1))
        moves["direction"] = lambda r: rep(
            q, direction="below" if q.direction == "above" else "above"
        )
        moves["quantity"] = lambda r: rep(
            q, subject=r.choice([s for s in INDICATORS if s != q.subject])
        )
    if q.family == "seats":
        seats = CHAMBERS[q.variant]
        at = seats.index(int(q.strike))
        moves["strike"] = lambda r: rep(
            q, strike=seats[at + 1] if at + 1 < len(seats) else seats[at - 1]
        )
        moves["direction"] = lambda r: rep(
            q, direction="below" if q.direction == "above" else "above"
        )
        moves["party"] = lambda r: rep(
            q, subject="Republicans" if q.subject == "Democrats" else "Democrats"
        )
    if q.family == "election":
        moves["candidate"] = lambda r: rep(
            q, subject=r.choice([p for p in PEOPLE if p != q.subject])
        )
        moves["quantity"] = lambda r: rep(q, variant="popular" if q.variant == "win" else "win")
    if q.family == "sports":
        moves["team"] = lambda r: rep(
            q, subject=r.choice([t for t in TEAMS[q.variant] if t != q.subject])
        )
        moves["date"] = lambda r: rep(q, day=dt.date(q.day.year + 1, 12, 31))
    return moves


def generate(
    n_a: int = 3_220, n_b: int = 50_000, seed: int = 42, positive_share: float = 0.7
) -> Venues:
    """Return two venues of `n_a` and `n_b` listings; about `positive_share` of A has a twin in B."""
    rng = random.Random(seed)
    a_keys: dict[Question, str] = {}
    while len(a_keys) < n_a:
        q = _draw(rng)
        if q not in a_keys:
            a_keys[q] = f"KX{len(a_keys):05d}"
    b_keys: dict[Question, str] = {}
    hard: dict[tuple[str, str], str] = {}

    def add_b(q: Question) -> str | None:
        if q in b_keys or len(b_keys) >= n_b:
            return None
        b_keys[q] = f"{500_000 + len(b_keys) * 7 % 1_000_000}"
        return b_keys[q]

    for q, a_id in a_keys.items():
        if rng.random() < positive_share:
            add_b(q)
        moves = _moves(q)
        for kind in rng.sample(sorted(moves), k=min(len(moves), rng.choice([1, 2, 3]))):
            moved = moves[kind](rng)
            if moved != q and moved not in a_keys:
                b_id = add_b(moved)
                if b_id is not None:
                    hard[(a_id, b_id)] = kind
    while len(b_keys) < n_b:
        q = _draw(rng)
        if q not in a_keys:
            add_b(q)
    a_rows = [(i, *_render(_kalshi(q, rng))) for q, i in a_keys.items()]
    b_rows = [(i, *_render(_poly(q, rng))) for q, i in b_keys.items()]
    rng.shuffle(b_rows)
    positives = {(a_id, b_keys[q]) for q, a_id in a_keys.items() if q in b_keys}
    return Venues(a_rows, b_rows, positives, hard)


def _render(listing: tuple[str, dt.date, str]) -> tuple[str, str, str]:
    title, close, category = listing
    return title, close.isoformat(), category


def write_csv(rows: list[tuple[str, str, str, str]], path: Path) -> None:
    """Write listings in the batch CLI's input format."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("id", "title", "close_date", "category"))
        writer.writerows(rows)
