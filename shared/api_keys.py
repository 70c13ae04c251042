"""API keys for our endpoints (WebSocket, ops): inline or from a mounted Secret file, compared in
constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CLOSE_UNAUTHORIZED = 4401  # close code for a missing or unknown key


class ApiKeys:
    def __init__(self, keys: list[str], allow_anonymous: bool) -> None:
        self._keys = [k.encode() for k in keys if k]
        self.allow_anonymous = allow_anonymous

    @classmethod
    def load(cls, inline: str, file: Path | None, allow_anonymous: bool) -> ApiKeys:
        """Keys from a comma-separated string and/or a file with one key per line."""
        keys = [k.strip() for k in inline.split(",")]
        if file is not None:
            keys += [line.strip() for line in file.read_text().splitlines()]
        return cls([k for k in keys if k], allow_anonymous)

    @property
    def configured(self) -> bool:
        return bool(self._keys) or self.allow_anonymous

    def presented(self, headers: Mapping[str, str], path: str) -> str | None:
        """The key a client sent: `X-API-Key`, `Authorization: Bearer`, or `?api_key=`."""
        if key := headers.get("X-API-Key"):
            return key
        auth = headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        values = parse_qs(urlsplit(path).query).get("api_key")
        return values[0] if values else None

    def allows(self, key: str | None) -> bool:
        if key is None:
            return self.allow_anonymous
        candidate = key.encode()
        return any(hmac.compare_digest(candidate, known) for known in self._keys)
