"""`make up`'s first API key: created once, its secret printed once and never written down.

Later runs print the key's hint and how to make another one.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

KEYS_URL = "http://127.0.0.1:8081"
GATEWAY_URL = "http://127.0.0.1:8080/v1"


def ensure_first_key(run_dir: Path, admin_token: str, keys_url: str = KEYS_URL) -> str:
    """Create the demo project and its first key on the first run; return what to print."""
    record = run_dir / "first-key.json"
    if record.exists():
        known = json.loads(record.read_text())
        return (
            f"first key    {known['hint']} in project {known['project_id']} (its secret was shown "
            "once, at creation; make another with `uv run tollgate keys create`)"
        )
    auth = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=keys_url, headers=auth, timeout=10) as client:
        project = client.post("/v1/projects", json={"name": "default"})
        project.raise_for_status()
        project_id = project.json()["id"]
        key = client.post(f"/v1/projects/{project_id}/keys", json={"name": "first-key"})
        key.raise_for_status()
        created = key.json()
    record.write_text(
        json.dumps({"project_id": project_id, "key_id": created["id"], "hint": created["hint"]})
    )
    return (
        f"first key    {created['key']}\n"
        "             (project 'default'; copy it now: it will not be shown again)\n"
        f"try it       curl {GATEWAY_URL}/chat/completions"
        f" -H 'Authorization: Bearer {created['key']}'"
        " -H 'Content-Type: application/json'"
        ' -d \'{"model": "Qwen/Qwen2.5-0.5B-Instruct",'
        ' "messages": [{"role": "user", "content": "Hello"}]}\''
    )
