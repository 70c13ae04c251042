"""`python -m streams.matching join` end to end on small CSV files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
A_CSV = """id,title,close_date,category
KXBTC-24DEC31,Will BTC close above $100k on Dec 31?,2024-12-31,Crypto
KXHIGHNY-24DEC01,Will the high temp in NYC be >45° on Dec 1 2024?,2024-12-01,Climate and Weather
KXFED-25MAR,Will the Fed cut rates by 25bps in March 2025?,2025-03-19,Economics
"""
B_CSV = """id,title,close_date,category
501,"Bitcoin above 100,000 on December 31?",2025-01-01,Crypto
502,"Bitcoin above 102,500 on December 31?",2025-01-01,Crypto
503,Highest temperature in New York City above 45°F on December 1?,2024-12-02,Weather
504,Highest temperature in Chicago above 45°F on December 1?,2024-12-02,Weather
505,Highest temperature in New York City below 45°F on December 1?,2024-12-02,Weather
506,Fed decreases interest rates by 25 bps after March 2025 meeting?,2025-03-19,Economy
507,Fed increases interest rates by 25+ bps after March 2025 meeting?,2025-03-19,Economy
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.matching", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_matching_cli_join_writes_ranked_pairs_with_decisions(tmp_path: Path) -> None:
    # Arrange
    (tmp_path / "a.csv").write_text(A_CSV, encoding="utf-8")
    (tmp_path / "b.csv").write_text(B_CSV, encoding="utf-8")
    out = tmp_path / "matches.csv"

    # Act
    done = _run("join", "--a", str(tmp_path / "a.csv"), "--b", str(tmp_path / "b.csv"),
                "--out", str(out), "--top-k", "2")  # fmt: skip

    # Assert: the twin first and `match`; the neighbour that moved one parameter second
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["a_id", "b_id", "score", "rank", "decision"]
    assert [(r[0], r[1], r[3], r[4]) for r in rows[1:]] == [
        ("KXBTC-24DEC31", "501", "1", "match"),
        ("KXBTC-24DEC31", "502", "2", "no_match"),
        ("KXFED-25MAR", "506", "1", "match"),
        ("KXFED-25MAR", "507", "2", "no_match"),
        ("KXHIGHNY-24DEC01", "503", "1", "match"),
        ("KXHIGHNY-24DEC01", "505", "2", "no_match"),
    ]
    assert all(0.0 < float(r[2]) <= 1.0 for r in rows[1:])
    assert "joined 3 x 7 listings" in done.stdout and "3 match" in done.stdout


def test_matching_cli_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # Act
    done = _run("join", "--a", str(tmp_path / "nope.csv"), "--b", str(tmp_path / "nope.csv"),
                "--out", str(tmp_path / "out.csv"))  # fmt: skip

    # Assert
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: No such file or directory"


def test_matching_cli_bad_header_and_bad_date_name_the_file(tmp_path: Path) -> None:
    # Arrange
    (tmp_path / "a.csv").write_text("id,name,close,category\nx,y,2024-01-01,z\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text(
        "id,title,close_date,category\nx,y,31/12/2024,z\n", encoding="utf-8"
    )

    # Act
    header = _run("join", "--a", str(tmp_path / "a.csv"), "--b", str(tmp_path / "b.csv"),
                  "--out", str(tmp_path / "out.csv"))  # fmt: skip
    date = _run("join", "--a", str(tmp_path / "b.csv"), "--b", str(tmp_path / "b.csv"),
                "--out", str(tmp_path / "out.csv"))  # fmt: skip

    # Assert
    assert header.returncode == date.returncode == 2
    assert header.stderr.strip() == (
        f"error: {tmp_path / 'a.csv'}: header is id,name,close,category; "
        "expected id,title,close_date,category[,rules]"
    )
    assert date.stderr.strip() == (
        f"error: {tmp_path / 'b.csv'}:2: close_date '31/12/2024' is not an ISO date"
    )
    assert not (tmp_path / "out.csv").exists()
