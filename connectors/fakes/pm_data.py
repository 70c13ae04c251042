"""Made-up prediction markets for the fake Kalshi and Polymarket, with ground truth.

`generate(seed, kalshi=N, polymarket=M)` draws questions (a city's high temperature, a coin's
price on a day, a coin reaching a price by a day, a Fed decision, an NBA game, CPI inflation,
an election) and words each in the style of the venue that lists it: Kalshi's "Will the high
temp in NYC be >45° on Dec 1, 2025?" under ticker KXHIGHNY-25DEC01-T45, Polymarket's "Will
New York City's high temperature exceed 45°F on December 1?". A seeded fraction of the
questions is listed on both venues (`Universe.pairs`, the ground truth: which Kalshi ticker is
which Polymarket market, and which Polymarket outcome is Kalshi's YES); a further fraction are
hard negatives: a shared question with one parameter moved (the date, the strike, the
comparison's direction, the coin, the city, the team or opponent, the candidate), listed on one
venue only. Every other question is on one venue. No question is listed twice on a venue.

    python -m connectors.fakes.pm_data --kalshi 50000 --polymarket 3220 --out DIR

writes DIR/kalshi.csv and DIR/polymarket.csv (id,title,close_date,category) and DIR/truth.csv
(kalshi_id,polymarket_id,polymarket_yes_outcome), for the batch matcher and its benchmark.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final, Literal

Venue = Literal["kalshi", "polymarket"]
Kind = Literal["temp", "crypto", "reach", "fed", "game", "cpi", "election"]
KINDS: Final[tuple[Kind, ...]] = ("temp", "crypto", "reach", "fed", "game", "cpi", "election")
KIND_WEIGHTS: Final = (30, 20, 8, 6, 16, 8, 12)
FIRST_DAY: Final = date(2025, 12, 1)  # questions are about the half year from here
DAYS: Final = 180

# code: (Kalshi's short name, full name, Kalshi series)
CITIES: Final = {
    "NY": ("NYC", "New York City", "KXHIGHNY"),
    "CHI": ("Chicago", "Chicago", "KXHIGHCHI"),
    "MIA": ("Miami", "Miami", "KXHIGHMIA"),
    "AUS": ("Austin", "Austin", "KXHIGHAUS"),
    "LAX": ("LA", "Los Angeles", "KXHIGHLAX"),
    "DEN": ("Denver", "Denver", "KXHIGHDEN"),
    "PHIL": ("Philadelphia", "Philadelphia", "KXHIGHPHIL"),
}
# code: (name, Kalshi daily series, Kalshi max series, lowest strike, step, steps)
COINS: Final = {
    "BTC": ("Bitcoin", "KXBTCD", "KXBTCMAX", 60_000, 2_500, 40),
    "ETH": ("Ethereum", "KXETHD", "KXETHMAX", 2_000, 100, 40),
    "SOL": ("Solana", "KXSOLD", "KXSOLMAX", 100, 5, 40),
}
TEAMS: Final = {
    "LAL": ("Los Angeles Lakers", "Lakers"), "BOS": ("Boston Celtics", "Celtics"),
    "GSW": ("Golden State Warriors", "Warriors"), "NYK": ("New York Knicks", "Knicks"),
    "MIA": ("Miami Heat", "Heat"), "DEN": ("Denver Nuggets", "Nuggets"),
    "PHX": ("Phoenix Suns", "Suns"), "MIL": ("Milwaukee Bucks", "Bucks"),
    "DAL": ("Dallas Mavericks", "Mavericks"), "OKC": ("Oklahoma City Thunder", "Thunder"),
    "CLE": ("Cleveland Cavaliers", "Cavaliers"), "MIN": ("Minnesota Timberwolves", "Timberwolves"),
}  # fmt: skip
FOMC_DAYS: Final = (
    date(2025, 12, 10), date(2026, 1, 28), date(2026, 3, 18), date(2026, 4, 29),
    date(2026, 6, 17), date(2026, 7, 29), date(2026, 9, 16), date(2026, 10, 28),
)  # fmt: skip
# code: (race as worded, Kalshi series, election day)
RACES: Final = {
    "NJGOV": ("2026 New Jersey Senate race", "KXSENATENJ", date(2026, 11, 3)),
    "GAGOV": ("2026 Georgia governor race", "KXGOVGA", date(2026, 11, 3)),
    "AZGOV": ("2026 Arizona governor race", "KXGOVAZ", date(2026, 11, 3)),
    "LAMAY": ("2026 Los Angeles mayoral election", "KXMAYORLA", date(2026, 6, 2)),
    "OHSEN": ("2026 Ohio Senate race", "KXSENATEOH", date(2026, 11, 3)),
}
FIRST_NAMES: Final = ("Maria", "James", "Aisha", "Daniel", "Priya", "Robert", "Elena", "Marcus")
LAST_NAMES: Final = ("Alvarez", "Brennan", "Okafor", "Whitfield", "Nakamura", "Castillo", "Doyle")
KALSHI_CATEGORY: Final = {
    "temp": "Climate and Weather", "crypto": "Crypto", "reach": "Crypto", "fed": "Economics",
    "game": "Sports", "cpi": "Economics", "election": "Elections",
}  # fmt: skip
POLYMARKET_CATEGORY: Final = {
    "temp": "Weather", "crypto": "Crypto", "reach": "Crypto", "fed": "Economy",
    "game": "Sports", "cpi": "Economy", "election": "Politics",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Question:
    """What decides a market's outcome; two markets with equal questions are the same bet."""

    kind: Kind
    entity: str  # a city, coin, team or candidate code; "FED", "CPI"
    strike: float  # °F, dollars, basis points, percent; 0 where none
    above: bool  # the comparison (above / below); a cut (True) or a hike; unused for games
    day: date
    other: str = ""  # the opponent of a game, the race of a candidate


