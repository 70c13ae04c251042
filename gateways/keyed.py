"""Routes of the HTTP API that take an API key: one check, counted, with a JSON 401, and a rate
per key with a JSON 429."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateways.rate_limit import KeyRates
from gateways.request_metrics import route_of
from shared.api_keys import ApiKeys
from shared.metrics import API_AUTH_FAILURES, API_RATE_LIMITED
from shared.status import json_response


@dataclass(frozen=True)
class KeyGuard:
    """What a group of routes (the read API, the ops API) takes: one of `keys`, at `rates`."""

    keys: ApiKeys
    what: str  # "API key", "ops API key": named in the 401
    rates: KeyRates

    def __call__(self, handler: Handler) -> Handler:
        """`handler`, answering 401 (`unknown or missing <what>`) without one of the keys in
        `X-API-Key`, `Authorization: Bearer` or `?api_key=`, and 429 with `Retry-After` to a
        key over its rate."""

        async def check(request: web.Request) -> web.StreamResponse:
            key = self.keys.presented(request.headers, str(request.rel_url))
            if not self.keys.allows(key):
                API_AUTH_FAILURES.inc()
                return json_response({"error": f"unknown or missing {self.what}"}, 401)
            if key is not None and (wait_s := self.rates.retry_after_s(key)) is not None:
                API_RATE_LIMITED.labels(route_of(request)).inc()
                response = json_response(
                    {"error": f"over {self.rates.item} for this key; retry in {wait_s} s"}, 429
                )
                response.headers["Retry-After"] = str(wait_s)
                return response
            return await handler(request)

        return check
