"""The read_api scenario at a tiny size, as `python -m benchmarks read_api` runs it, and the
check its walks rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.read_api import DAY_BARS, PAIRS, PATHS, Bars

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--days", "2", "--noise", "1", "--page-repeats", "3", "--page-warmup", "0"]
TINY += ["--walk-repeats", "1", "--walk-limit", "1000", "--log-level", "WARNING"]


def test_read_api_scenario_tiny_measures_every_path_over_the_same_bars(tmp_path: Path) -> None:
    # Act
    out = tmp_path / "read_api.json"
    command = [sys.executable, "-m", "benchmarks", "read_api", *TINY, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    # Assert: every path answered; the walks saw every bar once, in 3 pages of at most 1,000
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(out.read_text())
    paths = data["paths"]
    assert set(paths) == set(PATHS)
    assert (paths["ours_json_day"]["items"], paths["ours_cursor_deep"]["items"]) == (1440, 1000)
    for name in ("ours_year_json", "ours_year_csv", "ours_year_parquet", "naive_year_json"):
        assert (paths[name]["items"], paths[name]["messages"]) == (2 * DAY_BARS, 3)
        assert paths[name]["details"]["checked"]["rows"] == 2 * DAY_BARS
    for path in paths.values():
        assert path["wire_bytes"] > 0
        assert path["latency_samples"] == (1 if path["details"].get("pages") else 3)
    assert paths["ours_year_parquet"]["wire_bytes"] < paths["ours_year_csv"]["wire_bytes"]
    assert set(data["speedup"]) == {f"{ours}_vs_{peer}" for peer, ours in PAIRS.items()}
    assert set(data["targets"]) == {name for name in PATHS if name.startswith("ours_")}
    assert data["parameters"]["data"]["rows_in_table"] == 2 * 2 * DAY_BARS


def test_bars_add_pages_out_of_order_raise() -> None:
    # Arrange
    bars = Bars()
    bars.add([60_000_000, 120_000_000], [187.1, 187.2])

    # Act / Assert: a page that starts at or before the last bar, or goes back within itself
    with pytest.raises(RuntimeError, match="out of order"):
        bars.add([120_000_000], [187.3])
    with pytest.raises(RuntimeError, match="out of order"):
        Bars().add([180_000_000, 120_000_000], [187.3, 187.4])
    assert bars.summary()["rows"] == 2