@dataclass(frozen=True, slots=True)
class Market:
    """One generated market as its venue lists it (venue-neutral; the fakes render the JSON)."""

    venue: Venue
    market_id: str
    event_id: str
    title: str
    subtitle: str
    rules: str
    category: str
    close_time: datetime
    outcomes: tuple[str, ...]
    yes_probability: float  # the fair price of outcomes[0]
    question: Question


@dataclass(frozen=True, slots=True)
class Pair:
    """Ground truth: a Kalshi market and a Polymarket market on the same question."""

    kalshi_id: str
    polymarket_id: str
    polymarket_yes_outcome: str  # the Polymarket outcome that is Kalshi's YES


@dataclass(frozen=True, slots=True)
class Universe:
    kalshi: tuple[Market, ...]
    polymarket: tuple[Market, ...]
    pairs: tuple[Pair, ...]
    negatives: tuple[tuple[str, str], ...]  # (kalshi id, polymarket id): one parameter apart


def _kalshi_day(day: date) -> str:
    return day.strftime("%y%b%d").upper()  # 25DEC01


def _short_day(day: date) -> str:
    return f"{day.strftime('%b')} {day.day}, {day.year}"  # Dec 1, 2025


def _long_day(day: date) -> str:
    return f"{day.strftime('%B')} {day.day}"  # December 1


def _money(value: float) -> str:
    return f"${value:,.0f}"


def _random_question(rng: random.Random, kind: Kind) -> Question:
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    above = rng.random() < 0.5
    if kind == "temp":
        return Question(kind, rng.choice(list(CITIES)), float(rng.randrange(20, 96)), above, day)
    if kind in ("crypto", "reach"):
        coin = rng.choice(list(COINS))
        _, _, _, low, step, steps = COINS[coin]
        return Question(
            kind, coin, float(low + step * rng.randrange(steps)), above or kind == "reach", day
        )
    if kind == "fed":
        return Question(kind, "FED", float(rng.choice((25, 50))), above, rng.choice(FOMC_DAYS))
    if kind == "game":
        team, other = rng.sample(list(TEAMS), 2)
        return Question(kind, team, 0.0, True, day, other)
    if kind == "cpi":
        month = date(2026, rng.randrange(1, 7), 1)
        return Question(kind, "CPI", round(2.0 + 0.1 * rng.randrange(21), 1), above, month)
    race = rng.choice(list(RACES))
    candidate = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    return Question("election", candidate, 0.0, True, RACES[race][2], race)


