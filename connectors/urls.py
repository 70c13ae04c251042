"""Provider URLs in settings: http(s) with a host, and never a key in the query string."""

from __future__ import annotations

from urllib.parse import urlsplit


def http_url(url: str, key_parameter: str | None = None, key_variables: str = "") -> str:
    """`url` without a trailing slash; raise ValueError unless it is http(s) with a host, or if
    its query carries `key_parameter` (keys go in `key_variables`, never in URLs)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if key_parameter and key_parameter in parts.query.lower():
        raise ValueError(f"leave the key out of the URL; set {key_variables} instead")
    return url.rstrip("/")
