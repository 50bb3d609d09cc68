"""A round-robin HTTP proxy on 127.0.0.1: one webhook URL in front of several bot replicas,
as a load balancer (Caddy, nginx) puts them in production."""

from __future__ import annotations

import itertools
from types import TracebackType

import aiohttp
from aiohttp import web

# Headers that describe one hop, not the request: the proxy sets its own.
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding"}


class RoundRobinProxy:
    """Forwards each request to the next of `backends` (base URLs) in turn."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.routed: list[int] = []  # the backend each request went to, in order
        self._turns = itertools.cycle(range(len(backends)))
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> RoundRobinProxy:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        turn = next(self._turns)
        self.routed.append(turn)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.backends[turn] + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as response,
        ):
            body = await response.read()
            return web.Response(status=response.status, body=body)
