"""The demo upstream as a member of a model's fleet (deploy/demo_upstream.py): a delay per
server, changeable at run time; vLLM's queue, its counts in vLLM's Prometheus gauges; vLLM's
/health; and ``python -m deploy.demo_upstream`` as a process of its own.

Most run the app in the test's event loop through httpx's ASGI transport (no socket); a stream
held open and the process entry point need a real server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.demo_upstream import CHAT_MODEL, EMBEDDING_MODEL, GAUGES, MODELS, create_app
from deploy.ports import free_port
from tests.polling import eventually
from tests.served import Served

REPO = Path(__file__).resolve().parents[2]
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello!"}]}


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


def gauges(text: str) -> dict[tuple[str, str], float]:
    """Each sample of the exposition by metric name and model_name (parsed as Prometheus does)."""
    return {
        (s.name, s.labels["model_name"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _load(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    return gauges((await client.get("/metrics")).text)


async def _timed(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, int]:
    started = time.monotonic()
    got = await client.post("/v1/chat/completions", json=body)
    return time.monotonic() - started, got.status_code


@pytest.mark.unit
async def test_the_delay_is_applied_and_changed_at_run_time() -> None:
    async with _client(create_app(delay_ms=300)) as client:
        took, status = await _timed(client, CHAT)
        assert status == 200
        assert took >= 0.3
        assert (await client.get("/demo/stats")).json()["delay_ms"] == 300
        changed = await client.post("/demo/delay", json={"delay_ms": 0})
        assert changed.status_code == 200
        assert changed.json() == {"delay_ms": 0}
        took, status = await _timed(client, CHAT)
        assert (status, took < 0.3) == (200, True)
        # The model name's knob still adds its own.
        took, status = await _timed(client, {**CHAT, "model": CHAT_MODEL + "#delay_ms=200"})
        assert (status, took >= 0.2) == (200, True)
        stats = (await client.get("/demo/stats")).json()
        assert stats == {"requests": 3, "running": 0, "waiting": 0, "delay_ms": 0}


@pytest.mark.unit
async def test_the_delay_and_the_queue_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOLLGATE_UPSTREAM_DELAY_MS", "150")
    monkeypatch.setenv("TOLLGATE_UPSTREAM_MAX_RUNNING", "2")
    app = create_app()
    assert (app.state.demo.delay_ms, app.state.demo.queue.max_running) == (150, 2)
    assert (create_app(delay_ms=0, max_running=0).state.demo.delay_ms) == 0
    monkeypatch.delenv("TOLLGATE_UPSTREAM_DELAY_MS")
    monkeypatch.delenv("TOLLGATE_UPSTREAM_MAX_RUNNING")
    app = create_app()
    assert (app.state.demo.delay_ms, app.state.demo.queue.max_running) == (0, 0)
    monkeypatch.setenv("TOLLGATE_UPSTREAM_DELAY_MS", "soon")
    with pytest.raises(ValueError, match="TOLLGATE_UPSTREAM_DELAY_MS must be an integer"):
        create_app()
    with pytest.raises(ValueError, match="max_running must be an integer"):
        create_app(delay_ms=0, max_running=-1)


@pytest.mark.unit
async def test_requests_beyond_max_running_wait_and_metrics_count_them() -> None:
    """max_running 1, two requests at once: one runs, one waits, both in vLLM's gauges; they
    are served one after the other."""
    async with _client(create_app(delay_ms=400, max_running=1)) as client:
        started = time.monotonic()
        both = asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in "ab"))
        load = await eventually(
            lambda: _load(client),
            until=lambda got: got[("vllm:num_requests_waiting", CHAT_MODEL)] == 1.0,
            what="one request waiting",
        )
        for model in MODELS:  # one queue: each model's series shows the server's numbers
            assert load[("vllm:num_requests_waiting", model)] == 1.0
            assert load[("vllm:num_requests_running", model)] == 1.0
            assert load[("vllm:kv_cache_usage_perc", model)] == 1.0
            assert load[("vllm:gpu_cache_usage_perc", model)] == 1.0
        stats = (await client.get("/demo/stats")).json()
        assert (stats["running"], stats["waiting"]) == (1, 1)
        answers = await both
        assert [a.status_code for a in answers] == [200, 200]
        assert time.monotonic() - started >= 0.8
        idle = await _load(client)
        assert set(idle.values()) == {0.0}
        assert len(idle) == len(GAUGES) * len(MODELS)


@pytest.mark.unit
async def test_without_a_limit_every_request_runs_and_the_cache_is_a_share_of_64() -> None:
    async with _client(create_app(delay_ms=300)) as client:
        three = asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in "abc"))
        load = await eventually(
            lambda: _load(client),
            until=lambda got: got[("vllm:num_requests_running", CHAT_MODEL)] == 3.0,
            what="three running",
        )
        assert load[("vllm:num_requests_waiting", EMBEDDING_MODEL)] == 0.0
        assert load[("vllm:kv_cache_usage_perc", CHAT_MODEL)] == 3 / 64
        assert [a.status_code for a in await three] == [200, 200, 200]


@pytest.mark.unit
async def test_metrics_are_vllms_text_exposition() -> None:
    async with _client(create_app()) as client:
        got = await client.get("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = got.text.splitlines()
    for name, _ in GAUGES:
        assert f"# TYPE {name} gauge" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)
        for model in MODELS:
            assert f'{name}{{model_name="{model}"}} 0.0' in lines
    families = {f.name: f.type for f in text_string_to_metric_families(got.text)}
    assert families == {name: "gauge" for name, _ in GAUGES}


@pytest.mark.unit
async def test_health_is_vllms_and_healthz_stays() -> None:
    async with _client(create_app()) as client:
        health = await client.get("/health")
        assert (health.status_code, health.content) == (200, b"")
        assert (await client.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        {"delay_ms": -1},
        {"delay_ms": 600_001},
        {"delay_ms": "5"},
        {"delay_ms": 1.5},
        {"delay_ms": True},
        {"delay_ms": None},
        {},
        {"delay_ms": 5, "jitter_ms": 1},
        [5],
    ],
    ids=str,
)
async def test_a_bad_delay_is_refused_with_422(body: Any) -> None:
    async with _client(create_app(delay_ms=7)) as client:
        got = await client.post("/demo/delay", json=body)
        assert got.status_code == 422, got.text
        not_json = await client.post("/demo/delay", content=b"{", headers={"content-type": "a"})
        assert not_json.status_code == 422
        assert (await client.get("/demo/stats")).json()["delay_ms"] == 7
        top = await client.post("/demo/delay", json={"delay_ms": 600_000})
        assert top.json() == {"delay_ms": 600_000}


@pytest.mark.unit
async def test_a_forced_error_or_an_unknown_model_gives_its_slot_back() -> None:
    async with _client(create_app(max_running=1)) as client:
        forced = await client.post("/v1/embeddings", json={"model": "x#status=503", "input": "a"})
        unknown = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        bad = await client.post("/v1/chat/completions", content=b"{")
        assert [forced.status_code, unknown.status_code, bad.status_code] == [503, 404, 400]
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        stats = (await client.get("/demo/stats")).json()
        assert stats == {"requests": 4, "running": 0, "waiting": 0, "delay_ms": 0}


@pytest.fixture
async def one_at_a_time() -> AsyncIterator[Served]:
    served = await Served(create_app(max_running=1)).start()
    yield served
    await served.stop()


async def _stats(client: httpx.AsyncClient) -> dict[str, int]:
    got: dict[str, int] = (await client.get("/demo/stats")).json()
    return got


async def test_a_stream_holds_its_slot_until_it_ends(one_at_a_time: Served) -> None:
    """A stream runs until its last chunk: the next request waits for it; a client that
    leaves mid-stream gives the slot back."""
    slow = {**CHAT, "model": CHAT_MODEL + "#chunk_delay_ms=100", "stream": True, "max_tokens": 6}
    async with httpx.AsyncClient(base_url=one_at_a_time.url, timeout=10) as client:
        async with client.stream("POST", "/v1/chat/completions", json=slow) as stream:
            chunks = stream.aiter_bytes()
            await anext(chunks)
            after = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            await eventually(
                lambda: _stats(client),
                until=lambda s: (s["running"], s["waiting"]) == (1, 1),
                what="the second request waiting behind the stream",
            )
            assert not after.done()
            async for _ in chunks:
                pass
        assert (await after).status_code == 200
        async with client.stream("POST", "/v1/chat/completions", json=slow) as stream:
            await anext(stream.aiter_bytes())
        await eventually(
            lambda: _stats(client),
            until=lambda s: (s["running"], s["waiting"]) == (0, 0),
            what="the slot back after the client left",
        )
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def _health(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url + "/health")).status_code
    except httpx.HTTPError:
        return 0


async def test_the_entry_point_serves_one_upstream_until_killed() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "deploy.demo_upstream", "--port", str(port)]
    process = subprocess.Popen([*argv, "--delay-ms", "50", "--max-running", "2"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _health(url), until=lambda s: s == 200, timeout=30, what="up")
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            stats = await _stats(client)
            assert (stats["delay_ms"], stats["running"]) == (50, 0)
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            metrics = gauges((await client.get("/metrics")).text)
            assert metrics[("vllm:num_requests_running", CHAT_MODEL)] == 0.0
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    refused = subprocess.run(
        [*argv, "--max-running", "-1"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "max_running must be an integer from 0" in refused.stderr
