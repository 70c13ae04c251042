"""`/health` reports the broker and the database, and says 503 when one is unreachable; the API
takes port 0 as any free port and answers a taken port with one line naming the variable."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import pytest
from conftest import Started, run_module, wait_http

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
    assert body["checks"]["database"] == {"ok": False, "error": "unreachable"}
    assert "s3cret" not in str(body), "secrets never leave the process"


def test_metrics_endpoint_serves_prometheus_text(
    database_url: str, start_api: Callable[[str], str]
) -> None:
    url = start_api(database_url)

    text = wait_http(f"{url}/metrics").decode()

    assert 'marketstream_up{component="api"} 1.0' in text


def test_api_http_port_taken_exits_2_naming_the_variable(bootstrap: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        result = run_module(
            ["gateways.http"],
            {"MS_API_HTTP_PORT": str(port), "MS_KAFKA_BOOTSTRAP": bootstrap},
            timeout_s=30,
        )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and f"MS_API_HTTP_PORT={port}" in line


def test_api_http_port_zero_serves_health_on_the_logged_port(
    bootstrap: str,
    database_url: str,
    start_process: Callable[[list[str], dict[str, str]], Started],
) -> None:
    started = start_process(
        ["gateways.http"],
        {"MS_API_HTTP_PORT": "0", "MS_KAFKA_BOOTSTRAP": bootstrap, "MS_DATABASE_URL": database_url},
    )
    pattern = re.compile(r"status endpoints on http://127\.0\.0\.1:(\d+)/health")
    deadline = time.monotonic() + 30
    while not (found := pattern.search(started.output())):
        assert started.process.poll() is None, started.output()
        assert time.monotonic() < deadline, "the API logged no port within 30 s"
        time.sleep(0.05)

    body = orjson.loads(wait_http(f"http://127.0.0.1:{found.group(1)}/health"))

    assert body["status"] == "ok" and body["component"] == "api"
