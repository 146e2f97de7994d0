"""Stands in for billing's internal spend read, over real HTTP (its own tests cover billing)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

from fastapi import FastAPI, Header, Response

from tests.gateway.harness import INTERNAL_TOKEN


@dataclass
class FakeBilling:
    """Per project, what the cost ledger says was spent in total and per key."""

    spent: dict[str, Decimal] = field(default_factory=dict)
    keys: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    reads: list[tuple[str, int]] = field(default_factory=list)
    down: bool = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/internal/v1/projects/{project_id}/spend")
        async def spend(project_id: str, since: int, authorization: str = Header("")) -> Response:
            if authorization != f"Bearer {INTERNAL_TOKEN}":
                return Response(status_code=401)
            if self.down:
                return Response(status_code=503)
            self.reads.append((project_id, since))
            keys = {k: str(v) for k, v in self.keys.get(project_id, {}).items()}
            body = {
                "object": "project.spend",
                "project_id": project_id,
                "since": since,
                "spent_usd": str(self.spent.get(project_id, Decimal(0))),
                "keys": keys,
            }
            return Response(json.dumps(body), media_type="application/json")

        return app
