"""What the fake Kalshi and the fake Polymarket share: their markets from connectors.fakes.pm_data
(the same seed and sizes give both the same universe, so its ground truth holds across them),
a rolling rate limit answered with HTTP 429 and Retry-After, and switches for tests: `throttle`
(the next requests get 429), `serve_html` (the next listing pages are an HTML error page),
`change` and `corrupt` (a market's JSON fields), with `requests` listing every request seen and
`early` counting requests that came before a Retry-After this fake sent had passed."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from connectors.fakes.pm_data import Universe, generate
from connectors.fakes.serving import HttpFake

HTML_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>"
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request a fake answered."""

    at_s: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass(eq=False)
class PmFake(HttpFake):
    """A venue's fake; subclasses render the universe's markets as the venue's JSON."""

    kalshi_markets: int = 300
    polymarket_markets: int = 300
    seed: int = 7
    limit: int = 1000  # requests per window before a 429
    window_s: float = 1.0
    requests: list[Seen] = field(default_factory=list)
    rate_limited: int = 0  # 429s sent
    early: int = 0  # requests that came before a Retry-After sent had passed
    _windows: deque[float] = field(default_factory=deque)
    _throttle: list[float] = field(default_factory=list)  # Retry-After of the next 429s
    _blocked_until_s: float = 0.0
    _html: int = 0  # listing pages still to answer with HTML
    universe: Universe = field(init=False)

    def __post_init__(self) -> None:
        self.universe = generate(
            self.seed, kalshi=self.kalshi_markets, polymarket=self.polymarket_markets
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # switches

    def throttle(self, count: int = 1, retry_after_s: float = 1.0) -> None:
        """Answer the next `count` requests with HTTP 429 and this Retry-After."""
        self._throttle.extend([retry_after_s] * count)

    def serve_html(self, pages: int = 1) -> None:
        """Answer the next `pages` listing pages with an HTML error page (HTTP 200)."""
        self._html += pages

    def take_html(self) -> bool:
        if self._html:
            self._html -= 1
            return True
        return False

    # rate limiting

    def refused(self, request: web.Request) -> web.Response | None:
        """A 429 if this request is over the limit or throttled; else None (and it counts)."""
        now = time.monotonic()
        if now < self._blocked_until_s:
            self.early += 1
        wait_s: float | None = None
        if self._throttle:
            wait_s = self._throttle.pop(0)
        else:
            while self._windows and self._windows[0] <= now - self.window_s:
                self._windows.popleft()
            if len(self._windows) >= self.limit:
                wait_s = self._windows[0] + self.window_s - now
        if wait_s is None:
            self._windows.append(now)
            return None
        seconds = max(1, math.ceil(wait_s))
        self._blocked_until_s = max(self._blocked_until_s, now + seconds)
        self.rate_limited += 1
        return web.json_response(self.too_many(), status=429, headers={"Retry-After": str(seconds)})

    def too_many(self) -> Any:
        return {"error": "Too Many Requests"}

    def seen(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        self.requests.append(
            Seen(
                time.monotonic(), request.method, request.path, dict(request.query), response.status
            )
        )
        return response
