"""The providers scenario at a tiny size, as `python -m benchmarks providers` runs it, and the
captured replay it serves its clients, checked against the fake as shipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import websockets

from benchmarks.providers_data import alpaca_frames, draw_trades
from benchmarks.providers_fake import CapturedFakeAlpaca, capture_payloads, symbols_of
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

ROOT = Path(__file__).resolve().parents[2]
ALPACA_PYTHON = ROOT / ".venv-alpaca" / "bin" / "python"
TINY = ["--trades", "500", "--frame-trades", "50", "--repeats", "1", "--warmup-runs", "0"]
TINY += ["--failover-trials", "2", "--log-level", "WARNING"]
# 4 tickers (44 requests) at 10 per 2 s: the refresh is stopped half way, after two windows
TINY += ["--fmp-tickers", "4", "--fmp-budget", "10", "--fmp-window-s", "2", "--fmp-windows", "2"]


def _scenario(out: Path, *flags: str) -> dict[str, object]:
    command = [sys.executable, "-m", "benchmarks", "providers", *TINY, *flags, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-4000:]
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_providers_scenario_without_alpaca_python_measures_ours_and_failover(
    tmp_path: Path,
) -> None:
    """The default paths but fmp, which the next test runs on its own."""
    # Act
    data = _scenario(
        tmp_path / "providers.json", "--paths", "ours,alpaca_py,alpaca_py_raw,failover"
    )

    # Assert: ours moved every trade of the 10 frames; both failover trials failed over
    paths = data["paths"]
    assert isinstance(paths, dict)
    assert set(paths) == {"ours", "failover"}
    assert (paths["ours"]["items"], paths["ours"]["messages"]) == (500, 10)
    assert [r["trades"] for r in paths["ours"]["details"]["runs"]] == [500]
    assert paths["failover"]["latency_samples"] == 2
    assert paths["failover"]["details"]["timed_out"] == 0
    parameters = data["parameters"]
    assert isinstance(parameters, dict)
    assert set(parameters["skipped"]) == {"alpaca_py", "alpaca_py_raw"}
    assert set(data["targets"]) == {"failover_p99_s"}  # type: ignore[arg-type]


def test_providers_scenario_fmp_refresh_stays_within_the_fakes_limit(tmp_path: Path) -> None:
    # Act
    data = _scenario(tmp_path / "providers.json", "--paths", "fmp")

    # Assert: two full windows of the fake's log, never past its limit, no 429 at all
    paths, targets = data["paths"], data["targets"]
    assert isinstance(paths, dict) and isinstance(targets, dict)
    assert set(paths) == {"fmp"}
    fmp = paths["fmp"]["details"]
    assert fmp["rate_limited_by_fake"] == fmp["rate_limited_by_connector"] == 0
    assert set(fmp["statuses"]) == {"200"}
    assert fmp["full_windows"] == len(fmp["requests_per_window"]) == 2
    assert fmp["busiest_window_requests"] <= 10
    assert 0 < fmp["requests_in_windows"] == paths["fmp"]["items"] <= fmp["requests_sent"]
    assert (fmp["units_total"], fmp["tickers_total"], fmp["finished_early"]) == (44, 4, False)
    assert 0 < fmp["units_done"] < 44 and 0 < fmp["units_done_in_database"] < 44
    assert fmp["tickers_done"] <= fmp["units_done_in_database"] // 11
    assert fmp["eta_s"] is not None and fmp["connector_exit_status"] == 0
    assert targets["fmp_429s"] == {"equal": 0, "measured": 0, "met": True}
    assert set(targets["fmp_budget_used"]) == {"at_least", "measured", "met"}


@pytest.mark.skipif(not ALPACA_PYTHON.exists(), reason="`make .venv-alpaca/.installed` first")
def test_providers_scenario_with_alpaca_python_measures_alpaca_py(tmp_path: Path) -> None:
    # Act
    data = _scenario(
        tmp_path / "providers.json",
        "--paths",
        "ours,alpaca_py,alpaca_py_raw",
        "--alpaca-python",
        str(ALPACA_PYTHON),
    )

    # Assert: the SDK's handler saw every trade, with models and raw
    paths = data["paths"]
    assert isinstance(paths, dict)
    for name in ("alpaca_py", "alpaca_py_raw"):
        assert [r["trades"] for r in paths[name]["details"]["runs"]] == [500]
    assert set(data["targets"]) == {"ours_vs_alpaca_py_trades_per_s"}  # type: ignore[arg-type]


async def _received(url: str, symbols: list[str], frames: int) -> list[bytes]:
    """Connect as a MessagePack client, subscribe to `symbols`; return the first data frames."""
    headers = {"Content-Type": "application/msgpack"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        await socket.recv()
        await socket.send(msgpack.packb({"action": "auth", "key": KEY_ID, "secret": SECRET_KEY}))
        await socket.recv()
        await socket.send(msgpack.packb({"action": "subscribe", "trades": symbols}))
        received: list[bytes] = []
        while len(received) < frames:
            payload = await socket.recv()
            assert isinstance(payload, bytes)
            if msgpack.unpackb(payload)[0]["T"] == "t":
                received.append(payload)
        return received


async def test_captured_replay_sends_the_bytes_the_fake_sends_as_shipped() -> None:
    # Arrange: 300 trades of 20 listings in frames of 25
    frames = alpaca_frames(draw_trades(300, 20, seed=7, rate=5000.0), 25)
    symbols = symbols_of(frames)

    # Act
    async with FakeAlpaca(frames, frame_interval_s=0.0, live_times=False) as shipped:
        expected = await _received(shipped.url, symbols, len(frames))
    async with CapturedFakeAlpaca(frames, await capture_payloads(frames)) as captured:
        got = await _received(captured.url, symbols, len(frames))

    # Assert
    assert got == expected
    assert sum(len(msgpack.unpackb(p)) for p in got) == 300