def _moved(rng: random.Random, q: Question) -> Question:
    """`q` with exactly one parameter changed: a hard negative."""
    options: list[Callable[[], Question]] = [
        lambda: dataclasses.replace(q, day=q.day + timedelta(days=rng.choice((-7, -1, 1, 2, 7))))
    ]
    if q.kind == "temp":
        options += [
            lambda: dataclasses.replace(q, strike=q.strike + rng.choice((-2.0, -1.0, 1.0, 2.0))),
            lambda: dataclasses.replace(q, above=not q.above),
            lambda: dataclasses.replace(q, entity=rng.choice([c for c in CITIES if c != q.entity])),
        ]
    elif q.kind in ("crypto", "reach"):
        step = COINS[q.entity][4]
        options += [lambda: dataclasses.replace(q, strike=q.strike + step * rng.choice((-1, 1)))]
        if q.kind == "crypto":
            options.append(lambda: dataclasses.replace(q, above=not q.above))
    elif q.kind == "fed":
        options = [
            lambda: dataclasses.replace(q, strike=75.0 - q.strike),
            lambda: dataclasses.replace(q, above=not q.above),
            lambda: dataclasses.replace(q, day=rng.choice([d for d in FOMC_DAYS if d != q.day])),
        ]
    elif q.kind == "game":
        options += [
            lambda: dataclasses.replace(
                q, other=rng.choice([t for t in TEAMS if t not in (q.entity, q.other)])
            ),
        ]
    elif q.kind == "cpi":
        options = [
            lambda: dataclasses.replace(q, strike=round(q.strike + rng.choice((-0.1, 0.1)), 1)),
            lambda: dataclasses.replace(q, above=not q.above),
            lambda: dataclasses.replace(q, day=date(2026, q.day.month % 6 + 1, 1)),
        ]
    else:  # election: another candidate, same race
        options = [
            lambda: dataclasses.replace(
                q, entity=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            )
        ]
    return rng.choice(options)()


