"""The replayer against the real broker: good rows on the topic, bad rows as dead letters."""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import ROOT, at_least, decoded_trades, read_topic, run_module

from shared.codec import Codec
from shared.topics import DLQ, TRADES

CSV_WITH_3_BAD = ROOT / "tests/data/replay/trades_with_3_bad_rows.csv"
GOOD_ROWS = [
    ("AAPL", 1767623400000100, 190.12, 100.0, 1),
    ("MSFT", 1767623400000200, 410.50, 5.0, -1),
    ("AAPL", 1767623400000150, 190.10, 20.0, 0),
    ("ES=F", 1767623400000400, 5012.25, 1.0, 1),
    ("BTC-USD", 1767623400000600, 97000.5, 0.25, -1),
    ("AAPL", 1767623401000000, 190.30, 50.0, 1),
]


def replay(bootstrap: str, path: Path) -> tuple[int, dict[str, object]]:
    result = run_module(
        ["connectors", "run", "replay", str(path), "--speed", "max"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_CONNECTOR_HTTP_PORT": "0"},
    )
    return result.returncode, orjson.loads(result.stdout.splitlines()[-1]) if result.stdout else {}


def test_replay_csv_with_3_bad_rows_publishes_good_rows_and_3_dead_letters(
    bootstrap: str, codec: Codec
) -> None:
    status, summary = replay(bootstrap, CSV_WITH_3_BAD)

    assert status == 3
    assert (summary["published"], summary["rejected"]) == (6, 3)
    trades = decoded_trades(
        codec, read_topic(bootstrap, TRADES, lambda m: len(decoded_trades(codec, m)) >= 6)
    )
    assert sorted(trades) == sorted(GOOD_ROWS)
    assert [t for t in trades if t[0] == "AAPL"] == [t for t in GOOD_ROWS if t[0] == "AAPL"], (
        "file order kept"
    )
    letters = [codec.decode_dead_letter(m.value()) for m in read_topic(bootstrap, DLQ, at_least(3))]
    assert sorted((d.line_number, d.reason) for d in letters) == [
        (5, "bad_size"),
        (7, "bad_timestamp"),
        (8, "bad_symbol"),
    ]
    assert {d.component for d in letters} == {"connector.replay"}
    assert {d.source for d in letters} == {str(CSV_WITH_3_BAD)}
    lines = CSV_WITH_3_BAD.read_text().splitlines()
    assert all(d.payload.decode() == lines[d.line_number - 1] for d in letters if d.line_number)


def test_replay_jsonl_publishes_rows_in_file_order_and_dead_letters_bad_json(
    bootstrap: str, codec: Codec, tmp_path: Path
) -> None:
    path = tmp_path / "trades.jsonl"
    rows = [
        orjson.dumps(
            {
                "ts": f"2026-01-05T14:30:0{i}.000001Z",
                "symbol": "EUR/USD",
                "price": 1.1 + i / 100,
                "size": 1000 + i,
                "venue": "extra-field",
            }
        ).decode()
        for i in range(5)
    ]
    path.write_text("\n".join([rows[3], rows[0], "{not json", rows[4], rows[1], rows[2]]) + "\n")

    status, summary = replay(bootstrap, path)

    assert status == 3 and (summary["published"], summary["rejected"]) == (5, 1)
    trades = decoded_trades(
        codec, read_topic(bootstrap, TRADES, lambda m: len(decoded_trades(codec, m)) >= 5)
    )
    assert [t[3] for t in trades] == [1003.0, 1000.0, 1004.0, 1001.0, 1002.0], (
        "file order, not time order"
    )
    (letter,) = [
        codec.decode_dead_letter(m.value()) for m in read_topic(bootstrap, DLQ, at_least(1))
    ]
    assert (letter.line_number, letter.reason, letter.payload) == (3, "malformed_row", b"{not json")


def test_replay_clean_file_exits_zero(bootstrap: str, tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    path.write_text("ts,symbol,price,size\n2026-01-05T14:30:00.000001Z,SPY,600.5,10\n")

    status, summary = replay(bootstrap, path)

    assert status == 0 and (summary["published"], summary["rejected"]) == (1, 0)
