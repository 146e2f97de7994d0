"""What checking an admin key costs the key service, next to the operator token (before).

    uv run --frozen python bench/admin_key_check.py [--n 20000]

Runs the key service in-process (real lifespan) on the running local stack (deploy.stack), in
a schema of its own dropped afterwards. Reports, per check: the operator token's constant-time
comparison (the only check before admin keys); an admin key's warm path (format and checksum,
SHA-256, the per-process cache: no network); metering's and billing's (the states followed
from the key service's stream, in memory: no network); the key service's cold path (one
PostgreSQL round trip); and a whole GET /v1/projects/{id} over ASGI with each credential.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import httpx
from pydantic import SecretStr

from deploy.stack import Stack
from services.keys.main import create_app
from services.keys.settings import KeysSettings
from shared import apikeys
from shared.admin_key_follower import AdminKeyFollower
from shared.http import token_matches
from shared.state_mac import new_keyring_text

ADMIN, INTERNAL = "bench-admin-token-0123456789", "bench-internal-token-0123456789"


def per_call_us(started: float, n: int) -> float:
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int) -> None:
    endpoints = Stack().endpoints()
    schema = f"bench_admin_{uuid.uuid4().hex[:8]}"
    settings = KeysSettings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=SecretStr(endpoints.database_url),
        admin_token=SecretStr(ADMIN),
        internal_token=SecretStr(INTERNAL),
        state_mac_keys=SecretStr(new_keyring_text()),
        db_schema=schema,
        topic_prefix=f"bench-{schema}.",
        consume_usage=False,
        relay=False,  # no topics: nothing here reads them
        redis_write=False,
        admin_key_cache_ttl_s=60.0,
    )
    app = create_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://keys.bench",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as client,
        ):
            project = (await client.post("/v1/projects", json={"name": "b"})).json()["id"]
            body = {"name": "b", "scope": {"organization": True}, "permissions": ["projects:read"]}
            secret = (await client.post("/v1/organization/admin_api_keys", json=body)).json()[
                "value"
            ]
            cache = app.state.admin_keys
            for _ in range(200):  # the listener connects in the background
                if cache.listening:
                    break
                await asyncio.sleep(0.05)

            started = time.perf_counter()
            for _ in range(n):
                token_matches(ADMIN, settings.admin_token)
            print(f"operator token check (before)   {per_call_us(started, n):8.2f} us")

            await cache.get(apikeys.hash_key(secret))
            started = time.perf_counter()
            for _ in range(n):
                apikeys.is_well_formed_admin(secret)
                await cache.get(apikeys.hash_key(secret))
            print(f"admin key check, warm           {per_call_us(started, n):8.2f} us")

            # Metering's and billing's check: the states followed from the key service's stream
            # (the snapshot line it sends, fed here), held in memory: no network either.
            for _ in range(200):
                if app.state.admin_key_states.fresh():
                    break
                await asyncio.sleep(0.05)
            snapshot, queue = app.state.admin_key_states.follow()
            app.state.admin_key_states.unfollow(queue)
            follower = AdminKeyFollower("http://127.0.0.1:1", SecretStr(INTERNAL))
            follower.take(snapshot)
            started = time.perf_counter()
            for _ in range(n):
                apikeys.is_well_formed_admin(secret)
                await follower.active(apikeys.hash_key(secret))
            print(f"admin key check, followed       {per_call_us(started, n):8.2f} us")

            cold = max(1, n // 50)
            started = time.perf_counter()
            for _ in range(cold):
                cache.clear()
                await cache.get(apikeys.hash_key(secret))
            print(f"admin key check, cold (DB)      {per_call_us(started, cold):8.2f} us")

            for label, token in (("operator token", ADMIN), ("admin key", secret)):
                headers = {"Authorization": f"Bearer {token}"}
                calls = max(1, n // 20)
                started = time.perf_counter()
                for _ in range(calls):
                    await client.get(f"/v1/projects/{project}", headers=headers)
                print(f"GET project, {label:15}    {per_call_us(started, calls):8.2f} us")
    finally:
        conn = await asyncpg.connect(endpoints.database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().n))
