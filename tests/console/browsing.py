"""Headless Chromium for the console's browser test, and what the test does often there."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from deploy.stack import Endpoints
from tests.console.served import System, system

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHAT, EMBED = "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen3-Embedding-0.6B"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def running(
    *,
    endpoints: Endpoints,
    schemas: tuple[str, str, str],
    topic_prefix: str,
    redis_prefix: str,
    unique: str,
    tmp_path: Path,
) -> AsyncIterator[System]:
    async with system(
        endpoints=endpoints,
        schemas=schemas,
        topic_prefix=topic_prefix,
        redis_prefix=redis_prefix,
        unique=unique,
        folder=tmp_path,
    ) as found:
        yield found


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def gateway_status(system: System, secret: str) -> int:
    """The status of one chat request with secret (200, or the refusal's)."""
    client = openai.AsyncOpenAI(base_url=system.gateway + "/v1", api_key=secret, max_retries=0)
    try:
        await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "ping"}], max_tokens=4
        )
    except openai.APIStatusError as exc:
        return exc.status_code
    finally:
        await client.close()
    return 200


async def create_key(page: Page, name: str) -> str:
    """Create a key through its dialog; the secret the dialog shows (the dialog left open)."""
    await page.get_by_role("button", name="Create API key").first.click()
    dialog = page.get_by_role("dialog", name="Create API key")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Name")).to_be_focused()
    await dialog.get_by_label("Name").fill(name)
    await dialog.get_by_role("button", name="Create key").click()
    secret_dialog = page.get_by_role("dialog", name="Save your key")
    await expect(secret_dialog).to_be_visible()
    await expect(secret_dialog).to_contain_text("will not be shown again")
    return await secret_dialog.get_by_label("Secret key").input_value()


def row(page: Page, name: str) -> Locator:
    return page.locator("tr", has=page.locator(".key-name", has_text=re.compile(f"^{name}$")))
