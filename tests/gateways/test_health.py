"""`/health` reports the broker and the database, and says 503 when one is unreachable."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import pytest
from conftest import wait_http

from streams.embedded.ports import free_port


def test_health_with_broker_and_database_up_is_ok(
    database_url: str, start_api: Callable[[str], str]
) -> None:
    url = start_api(database_url)

    body = orjson.loads(wait_http(f"{url}/health"))

    assert body["status"] == "ok"
    assert body["checks"] == {"kafka": {"ok": True}, "database": {"ok": True}}


def test_health_with_database_down_answers_503_naming_it(start_api: Callable[[str], str]) -> None:
    url = start_api(f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x")

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{url}/health", timeout=10)

    assert info.value.code == 503
    body = orjson.loads(info.value.read())
    assert body["checks"]["kafka"] == {"ok": True}
    assert body["checks"]["database"]["ok"] is False
    assert "s3cret" not in str(body), "secrets never leave the process"


def test_metrics_endpoint_serves_prometheus_text(
    database_url: str, start_api: Callable[[str], str]
) -> None:
    url = start_api(database_url)

    text = wait_http(f"{url}/metrics").decode()

    assert 'marketstream_up{component="api"} 1.0' in text
