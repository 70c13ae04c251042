"""`python -m streams groups describe` answers an unreachable broker or an unknown group on one
line; the lag it prints is checked against /health/detailed in tests/gateways."""

from __future__ import annotations

from conftest import run_module

from streams.embedded.ports import free_port


def test_groups_describe_with_broker_unreachable_exits_2_on_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"

    result = run_module(["streams", "groups", "describe"], {"MS_KAFKA_BOOTSTRAP": address})

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot reach the broker at MS_KAFKA_BOOTSTRAP=" + address)


def test_groups_describe_with_unknown_group_exits_1_naming_it(bootstrap: str) -> None:
    result = run_module(
        ["streams", "groups", "describe", "--group", "no-such-group"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap},
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("error: consumer group no-such-group ")
