"""How every fake serves: bound on 127.0.0.1 (port 0: any free one), started and stopped, or
used as `async with`; over aiohttp (the REST providers) or websockets (the streams)."""

from __future__ import annotations

from typing import ClassVar, Self

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class Fake:
    """`start` returns the bound port; `stop` releases it."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


class HttpFake(Fake):
    """Subclasses add their routes; by default no access log (keys travel in query strings)."""

    access_log_class: ClassVar[type[AbstractAccessLogger] | None] = None
    _runner: web.AppRunner | None = None

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application()
        self.add_routes(app)
        if self.access_log_class is None:
            self._runner = web.AppRunner(app, access_log=None)
        else:
            self._runner = web.AppRunner(app, access_log_class=self.access_log_class)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class WebSocketFake(Fake):
    """Subclasses serve each connection in `serve_connection`, and may answer plain HTTP on
    the same port in `answer_http` (None: go on with the WebSocket handshake)."""

    _server: Server | None = None
    # permessage-deflate, as websockets offers it by default; None: frames go uncompressed
    compression: str | None = "deflate"

    async def serve_connection(self, socket: ServerConnection) -> None:
        raise NotImplementedError

    def answer_http(self, socket: ServerConnection, request: Request) -> Response | None:
        return None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host (bracketed if IPv6) and port."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return (f"[{host}]" if ":" in host else host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(
            self.serve_connection,
            host,
            port,
            process_request=self.answer_http,
            compression=self.compression,
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
