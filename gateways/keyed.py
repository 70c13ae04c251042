"""Routes of the HTTP API that take an API key: one check, counted, with a JSON 401."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.api_keys import ApiKeys
from shared.metrics import API_AUTH_FAILURES
from shared.status import json_response

Handler = Callable[[web.Request], Awaitable[web.Response]]


def keyed(keys: ApiKeys, what: str, handler: Handler) -> Handler:
    """`handler`, answering 401 (`unknown or missing <what>`) without one of `keys` in
    `X-API-Key`, `Authorization: Bearer` or `?api_key=`."""

    async def check(request: web.Request) -> web.Response:
        if not keys.allows(keys.presented(request.headers, str(request.rel_url))):
            API_AUTH_FAILURES.inc()
            return json_response({"error": f"unknown or missing {what}"}, 401)
        return await handler(request)

    return check
