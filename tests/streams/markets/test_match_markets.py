"""`match_markets` in a worker on the real broker and database: listings of both venues become
pairs in market_matches and on md.matches.v1, a hard negative does not, and a person's decision
through POST /ops/matches survives a re-match and `python -m streams markets rebuild`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.request import urlopen

from conftest import RunningWorker, eventually, http_request, read_topic, run_module
from pm_fixtures import (
    BTC_105_P,
    BTC_K,
    BTC_P,
    BTC_PAIR,
    RECEIVED_US,
    TEMP_K,
    TEMP_P,
    TEMP_PAIR,
    pairs,
    publish_listings,
)

from shared.codec import Codec
from shared.models import ListingStatus, Match, MatchDecider, MatchDecision
from shared.publisher import Publisher
from shared.topics import MATCHES

OPS_KEY = "ops-key-4f2a"
AGENTS = "match_markets,flag_arbitrage"


def call(url: str, method: str = "GET", body: object = None, key: str = OPS_KEY) -> tuple[int, Any]:
    answer = http_request(url, method, body, key)
    return answer.status, answer.json()


def matches_on_topic(
    bootstrap: str, codec: Codec, want: Callable[[list[Match]], bool]
) -> list[Match]:
    messages = read_topic(
        bootstrap, MATCHES, lambda ms: want([codec.decode_match(m.value()) for m in ms])
    )
    return [codec.decode_match(m.value()) for m in messages]


async def test_match_markets_pairs_both_venues_and_a_persons_reject_sticks(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
    start_api: Callable[..., str],
) -> None:
    # Arrange
    start_worker(MS_WORKER_AGENTS=AGENTS)
    api = start_api(database_url, MS_API_OPS_KEYS=OPS_KEY)
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})

    # Act: Kalshi's listings first, then Polymarket's (each side finds the other)
    publish_listings(publisher, codec, BTC_K, TEMP_K)
    publish_listings(publisher, codec, BTC_P, BTC_105_P, TEMP_P)
    await eventually(
        lambda: {BTC_PAIR, TEMP_PAIR} <= set(pairs(database_url)), what="both pairs stored"
    )

    # Assert: the match and the review pair, with evidence; the other strike is no pair
    found = pairs(database_url)
    assert set(found) == {BTC_PAIR, TEMP_PAIR}
    btc_id, decision, auto, decided_by, score, evidence = found[BTC_PAIR]
    assert (decision, auto, decided_by) == ("match", "match", "auto")
    assert 0.5 < float(score) <= 1  # type: ignore[arg-type]
    assert {"date", "strike", "direction"} <= set(evidence["agreed"])  # type: ignore[index]
    assert found[TEMP_PAIR][1:4] == ("review", "review", "auto")
    on_topic = matches_on_topic(
        bootstrap, codec, lambda ms: {m.key for m in ms} >= {BTC_PAIR, TEMP_PAIR}
    )
    assert {(m.key, m.decision) for m in on_topic} == {
        (BTC_PAIR, MatchDecision.MATCH),
        (TEMP_PAIR, MatchDecision.REVIEW),
    }
    status, listed = call(f"{api}/ops/matches?status=review")
    assert status == 200
    assert [(m["a_key"], m["b_key"], m["b_title"]) for m in listed["matches"]] == [
        (TEMP_K.key, TEMP_P.key, TEMP_P.title)
    ]

    # Act: a person rejects the auto match; the Kalshi listing changes (a re-match), then a
    # full rebuild runs
    status, decided = call(f"{api}/ops/matches/{btc_id}", "POST", {"decision": "no_match"})
    assert status == 200 and (decided["decision"], decided["decided_by"]) == ("no_match", "person")
    changed = dataclasses.replace(
        BTC_K,
        rules="Resolves on the CF Benchmarks BRTI at 4pm ET.",
        ts_event_us=RECEIVED_US + 60_000_000,
    )
    publish_listings(publisher, codec, changed)
    await eventually(
        lambda: any(
            m.key == BTC_PAIR and m.decided_by is MatchDecider.PERSON
            for m in matches_on_topic(bootstrap, codec, lambda ms: True)
        ),
        what="the person's decision on md.matches.v1",
    )
    rebuilt = run_module(
        ["streams", "markets", "rebuild"],
        {"MS_DATABASE_URL": database_url, "MS_KAFKA_BOOTSTRAP": bootstrap},
    )

    # Assert: the decision stuck; the matcher's own verdict is kept beside it
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "re-matched" in rebuilt.stdout
    assert pairs(database_url)[BTC_PAIR][1:4] == ("no_match", "match", "person")
    assert pairs(database_url)[TEMP_PAIR][1:4] == ("review", "review", "auto")
    latest = {m.key: m for m in matches_on_topic(bootstrap, codec, lambda ms: True)}
    assert (latest[BTC_PAIR].decision, latest[BTC_PAIR].auto_decision) == (
        MatchDecision.NO_MATCH,
        MatchDecision.MATCH,
    )


def full_runs(url: str) -> float:
    for line in urlopen(f"{url}/metrics").read().decode().splitlines():
        if line.startswith("matching_run_seconds_count"):
            return float(line.split()[-1])
    return 0.0


async def test_match_markets_settled_listing_ends_its_pair(
    bootstrap: str,
    database_url: str,
    codec: Codec,
    start_worker: Callable[..., RunningWorker],
) -> None:
    # Arrange: a full matching run every second besides, which must agree with the stream's
    worker = start_worker(MS_WORKER_AGENTS=AGENTS, MS_MARKETS_FULL_RUN_S="1")
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publish_listings(publisher, codec, BTC_K, BTC_P)
    await eventually(lambda: BTC_PAIR in pairs(database_url), what="the pair stored")
    await eventually(lambda: full_runs(worker.url) >= 2, what="full runs timed")

    # Act
    settled = dataclasses.replace(
        BTC_P, status=ListingStatus.SETTLED, venue_status="closed", ts_event_us=RECEIVED_US + 1
    )
    publish_listings(publisher, codec, settled)

    # Assert: the pair ended, and consumers of md.matches.v1 learn it
    await eventually(
        lambda: pairs(database_url)[BTC_PAIR][1:4] == ("no_match", "no_match", "auto"),
        what="the pair ended",
    )
    latest = matches_on_topic(
        bootstrap, codec, lambda ms: any(m.decision is MatchDecision.NO_MATCH for m in ms)
    )
    assert [m.decision for m in latest if m.key == BTC_PAIR][-1] is MatchDecision.NO_MATCH
