"""An ASGI app served by uvicorn on a free port inside the test's own event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from deploy.ports import free_port


class Served:
    """An ASGI app served by uvicorn on a free port, in this event loop."""

    def __init__(
        self,
        app: Any,
        port: int | None = None,
        http: type[asyncio.Protocol] | str = "auto",
        **config: Any,
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.http = http  # uvicorn's HTTP protocol (the gateway runs its own)
        self.config = config  # more of uvicorn.Config's options
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Served:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            backlog=4096,
            http=self.http,
            **self.config,
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = None
