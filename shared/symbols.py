"""The one rule for instrument symbols, shared by every parser and by the gateway's channels."""

from __future__ import annotations

import re
from typing import Final

MAX_SYMBOL_LENGTH: Final = 64
_SYMBOL: Final = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_SYMBOL_LENGTH}}}")


def symbol_problem(symbol: str) -> str | None:
    """Return why `symbol` is not a well-formed instrument symbol, or None if it is.

    Well formed: 1 to 64 characters, none of them whitespace or control characters. Any such
    symbol is accepted (BRK.B, BTC-USD, ES=F, ^GSPC, EUR/USD, KXHIGHNY-24DEC01-B45).
    """
    if not symbol:
        return "empty symbol"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"symbol longer than {MAX_SYMBOL_LENGTH} characters"
    if not _SYMBOL.fullmatch(symbol):
        return f"symbol {symbol[:MAX_SYMBOL_LENGTH]!r} contains whitespace or control characters"
    return None


def well_formed_symbols(text: str) -> str:
    """The comma-separated symbols, trimmed and without repeats; raise ValueError if there are
    none or one is not a well-formed symbol."""
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if not symbols:
        raise ValueError("no symbols")
    for symbol in symbols:
        if problem := symbol_problem(symbol):
            raise ValueError(problem)
    return ",".join(dict.fromkeys(symbols))
