"""What the HTTP fakes share: an aiohttp app on 127.0.0.1 (port 0: any free one), started,
stopped, or used as `async with`."""

from __future__ import annotations

from typing import ClassVar, Self

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class HttpFake:
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
