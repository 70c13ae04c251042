"""The replayer against the real broker: good rows on the topic, bad rows as dead letters."""

from __future__ import annotations

import orjson
from conftest import ROOT, consume_from, end_offsets, run_module

from streams.codec import Codec
from streams.topics import DLQ, TRADES

CSV_WITH_3_BAD = ROOT / "tests/data/replay/trades_with_3_bad_rows.csv"
GOOD_ROWS = [
    ("AAPL", 1767623400000100, 190.12, 100.0, 1),
    ("MSFT", 1767623400000200, 410.50, 5.0, -1),
    ("AAPL", 1767623400000150, 190.10, 20.0, 0),
    ("ES=F", 1767623400000400, 5012.25, 1.0, 1),
    ("BTC-USD", 1767623400000600, 97000.5, 0.25, -1),
    ("AAPL", 1767623401000000, 190.30, 50.0, 1),
]


def test_replay_csv_with_3_bad_rows_publishes_good_rows_and_3_dead_letters(
    bootstrap: str, codec: Codec
) -> None:
    trades_before = end_offsets(bootstrap, TRADES)
    dlq_before = end_offsets(bootstrap, DLQ)

    result = run_module(
        ["connectors", "run", "replay", str(CSV_WITH_3_BAD), "--speed", "max"],
        {"MS_KAFKA_BOOTSTRAP": bootstrap, "MS_CONNECTOR_HTTP_PORT": "0"},
    )

    assert result.returncode == 3, result.stderr
    assert orjson.loads(result.stdout.splitlines()[-1]) | {"batches": 0} == {
        "connector": "replay", "published": 6, "rejected": 3, "batches": 0,
    }
    batches = [codec.decode_trade_batch(v) for v in consume_from(bootstrap, TRADES, trades_before, 1)]
    trades = [
        (symbol, int(ts), float(price), float(size), int(side))
        for b in batches
        for symbol, ts, price, size, side in zip(
            b.instrument_column(), b.ts_event_us, b.price, b.size, b.side, strict=True
        )
    ]
    assert sorted(trades) == sorted(GOOD_ROWS)
    aapl = [t for t in trades if t[0] == "AAPL"]
    assert aapl == [t for t in GOOD_ROWS if t[0] == "AAPL"], "file order kept per instrument"
    letters = [codec.decode_dead_letter(v) for v in consume_from(bootstrap, DLQ, dlq_before, 3)]
    assert sorted((d.line_number, d.reason) for d in letters) == [
        (5, "bad_size"), (7, "bad_timestamp"), (8, "bad_symbol"),
    ]
    assert {d.component for d in letters} == {"connector.replay"}
    assert letters[0].payload.decode() in CSV_WITH_3_BAD.read_text()
