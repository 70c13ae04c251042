"""The fake Alpaca REST history of the gaps scenario, in a process of its own, and its trades.

`python -m benchmarks.gaps_fake --limit 200 --window-s 60 --density 3 --url-file PATH` serves
connectors.fakes.alpaca_rest's FakeAlpacaRest on 127.0.0.1 (any free port) with `--limit`
requests per `--window-s` (HTTP 429 past it), writes its URL to PATH once it listens, and runs
until SIGTERM. GET /bench/requests tells what it answered: the time and status of each request.

`--density k` makes every symbol's day k of the fake's tapes merged (seeds k x seed to
k x seed + k - 1): the fake prints about 6 crypto trades a minute, so a day fits one 10,000-trade
page and re-fetching a day would cost no more requests than an hour. The fake reads its tapes
through `alpaca_rest.tape`, which this process points at the merged ones; the benchmark reads
the same trades through `trades_between`, so the live feed, the history and the reference agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
from aiohttp import web

from connectors.fakes import alpaca_rest
from connectors.fakes.alpaca_rest import FakeAlpacaRest, Tape

log = logging.getLogger(__name__)

STATS_PATH: Final = "/bench/requests"
_SINGLE_TAPE: Final = alpaca_rest.tape  # the fake's own, before this process replaces it


@functools.lru_cache(maxsize=4096)
def merged_tape(symbol: str, day: date, *, crypto: bool, seed: int = 0, density: int = 1) -> Tape:
    """`density` of the fake's tapes of `symbol` on `day`, merged in time order."""
    tapes = [
        _SINGLE_TAPE(symbol, day, crypto=crypto, seed=density * seed + i) for i in range(density)
    ]
    joined = Tape.joined(tapes)
    return joined[np.argsort(joined.ts_ns, kind="stable")]


def trades_between(symbol: str, start_us: int, end_us: int, *, density: int, seed: int = 0) -> Tape:
    """The crypto trades of `symbol` in [start_us, end_us), as the fake serves them."""
    first = datetime.fromtimestamp(start_us / 1e6, UTC).date()
    last = datetime.fromtimestamp((end_us - 1) / 1e6, UTC).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    joined = Tape.joined(
        [merged_tape(symbol, d, crypto=True, seed=seed, density=density) for d in days]
    )
    ts_us = joined.ts_ns // 1000
    return joined[(ts_us >= start_us) & (ts_us < end_us)]


@dataclass(eq=False)
class CountedAlpacaRest(FakeAlpacaRest):
    """The fake, also answering GET /bench/requests with what it saw."""

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get(STATS_PATH, self._stats)

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [[seen.at_s, seen.status] for seen in self.requests],
                "rate_limited": self.rate_limited,
                "early": self.early,
                "limit": self.limit,
                "window_s": self.window_s,
            }
        )


async def serve(args: argparse.Namespace) -> None:
    alpaca_rest.tape = functools.partial(merged_tape, density=args.density)  # type: ignore[assignment]
    fake = CountedAlpacaRest(seed=args.seed, limit=args.limit, window_s=args.window_s)
    await fake.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    args.url_file.write_text(fake.url)
    log.info("fake Alpaca REST on %s: %d requests per %d s", fake.url, args.limit, args.window_s)
    await stopping.wait()
    log.info("fake Alpaca REST stopping: %d requests answered", len(fake.requests))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await fake.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gaps_fake", description=__doc__)
    parser.add_argument("--limit", type=int, default=200, help="requests per rate window")
    parser.add_argument("--window-s", type=int, default=60, help="the rate window, in seconds")
    parser.add_argument("--density", type=int, default=1, help="tapes merged per symbol and day")
    parser.add_argument("--seed", type=int, default=0, help="which made-up data")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write the URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