def _kalshi(q: Question, rng: random.Random, taken: set[str]) -> Market:
    """`q` worded and ticketed as Kalshi lists it."""
    d, ymd = q.day, _kalshi_day(q.day)
    close = datetime.combine(d, time(22, 0), UTC)  # 5 pm New York
    subtitle = ""
    if q.kind == "temp":
        short, full, series = CITIES[q.entity]
        sign, word = (">", "greater than") if q.above else ("<", "less than")
        event, suffix = f"{series}-{ymd}", f"T{q.strike:.0f}"
        title = f"Will the high temp in {short} be {sign}{q.strike:.0f}° on {_short_day(d)}?"
        subtitle = f"{q.strike:.0f}° or above" if q.above else f"{q.strike - 1:.0f}° or below"
        rules = (
            f"If the highest temperature recorded in {full} for {_short_day(d)} as reported by "
            f"the National Weather Service's Climatological Report is {word} {q.strike:.0f}°, "
            "then the market resolves to Yes."
        )
    elif q.kind == "crypto":
        name, series = COINS[q.entity][0], COINS[q.entity][1]
        word = "above" if q.above else "below"
        event, suffix = f"{series}-{ymd}17", f"T{q.strike:.0f}"
        title = f"Will the {name} price be {word} {_money(q.strike)} on {_short_day(d)} at 5pm EST?"
        subtitle = f"{_money(q.strike)} or {'above' if q.above else 'below'}"
        rules = (
            f"If the simple average of the sixty seconds of CF Benchmarks' {name} Real-Time Index "
            f"before 5 PM EST on {_short_day(d)} is {word} {_money(q.strike)}, then the market "
            "resolves to Yes."
        )
    elif q.kind == "reach":
        name, series = COINS[q.entity][0], COINS[q.entity][2]
        event, suffix = f"{series}-{ymd}", f"{q.strike:.0f}"
        title = f"Will {name} hit {_money(q.strike)} by {_short_day(d)}?"
        rules = (
            f"If CF Benchmarks' {name} Real-Time Index is at or above {_money(q.strike)} at any "
            f"time before 11:59 PM EST on {_short_day(d)}, then the market resolves to Yes."
        )
    elif q.kind == "fed":
        action = "Cut" if q.above else "Hike"
        event, suffix = f"KXFEDDECISION-{d.strftime('%y%b').upper()}", f"{action[0]}{q.strike:.0f}"
        title = f"Will the Federal Reserve {action.lower()} rates by {q.strike:.0f}bps in {d.strftime('%b %Y')}?"
        subtitle = f"{action} {q.strike:.0f}bps"
        rules = (
            f"If the Federal Reserve {action.lower()}s the upper bound of the federal funds rate "
            f"by exactly {q.strike:.0f} basis points at its meeting ending {_short_day(d)}, then "
            "the market resolves to Yes."
        )
    elif q.kind == "game":
        team, other = TEAMS[q.entity], TEAMS[q.other]
        event, suffix = f"KXNBAGAME-{ymd}{q.entity}{q.other}", q.entity
        title = f"Will the {team[1]} beat the {other[1]} on {_short_day(d)}?"
        subtitle = team[0]
        rules = (
            f"If the {team[0]} win the {team[0]} vs {other[0]} professional basketball game "
            f"originally scheduled for {_short_day(d)}, then the market resolves to Yes."
        )
    elif q.kind == "cpi":
        word = "above" if q.above else "below"
        event, suffix = f"KXCPIYOY-{d.strftime('%y%b').upper()}", f"T{q.strike:.1f}"
        title = f"Will CPI inflation be {word} {q.strike:.1f}% in {d.strftime('%B %Y')}?"
        subtitle = f"{word.title()} {q.strike:.1f}%"
        rules = (
            f"If the year-over-year change in CPI-U for {d.strftime('%B %Y')}, as first released "
            f"by the Bureau of Labor Statistics, is {word} {q.strike:.1f}%, then the market "
            "resolves to Yes."
        )
    else:
        race, series, _ = RACES[q.other]
        initials = "".join(part[0] for part in q.entity.split()).upper()
        event, suffix = f"{series}-{d.strftime('%y')}", initials
        title = f"Will {q.entity} win the {race}?"
        subtitle = q.entity
        rules = (
            f"If {q.entity} is the certified winner of the {race}, then the market resolves to Yes."
        )
    ticker = f"{event}-{suffix}"
    n = 2
    while ticker in taken:  # two questions that Kalshi would name alike
        ticker, n = f"{event}-{suffix}{chr(ord('A') + n - 2)}", n + 1
    taken.add(ticker)
    return Market("kalshi", ticker, event, title, subtitle, rules, KALSHI_CATEGORY[q.kind],
                  close, ("Yes", "No"), _fair(rng), q)  # fmt: skip


