"""The join on the committed labelled set, incremental against batch, and the evidence."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from benchmarks.matching_data import generate
from streams.matching.evidence import explain
from streams.matching.join import (
    Listing,
    Pair,
    Thresholds,
    VenueIndex,
    build_index,
    join,
    match_listing,
)

LABELLED = Path(__file__).resolve().parents[2] / "data" / "matching" / "labelled.csv"


def _labelled() -> list[dict[str, str]]:
    with LABELLED.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _decisions() -> tuple[list[dict[str, str]], dict[tuple[str, str], str]]:
    rows = _labelled()
    a = [
        Listing(f"a{i}", r["a_title"], dt.date.fromisoformat(r["a_close"]))
        for i, r in enumerate(rows)
    ]
    b = [
        Listing(f"b{i}", r["b_title"], dt.date.fromisoformat(r["b_close"]))
        for i, r in enumerate(rows)
    ]
    index_a, index_b = build_index(a), build_index(b)
    pairs = join(index_a, index_b).pairs(index_a, index_b)
    return rows, {(p.a_id, p.b_id): p.decision for p in pairs}


def test_join_labelled_set_covers_every_hard_negative_kind() -> None:
    kinds = {r["kind"] for r in _labelled()}
    assert kinds >= {
        "positive",
        "date",
        "strike",
        "direction",
        "city",
        "asset",
        "candidate",
        "team",
    }
    assert kinds >= {"party", "quantity", "unit"}


def test_join_labelled_positives_are_matched() -> None:
    # Act
    rows, decisions = _decisions()

    # Assert
    missed = [
        (r["a_title"], r["b_title"], decisions.get((f"a{i}", f"b{i}")))
        for i, r in enumerate(rows)
        if r["expected"] == "match" and decisions.get((f"a{i}", f"b{i}")) != "match"
    ]
    assert missed == []


def test_join_labelled_hard_negatives_are_not_matched() -> None:
    # Act
    rows, decisions = _decisions()

    # Assert: no labelled negative is a `match`; a match across rows is a positive's question
    # asked again by a negative's A side
    wrong = [
        (r["kind"], r["a_title"], r["b_title"])
        for i, r in enumerate(rows)
        if r["expected"] == "not_match" and decisions.get((f"a{i}", f"b{i}")) == "match"
    ]
    assert wrong == []
    for (a_id, b_id), decision in decisions.items():
        i, j = int(a_id[1:]), int(b_id[1:])
        if decision == "match" and i != j:
            assert rows[j]["expected"] == "match" and rows[i]["a_title"] == rows[j]["a_title"]


def test_join_by_versus_on_and_announcement_wording_are_warned_not_hidden() -> None:
    # Arrange
    a = build_index([
        Listing("k1", "Will BTC close above $100k on Dec 31?", dt.date(2024, 12, 31)),
        Listing("k2", "Will Apple announce a foldable iPhone by Jun 30, 2025?", dt.date(2025, 6, 30)),
    ])  # fmt: skip
    b = build_index([
        Listing("p1", "Bitcoin above 100,000 by end of year?", dt.date(2024, 12, 31)),
        Listing("p2", "Apple releases a foldable iPhone by June 30?", dt.date(2025, 6, 30)),
    ])  # fmt: skip

    # Act
    pairs = {(p.a_id, p.b_id): p for p in join(a, b).pairs(a, b)}

    # Assert
    by_on = explain(pairs[("k1", "p1")].flags)
    assert "date" in by_on.agreed and "strike" in by_on.agreed and by_on.differed == ()
    assert any("'by' a date" in w for w in by_on.warnings)
    assert any("announcement" in w for w in explain(pairs[("k2", "p2")].flags).warnings)


def test_join_hard_negative_evidence_names_both_values() -> None:
    # Arrange
    a = build_index(
        [Listing("k", "Will the high temp in NYC be >45° on Dec 1, 2024?", dt.date(2024, 12, 1))]
    )
    b = build_index(
        [Listing("p", "Highest temperature in NYC below 45°F on December 1?", dt.date(2024, 12, 2))]
    )

    # Act
    (pair,) = join(a, b).pairs(a, b)

    # Assert
    evidence = explain(pair.flags, a.params[0], b.params[0])
    assert pair.decision == "no_match"
    assert evidence.differed == ("direction: above 45 deg vs below 45 deg_f",)


def _venues(seed: int) -> tuple[list[Listing], list[Listing]]:
    venues = generate(n_a=150, n_b=1_500, seed=seed)

    def listings(rows: list[tuple[str, str, str, str]]) -> list[Listing]:
        return [Listing(i, t, dt.date.fromisoformat(c), cat) for i, t, c, cat in rows]

    return listings(venues.a), listings(venues.b)


def _key(pairs: list[Pair]) -> list[tuple[str, str, float, int, str, int]]:
    return [(p.a_id, p.b_id, p.score, p.rank, p.decision, p.flags) for p in pairs]


@pytest.mark.parametrize("seed", [3, 11])
def test_join_incremental_upserts_equal_a_full_rebuild(seed: int) -> None:
    # Arrange: B arrives in chunks and one at a time, some listings change and some are removed
    a_listings, b_listings = _venues(seed)
    changed = [
        dataclasses.replace(x, title=x.title.replace("?", " (updated)?")) for x in b_listings[:40]
    ]
    removed = [x.id for x in b_listings[40:60]]
    final_b = changed + b_listings[60:]
    index_a, index_b = build_index(a_listings), VenueIndex()
    index_b.upsert(b_listings[:700])
    for listing in b_listings[700:]:
        index_b.upsert([listing])
    index_b.upsert(changed)
    for listing_id in removed:
        assert index_b.remove(listing_id)

    # Act
    incremental = join(index_a, index_b).pairs(index_a, index_b)
    one_at_a_time = [
        p for row in sorted(range(len(a_listings)), key=lambda r: index_a.ids[r])
        for p in match_listing(index_a, row, index_b)
    ]  # fmt: skip
    rebuilt_b = build_index(sorted(final_b, key=lambda x: x.title))
    rebuilt = join(index_a, rebuilt_b).pairs(index_a, rebuilt_b)

    # Assert
    assert len(rebuilt) > len(a_listings)
    assert _key(incremental) == _key(rebuilt)
    assert _key(one_at_a_time) == _key(rebuilt)
    assert not {p.b_id for p in incremental} & set(removed)


def test_join_top_k_limits_rows_per_listing_and_ranks_from_one() -> None:
    # Arrange
    a_listings, b_listings = _venues(5)
    index_a, index_b = build_index(a_listings), build_index(b_listings)

    # Act
    pairs = join(index_a, index_b, Thresholds(top_k=3)).pairs(index_a, index_b)

    # Assert
    by_a: dict[str, list[int]] = {}
    for p in pairs:
        by_a.setdefault(p.a_id, []).append(p.rank)
    assert by_a and all(
        ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= 3 for ranks in by_a.values()
    )
    assert [p.a_id for p in pairs] == sorted(p.a_id for p in pairs)
