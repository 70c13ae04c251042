"""The backfill's ops endpoints on the HTTP API: a repair asked for by an operator is queued
once, dead letters are listed with their errors and requeued; every route wants an ops key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from conftest import http_request

from shared.backfill import queue

OPS_KEY = "ops-key-9c1d"
READ_KEY = "read-key-2b7e"


def call(
    url: str, method: str = "GET", body: object = None, key: str | None = OPS_KEY
) -> tuple[int, Any]:
    answer = http_request(url, method, body, key)
    return answer.status, answer.json()


@pytest.fixture
def api(database_url: str, start_api: Callable[..., str]) -> str:
    return start_api(database_url, MS_API_OPS_KEYS=f"other,{OPS_KEY}", MS_API_KEYS=READ_KEY)


REQUEST = {
    "instrument": "AAPL",
    "interval": "1m",
    "start": "2025-03-12T14:41:00Z",
    "end": "2025-03-12T14:51:00Z",
    "priority": 1,
}


def test_ops_backfill_queues_a_manual_repair_once(api: str, database_url: str) -> None:
    status, body = call(f"{api}/ops/backfill", "POST", REQUEST)
    again = call(f"{api}/ops/backfill", "POST", REQUEST)

    assert status == 202 and again == (202, body)
    with psycopg.connect(database_url) as conn:
        job = conn.execute(
            "select instrument, interval, extract(epoch from start_ts), extract(epoch from end_ts),"
            " priority, status, gap_id from backfill_jobs"
        ).fetchall()
        gap = conn.execute("select id, cause, status from gaps").fetchall()
    assert job == [("AAPL", "1m", 1741790460, 1741791060, 1, "queued", body["gap"])]
    assert gap == [(body["gap"], "manual", "queued")]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "line 1 column 1"),
        ({**REQUEST, "interval": "7q"}, "interval"),
        ({**REQUEST, "end": REQUEST["start"]}, "end must be after start"),
        ({**REQUEST, "start": "2025-03-12T14:41:00"}, "with a zone"),
        ({**REQUEST, "instrument": "A A"}, "whitespace"),
        ({**REQUEST, "priority": 12}, "priority"),
    ],
)
def test_ops_backfill_refuses_a_bad_request_saying_why(api: str, body: object, says: str) -> None:
    status, answer = call(f"{api}/ops/backfill", "POST", body)

    assert status == 400 and says in answer["error"]


async def test_ops_dead_letters_are_listed_with_their_errors_and_requeued(
    api: str, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await queue.enqueue(
            conn, instrument="MSFT", interval="1m", start_us=1741790460000000,
            end_us=1741791060000000, priority=0, provider="alpaca",
        )  # fmt: skip
        job = await queue.claim(conn, "worker-a")
        assert job is not None
        dlq_id = await queue.fail(conn, job.id, "alpaca answered 500 five times")

    status, listed = await asyncio.to_thread(call, f"{api}/ops/dlq/backfills")
    assert status == 200
    (letter,) = listed["dead_letters"]
    assert (letter["id"], letter["instrument"], letter["start"]) == (
        dlq_id,
        "MSFT",
        "2025-03-12T14:41:00Z",
    )
    assert [e["error"] for e in letter["errors"]] == ["alpaca answered 500 five times"]

    status, requeued = await asyncio.to_thread(
        call, f"{api}/ops/dlq/backfills/requeue/{dlq_id}", "POST"
    )
    assert status == 202 and requeued["job"] != job.id
    assert (await asyncio.to_thread(call, f"{api}/ops/dlq/backfills/requeue/999999", "POST"))[
        0
    ] == 404


@pytest.mark.parametrize("key", [None, "wrong", READ_KEY])
def test_ops_routes_refuse_a_missing_wrong_or_read_only_key(api: str, key: str | None) -> None:
    for method, path in [
        ("POST", "/ops/backfill"),
        ("GET", "/ops/dlq/backfills"),
        ("POST", "/ops/dlq/backfills/requeue/1"),
    ]:
        status, body = call(f"{api}{path}", method, REQUEST if method == "POST" else None, key)
        assert (status, body) == (401, {"error": "unknown or missing ops API key"})


async def test_ops_requests_at_once_are_each_committed(api: str, database_url: str) -> None:
    spans = [
        {**REQUEST, "start": f"2025-03-12T15:{m:02d}:00Z", "end": f"2025-03-12T15:{m + 1:02d}:00Z"}
        for m in range(20)
    ]

    answers = await asyncio.gather(
        *(asyncio.to_thread(call, f"{api}/ops/backfill", "POST", span) for span in spans)
    )

    assert [status for status, _ in answers] == [202] * 20
    with psycopg.connect(database_url) as conn:  # another session sees every job
        (jobs,) = conn.execute("select count(*) from backfill_jobs").fetchone() or (0,)
    assert jobs == 20
