"""The matching scenario at a tiny size, as `python -m benchmarks matching` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.matching import quality

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--a-listings", "60", "--b-listings", "600", "--repeats", "1"]
TINY += ["--incremental-samples", "10", "--log-level", "WARNING"]


def test_matching_scenario_tiny_reports_quality_timing_and_targets(tmp_path: Path) -> None:
    # Act: ours only, and peers pointed at a python that is not there (skipped, not failed)
    out = tmp_path / "matching.json"
    command = [sys.executable, "-m", "benchmarks", "matching", *TINY, "--out", str(out),
               "--peer-python", str(tmp_path / "no-python")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)

    # Assert
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(out.read_text())
    assert set(data["paths"]) == {"ours"}
    assert set(data["parameters"]["skipped"]) == {"rapidfuzz", "tfidf_topn", "minhash_lsh"}
    ours = data["paths"]["ours"]
    assert ours["items"] == 60 and ours["latency_samples"] == 10
    assert set(ours["details"]["quality"]) == {
        "positives",
        "best_threshold",
        "recall_at_k",
        "match",
    }
    assert set(ours["details"]["decisions"]) == {"match", "review", "no_match"}
    assert set(data["targets"]) == {
        "join_seconds", "extract_index_join_seconds", "match_f1", "incremental_p99_ms",
    }  # fmt: skip


def test_quality_best_threshold_and_match_decisions() -> None:
    # Arrange: two positives; one found at the top, one below a negative
    positives = {("a1", "b1"), ("a2", "b2")}
    pairs = [("a1", "b1", 0.9, 1), ("a2", "b9", 0.8, 1), ("a2", "b2", 0.7, 2)]

    # Act
    got = quality(pairs, positives, matched={("a1", "b1"), ("a2", "b9")})

    # Assert
    # at 0.9: P 1, R 0.5, F1 0.667; at 0.7: P 2/3, R 1, F1 0.8
    best = got["best_threshold"]
    assert (best["threshold"], best["recall"]) == (0.7, 1.0)
    assert best["f1"] == pytest.approx(0.8) and best["precision"] == pytest.approx(2 / 3)
    assert got["recall_at_k"] == 1.0
    assert got["match"] == {"pairs": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
