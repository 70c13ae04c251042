"""`GET /openapi.json`: the API's OpenAPI 3.1 document (gateways/static/openapi.json), which a
test holds to the routes the API really serves and walks for keys."""

from __future__ import annotations

from importlib import resources

from aiohttp import web


def add_openapi_route(app: web.Application) -> None:
    document = resources.files("gateways").joinpath("static/openapi.json").read_bytes()

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
