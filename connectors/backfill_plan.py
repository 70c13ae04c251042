"""What a backfill job fetches, from whom, under which source, and when it is tried again.

Pure functions, no I/O: connectors.backfill applies them (its docstring says why the span is
widened to whole windows and why each attempt is a source of its own).
"""

from __future__ import annotations

import random
from typing import Final

from shared.settings import BACKFILL_SOURCE_PREFIX

HISTORY_PROVIDERS: Final = ("alpaca",)  # the providers whose REST history has trades
CRYPTO_ASSET_TYPES: Final = frozenset({"crypto", "cryptocurrency"})  # symbol_universe asset_type


def fetch_span(start_us: int, end_us: int, window_us: int) -> tuple[int, int]:
    """[start_us, end_us) widened to whole windows of `window_us` (aligned to the epoch, as
    bars are): the span whose trades make every window the backfill opens whole."""
    return start_us - start_us % window_us, -(-end_us // window_us) * window_us


def history_provider(asked: str | None, providers: tuple[str, ...]) -> str | None:
    """The provider to fetch trades from: `asked` if it has trade history, else the first of
    the instrument's `providers` that has; None if none has."""
    if asked in HISTORY_PROVIDERS:
        return asked
    return next((p for p in providers if p in HISTORY_PROVIDERS), None)


def retry_backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The delay before attempt `attempt + 1`: base, 2 x base, 4 x base ... up to `cap_s`,
    each drawn from its upper half, so that jobs that failed together do not return together."""
    delay = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    return rng.uniform(delay / 2, delay)


def backfill_source(job_id: int, attempt: int) -> str:
    """The source (event-time clock) of an attempt's trades: `backfill:<job id>`, and
    `backfill:<job id>:<attempt>` from the second attempt on."""
    source = f"{BACKFILL_SOURCE_PREFIX}{job_id}"
    return source if attempt <= 1 else f"{source}:{attempt}"
