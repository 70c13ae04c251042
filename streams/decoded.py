"""Decode each trades message once for all the agents of a worker that read it.

Faust hands every agent subscribed to a topic the same messages, and the agents take turns in
one event loop, so the few most recent decodes serve them all; an agent that falls further
behind simply decodes again. A message that does not decode fails the same way for each agent,
so each dead-letters it.
"""

from __future__ import annotations

from typing import Any

from shared.codec import Codec
from shared.errors import DecodeError, SyntheticDataError
from shared.models import TradeBatch


class DecodedTradeBatches:
    def __init__(
        self, codec: Codec, keep: int = 32, refused_sources: frozenset[str] = frozenset()
    ) -> None:
        self._codec = codec
        self._keep = keep
        self._refused = refused_sources  # MS_REAL_DATA_ONLY: the synthetic ones
        self._recent: dict[tuple[str, int, int], TradeBatch | str] = {}  # oldest first

    def of(self, message: Any) -> TradeBatch:
        """The TradeBatch of a Faust message; raise DecodeError if it is not one, and
        SyntheticDataError if it comes from a refused source."""
        key = (message.topic, message.partition, message.offset)
        found = self._recent.get(key)
        if found is None:
            try:
                found = self._codec.decode_trade_batch(message.value)
            except DecodeError as exc:
                found = str(exc)
            self._recent[key] = found
            if len(self._recent) > self._keep:
                del self._recent[next(iter(self._recent))]
        if isinstance(found, str):
            raise DecodeError(found)
        refuse_synthetic(self._refused, found.source, found.provider)
        return found


def refuse_synthetic(refused: frozenset[str], *origins: str | None) -> None:
    """Raise SyntheticDataError if a record comes from a source MS_REAL_DATA_ONLY refuses."""
    for origin in origins:
        if origin in refused:
            raise SyntheticDataError(f"source {origin!r} is synthetic and MS_REAL_DATA_ONLY=true")
