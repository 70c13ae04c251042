"""The peer of the providers scenario: alpaca-py's own stream client, in a virtualenv of its own.

`.venv-alpaca/bin/python -m benchmarks.providers_peer --url URL --trades N --symbols A,B,...
[--raw-data] --out PATH`, with the key in ALPACA_API_KEY and ALPACA_SECRET_KEY.

It runs `alpaca.data.live.StockDataStream` as its documentation shows (`subscribe_trades`, then
`run()`), pointed at the fake with `url_override`. The SDK connects with
`Content-Type: application/msgpack`, authenticates, subscribes, and for each frame unpacks the
MessagePack and, per message, dispatches to the symbol's handler: by default it first turns the
time into a datetime and builds a `Trade` (pydantic) model; with `--raw-data` it passes the raw
dict. The handler only counts; when it has seen `--trades` trades it notes the time and stops
the stream. The timings, RSS and CPU time go to `--out` as JSON.

Only the standard library is imported at module level: the virtualenv has alpaca-py and its
dependencies, not this project's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

MB: Final = 1_000_000


def _status_mb(key: str) -> float | None:
    with contextlib.suppress(OSError):
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        return int(match.group(1)) * 1024 / MB if match else None
    return None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the stream until the handler has counted `--trades` trades (or the timeout)."""
    import alpaca  # type: ignore[import-not-found]
    import msgpack
    from alpaca.data.live import StockDataStream  # type: ignore[import-not-found]
    from alpaca.data.models import Trade  # type: ignore[import-not-found]

    stream = StockDataStream(
        os.environ["ALPACA_API_KEY"],
        os.environ["ALPACA_SECRET_KEY"],
        raw_data=args.raw_data,
        url_override=args.url,
    )
    seen = 0
    first_at: float | None = None
    done_at: float | None = None

    async def count(trade: object) -> None:
        nonlocal seen, first_at, done_at
        seen += 1
        if seen == 1:
            first_at = time.perf_counter()
        if seen == args.trades:
            done_at = time.perf_counter()
            await stream.stop_ws()

    stream.subscribe_trades(count, *args.symbols.split(","))
    # Warm-up, not timed: the model's first validation.
    sample = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 172.8, "s": 100, "c": ["@"], "z": "C"}
    Trade("AAPL", sample | {"t": msgpack.Timestamp.from_unix_nano(1).to_datetime()})

    def give_up() -> None:
        if stream._loop is not None:
            stream.stop()

    timer = threading.Timer(args.timeout_s, give_up)
    timer.daemon = True
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS belongs to the run
    rss_before = _status_mb("VmRSS")
    cpu_before = time.process_time()
    started = time.perf_counter()
    timer.start()
    stream.run()
    timer.cancel()
    return {
        "trades": seen,
        "seconds": (done_at or time.perf_counter()) - started,
        "first_trade_s": None if first_at is None else first_at - started,
        "complete": done_at is not None,
        "cpu_s": time.process_time() - cpu_before,
        "rss_before_mb": rss_before,
        "rss_peak_mb": _status_mb("VmHWM"),
        "versions": {"alpaca-py": getattr(alpaca, "__version__", None), "msgpack": msgpack.version},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.providers_peer", description=__doc__)
    parser.add_argument("--url", required=True, help="the fake's stream URL")
    parser.add_argument("--trades", type=int, required=True, help="trades the recording holds")
    parser.add_argument("--symbols", required=True, help="comma-separated symbols to subscribe")
    parser.add_argument("--raw-data", action="store_true", help="raw dicts, not Trade models")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up after this")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON goes")
    args = parser.parse_args(argv)
    result = measure(args)
    args.out.write_text(json.dumps(result))
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
