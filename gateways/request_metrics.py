"""`api_requests_total{route,status}` and `api_request_duration_seconds{route}` for every
request the HTTP API answers, labelled by route template so that the series stay bounded; a
handler's unexpected exception is logged and answered as a JSON 500 that names nothing of it."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from shared.metrics import API_REQUEST_SECONDS, API_REQUESTS
from shared.status import json_response

log = logging.getLogger(__name__)


def route_of(request: web.Request) -> str:
    """The route's template (`/bars/{symbol}`), never the path: paths are unbounded."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:  # a bug of ours: the log has it, the client a JSON error
        log.exception("%s %s failed", request.method, request.path)
        return json_response({"error": "internal error; the API's log says why"}, 500)
    finally:
        route = route_of(request)
        API_REQUESTS.labels(route, str(status)).inc()
        API_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