def _polymarket(q: Question, rng: random.Random, market_id: str) -> Market:
    """`q` worded as Polymarket lists it (its own phrasings, drawn at random)."""
    d = q.day
    close = datetime.combine(d, time(12, 0), UTC)
    outcomes: tuple[str, ...] = ("Yes", "No")
    if q.kind == "temp":
        full = CITIES[q.entity][1]
        if q.above:
            title = rng.choice((
                f"Will {full}'s high temperature exceed {q.strike:.0f}°F on {_long_day(d)}?",
                f"Will the highest temperature in {full} be above {q.strike:.0f}°F on {_long_day(d)}?",
            ))  # fmt: skip
        else:
            title = rng.choice((
                f"Will {full}'s high temperature stay below {q.strike:.0f}°F on {_long_day(d)}?",
                f"Will the highest temperature in {full} be under {q.strike:.0f}°F on {_long_day(d)}?",
            ))  # fmt: skip
        rules = (
            f'This market will resolve to "Yes" if the highest temperature recorded at the '
            f"{full} NWS station on {_long_day(d)}, {d.year} is "
            f"{'higher' if q.above else 'lower'} than {q.strike:.0f}°F. Otherwise, it will "
            'resolve to "No".'
        )
    elif q.kind == "crypto":
        name, k = COINS[q.entity][0], q.strike / 1000
        word = "above" if q.above else "below"
        short = f"${k:g}k" if q.strike >= 10_000 else _money(q.strike)
        title = rng.choice((
            f"Will {name} be {word} {_money(q.strike)} on {_long_day(d)}?",
            f"{name} {word} {short} on {_long_day(d)}?",
            f"Will the price of {name} be {word} {_money(q.strike)} on {_long_day(d)}?",
        ))  # fmt: skip
        rules = (
            f'This market will resolve to "Yes" if the Binance 1 minute candle for '
            f"{q.entity}/USDT 12:00 in the ET timezone (noon) on {_long_day(d)} has a final "
            f'"Close" price {word} {_money(q.strike)}. Otherwise, "No".'
        )
    elif q.kind == "reach":
        name = COINS[q.entity][0]
        title = rng.choice((
            f"Will {name} reach {_money(q.strike)} by {_long_day(d)}?",
            f"{name} to hit {_money(q.strike)} by {_long_day(d)}?",
        ))  # fmt: skip
        rules = (
            f'This market will immediately resolve to "Yes" if any Binance 1 minute candle for '
            f'{q.entity}/USDT between now and {_long_day(d)}, 11:59 PM ET has a final "High" '
            f'price of {_money(q.strike)} or higher. Otherwise, "No".'
        )
    elif q.kind == "fed":
        verb = "decreases" if q.above else "increases"
        title = (
            f"Fed {verb} interest rates by {q.strike:.0f} bps after {d.strftime('%B %Y')} meeting?"
        )
        rules = (
            f'This market will resolve to "Yes" if the Federal Reserve {verb[:-1]}s the upper '
            f"bound of the target federal funds rate by {q.strike:.0f} bps after its "
            f'{d.strftime("%B %Y")} meeting. Otherwise, "No".'
        )
    elif q.kind == "game":
        team, other = TEAMS[q.entity][1], TEAMS[q.other][1]
        first, second = (team, other) if rng.random() < 0.5 else (other, team)
        title, outcomes = f"{first} vs. {second}", (first, second)
        rules = (
            f"In the upcoming NBA game, scheduled for {_long_day(d)}, {d.year}: if the {first} "
            f'win, the market will resolve to "{first}"; if the {second} win, to "{second}".'
        )
    elif q.kind == "cpi":
        word = "above" if q.above else "below"
        title = rng.choice((
            f"Will annual inflation be {word} {q.strike:.1f}% in {d.strftime('%B')}?",
            f"US inflation {word} {q.strike:.1f}% in {d.strftime('%B %Y')}?",
        ))  # fmt: skip
        rules = (
            f'This market will resolve to "Yes" if the annual (YoY) US CPI inflation for '
            f"{d.strftime('%B %Y')}, as released by the BLS, is {word} {q.strike:.1f}%."
        )
    else:
        race = RACES[q.other][0]
        title = rng.choice((f"Will {q.entity} win the {race}?", f"{race}: {q.entity} to win?"))
        rules = f'This market will resolve to "Yes" if {q.entity} wins the {race}.'
    fair = _fair(rng)
    return Market("polymarket", market_id, "0x" + _digest(market_id, 32), title, "", rules,
                  POLYMARKET_CATEGORY[q.kind], close, outcomes, fair, q)  # fmt: skip


def _fair(rng: random.Random) -> float:
    return round(rng.uniform(0.03, 0.97), 3)


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[: 2 * size]


