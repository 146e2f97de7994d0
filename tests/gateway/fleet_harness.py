"""Fleets of demo upstreams for the gateway's fleet tests: in this process (Served) or as
processes of their own (to be SIGKILLed), a catalogue naming them, and load that records every
request's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.demo_upstream import create_app as create_upstream
from deploy.ports import free_port
from tests.gateway.harness import CHAT
from tests.served import Served

MODEL = "fleet/chat"
REPO = Path(__file__).resolve().parents[2]


def fleet_catalogue(folder: Path, upstream: str, name: str = "models.yaml") -> Path:
    """A catalogue of one chat model, ``fleet/chat``, whose ``upstream:`` block is
    ``upstream`` (YAML, indented by six spaces)."""
    path = folder / name
    text = f"""models:
  - id: {MODEL}
    kind: chat
    upstream:
      model: "{CHAT}"
      timeout_s: 10
{upstream}
    prices:
      - effective_from: "2026-01-01T00:00:00Z"
        input_per_million: "0.1"
        output_per_million: "0.2"
"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a reader never sees half a file
    return path


def endpoints_block(*urls: str, **options: Any) -> str:
    lines = ["      endpoints:"]
    lines += [f"        - base_url: {url}/v1" for url in urls]
    for option, value in options.items():
        lines.append(f"      {option}: {value}")
    return "\n".join(lines)


async def served_upstreams(*delays_ms: int, max_running: int = 0) -> list[Served]:
    return [
        await Served(
            create_upstream(embedding_dimensions=16, delay_ms=delay, max_running=max_running)
        ).start()
        for delay in delays_ms
    ]


async def served_count(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(url + "/demo/stats")).json()["requests"])


@dataclass
class UpstreamProcess:
    """A demo upstream in a process of its own, on a port it keeps across restarts."""

    port: int = field(default_factory=free_port)
    delay_ms: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> UpstreamProcess:
        command = [sys.executable, "-m", "deploy.demo_upstream", "--port", str(self.port)]
        command += ["--delay-ms", str(self.delay_ms)]
        env = {**os.environ, "TOLLGATE_UPSTREAM_EMBEDDING_DIMENSIONS": "16"}
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"the upstream on {self.port} exited")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/health")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise AssertionError(f"the upstream on {self.port} never answered")

    def kill(self) -> None:
        """SIGKILL: no goodbye to any connection."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Outcome:
    request_id: str
    started: float
    ended: float
    status: int
    stream: bool
    complete: bool  # a whole answer: a body with usage, or a stream to its [DONE]
    usage: dict[str, int] | None = None


class Load:
    """``workers`` clients sending chat requests until stopped, streams and not in turn."""

    def __init__(self, gateway_url: str, secret: str, workers: int = 6) -> None:
        self.url = gateway_url + "/v1/chat/completions"
        self.headers = {"authorization": f"Bearer {secret}"}
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.workers)]

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes

    async def _run(self, worker: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            turn = worker
            while not self._stop.is_set():
                turn += 1
                self.outcomes.append(await self.one(client, stream=turn % 2 == 0))

    async def one(self, client: httpx.AsyncClient, *, stream: bool = False) -> Outcome:
        request_id = "req_" + uuid.uuid4().hex
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"count to {len(self.outcomes) % 7}"}],
            "max_tokens": 8,
            "stream": stream,
        }
        headers = {**self.headers, "x-request-id": request_id}
        started = time.monotonic()
        if not stream:
            try:
                answer = await client.post(self.url, json=body, headers=headers)
            except httpx.HTTPError:
                return Outcome(request_id, started, time.monotonic(), 0, False, False)
            usage = answer.json().get("usage") if answer.status_code == 200 else None
            return Outcome(
                request_id,
                started,
                time.monotonic(),
                answer.status_code,
                False,
                usage is not None,
                usage,
            )
        status, done = 0, False
        try:
            async with client.stream("POST", self.url, json=body, headers=headers) as answer:
                status = answer.status_code
                async for line in answer.aiter_lines():
                    done = done or line.strip() == "data: [DONE]"
        except httpx.HTTPError:
            pass
        return Outcome(request_id, started, time.monotonic(), status, True, done)