def generate(
    seed: int = 7,
    *,
    kalshi: int = 300,
    polymarket: int = 300,
    shared: float = 0.3,
    negatives: float = 0.3,
) -> Universe:
    """Draw `kalshi` and `polymarket` markets; `shared` of the smaller side are listed on both,
    and `negatives` of those get a hard negative (one parameter moved) on one venue."""
    rng = random.Random(seed)
    seen: set[Question] = set()

    def fresh(make: Callable[[], Question], tries: int = 1000) -> Question | None:
        for _ in range(tries):
            if (q := make()) not in seen and q.strike >= 0:
                seen.add(q)
                return q
        return None

    def new() -> Question:
        if (q := fresh(draw)) is None:
            raise ValueError("too many markets for the generator's question space")
        return q

    def draw() -> Question:
        return _random_question(rng, rng.choices(KINDS, KIND_WEIGHTS)[0])

    n_shared = round(shared * min(kalshi, polymarket))
    n_negative = min(round(negatives * n_shared), kalshi + polymarket - 2 * n_shared)
    tickers: set[str] = set()
    ids = iter(range(500_000, 10**9, 1 + rng.randrange(7)))
    k_markets: list[Market] = []
    p_markets: list[Market] = []
    pairs: list[Pair] = []
    negative_pairs: list[tuple[str, str]] = []
    for _ in range(n_shared):
        q = new()
        k, p = _kalshi(q, rng, tickers), _polymarket(q, rng, str(next(ids)))
        k_markets.append(k)
        p_markets.append(p)
        yes = TEAMS[q.entity][1] if q.kind == "game" else "Yes"
        pairs.append(Pair(k.market_id, p.market_id, yes))
    i = 0
    for j in range(len(pairs) * 4):
        if i == n_negative:
            break
        base, k_base = pairs[j % len(pairs)], k_markets[j % len(pairs)]
        moved = fresh(lambda q=k_base.question: _moved(rng, q), tries=20)  # type: ignore[misc]
        if moved is None:
            continue  # every neighbour of this question is taken
        i += 1
        room_p = len(p_markets) < polymarket
        if room_p and (i % 2 == 0 or len(k_markets) >= kalshi):
            p = _polymarket(moved, rng, str(next(ids)))
            p_markets.append(p)
            negative_pairs.append((base.kalshi_id, p.market_id))
        else:
            k = _kalshi(moved, rng, tickers)
            k_markets.append(k)
            negative_pairs.append((k.market_id, base.polymarket_id))
    while len(k_markets) < kalshi:
        k_markets.append(_kalshi(new(), rng, tickers))
    while len(p_markets) < polymarket:
        p_markets.append(_polymarket(new(), rng, str(next(ids))))
    rng.shuffle(k_markets)
    rng.shuffle(p_markets)
    return Universe(tuple(k_markets), tuple(p_markets), tuple(pairs), tuple(negative_pairs))


def write_csvs(universe: Universe, out: Path) -> None:
    """kalshi.csv and polymarket.csv (id,title,close_date,category), truth.csv."""
    out.mkdir(parents=True, exist_ok=True)
    for name, markets in (("kalshi", universe.kalshi), ("polymarket", universe.polymarket)):
        with (out / f"{name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "title", "close_date", "category"])
            for m in markets:
                writer.writerow([m.market_id, m.title, m.close_time.date().isoformat(), m.category])
    with (out / "truth.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kalshi_id", "polymarket_id", "polymarket_yes_outcome"])
        writer.writerows(
            (p.kalshi_id, p.polymarket_id, p.polymarket_yes_outcome) for p in universe.pairs
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m connectors.fakes.pm_data", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kalshi", type=int, default=300)
    parser.add_argument("--polymarket", type=int, default=300)
    parser.add_argument("--shared", type=float, default=0.3)
    parser.add_argument("--negatives", type=float, default=0.3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    universe = generate(
        args.seed, kalshi=args.kalshi, polymarket=args.polymarket,
        shared=args.shared, negatives=args.negatives,
    )  # fmt: skip
    write_csvs(universe, args.out)
    print(
        f"{len(universe.kalshi)} kalshi, {len(universe.polymarket)} polymarket, "
        f"{len(universe.pairs)} pairs, {len(universe.negatives)} hard negatives -> {args.out}"
    )


if __name__ == "__main__":
    main()
