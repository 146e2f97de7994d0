"""HTTP clients of the APIs the console shows: keys (8081), metering (8082), billing (8083).

    ApiProblem            an API answered with an error in OpenAI's shape (400, 404, 409...)
    └── ApiUnavailable    an API did not answer, timed out or failed (5xx)

Every call carries the credential of the session it is made for (``ApiClient.bound``): the
operator token or the admin key its user signed in with, never one of the console's own, so
each API decides what that user may see and do. A client not bound to one refuses to call.
Calls carry the console request's id (``X-Request-Id``), so an API's log lines and audit
entries name the console request that caused them. Nothing the APIs return is logged.
"""

from __future__ import annotations

import copy
import json as jsonlib
import re
from contextvars import ContextVar
from decimal import Decimal
from typing import Any, Self

import httpx
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from shared.http import HttpMiddleware
from shared.logs import request_id_var

# The browser of the request being served: its address and User-Agent (BrowserMiddleware).
browser_var: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "console_browser", default=(None, None)
)


class ApiProblem(Exception):
    """An error answer from an API, with OpenAI's fields."""

    def __init__(
        self,
        service: str,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{service}: {status} {message}")
        self.service = service
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class ApiUnavailable(ApiProblem):
    """The API could not be reached or failed on its side."""


_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


def seg(value: str) -> str:
    """value as one URL path segment; an id that could not be one is a 404 of its own."""
    if not _SAFE_ID.match(value):
        raise ApiProblem("console", 404, "No such project or key.", code="not_found")
    return value


def _problem(service: str, response: httpx.Response) -> ApiProblem:
    message, param, code = f"{service} answered {response.status_code}.", None, None
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        param = error.get("param") if isinstance(error.get("param"), str) else None
        code = error.get("code") if isinstance(error.get("code"), str) else None
    kind = ApiUnavailable if response.status_code >= 500 else ApiProblem
    return kind(service, response.status_code, message, param=param, code=code)


class ApiClient:
    """One API: a base URL, JSON in and out, with the credential it is bound to."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, transport=transport
        )
        self._credential: SecretStr | None = None

    def bound(self, credential: SecretStr) -> Self:
        """This API's client calling with credential (its connections shared)."""
        view = copy.copy(self)
        view._credential = credential
        return view

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        if self._credential is None:
            raise RuntimeError(f"a call to the {self.service} made for no session")
        headers = {"Authorization": f"Bearer {self._credential.get_secret_value()}"}
        request_id = request_id_var.get()
        if request_id:
            headers["X-Request-Id"] = request_id
        # The browser's address and User-Agent, for the audit log's entries of what the
        # console does for it (the key service believes the address only from the proxies
        # TOLLGATE_HTTP_FORWARDED_ALLOW_IPS lists: name the console's there).
        address, agent = browser_var.get()
        if address:
            headers["X-Forwarded-For"] = address
        if agent:
            headers["User-Agent"] = agent
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: httpx.QueryParams | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON answer of one call; ApiProblem or ApiUnavailable when it fails."""
        headers = self._headers()
        try:
            response = await self._http.request(
                method, path, params=params, json=json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiUnavailable(
                self.service, 503, f"The {self.service} at {self.base_url} did not answer."
            ) from exc
        if response.status_code >= 400:
            raise _problem(self.service, response)
        if response.status_code == 204 or not response.content:
            return {}
        # Amounts are exact JSON numbers: read them as Decimal, never through float.
        return jsonlib.loads(response.text, parse_float=Decimal)


class KeysApi(ApiClient):
    """Projects and keys (the key service)."""

    async def _list_all(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of an OpenAI-style list, following ``after`` while ``has_more``."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(1000):  # a bound, not a limit anyone reaches: 100,000 items
            query = {**params, "limit": "100", **({"after": after} if after else {})}
            answer = await self.call("GET", path, params=httpx.QueryParams(query))
            items.extend(answer["data"])
            if not answer.get("has_more") or not answer["data"]:
                return items
            after = answer["data"][-1]["id"]
        raise ApiUnavailable(self.service, 502, f"The {self.service} kept answering more pages.")

    async def list_projects(self) -> list[dict[str, Any]]:
        return await self._list_all("/v1/projects", {})

    async def create_project(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/v1/projects", json={"name": name})
        return result

    async def get_project(self, project_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/v1/projects/{seg(project_id)}")
        return result

    async def list_keys(self, project_id: str, *, include_revoked: bool) -> list[dict[str, Any]]:
        params = {"include_revoked": "true" if include_revoked else "false"}
        return await self._list_all(f"/v1/projects/{seg(project_id)}/keys", params)

    async def update_project(self, project_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH a project: fields given replace theirs, a ``None`` removes that limit."""
        path = f"/v1/projects/{seg(project_id)}"
        result: dict[str, Any] = await self.call("PATCH", path, json=fields)
        return result

    async def create_key(
        self, project_id: str, name: str, policy: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = f"/v1/projects/{seg(project_id)}/keys"
        body = {"name": name, **(policy or {})}
        result: dict[str, Any] = await self.call("POST", path, json=body)
        return result

    async def update_key(
        self, project_id: str, key_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """PATCH a key: fields given replace theirs, a ``None`` removes that limit."""
        path = f"/v1/projects/{seg(project_id)}/keys/{seg(key_id)}"
        result: dict[str, Any] = await self.call("PATCH", path, json=fields)
        return result

    async def rename_key(self, project_id: str, key_id: str, name: str) -> dict[str, Any]:
        path = f"/v1/projects/{seg(project_id)}/keys/{seg(key_id)}"
        result: dict[str, Any] = await self.call("PATCH", path, json={"name": name})
        return result

    async def set_default(self, project_id: str, key_id: str) -> dict[str, Any]:
        path = f"/v1/projects/{seg(project_id)}/keys/{seg(key_id)}/default"
        result: dict[str, Any] = await self.call("POST", path)
        return result

    async def rotate_key(self, project_id: str, key_id: str, grace_s: int) -> dict[str, Any]:
        path = f"/v1/projects/{seg(project_id)}/keys/{seg(key_id)}/rotate"
        result: dict[str, Any] = await self.call(
            "POST", path, json={"grace_period_seconds": grace_s}
        )
        return result

    async def delete_key(self, project_id: str, key_id: str) -> None:
        await self.call("DELETE", f"/v1/projects/{seg(project_id)}/keys/{seg(key_id)}")

    async def audit_logs(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        """One page of the audit log, newest first (``after``: the page past that entry)."""
        query = httpx.QueryParams(tuple(params))
        result: dict[str, Any] = await self.call("GET", "/v1/organization/audit_logs", params=query)
        return result


async def _all_pages(
    api: ApiClient, path: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every bucket of an OpenAI-style page list, following ``next_page``."""
    buckets: list[dict[str, Any]] = []
    page: str | None = None
    for _ in range(1000):  # a bound, not a limit anyone reaches: 1000 pages of buckets
        query = [*params, ("page", page)] if page else params
        answer = await api.call("GET", path, params=httpx.QueryParams(tuple(query)))
        buckets.extend(answer.get("data", []))
        page = answer.get("next_page")
        if not answer.get("has_more") or not page:
            return buckets
    raise ApiUnavailable(api.service, 502, f"The {api.service} kept answering more pages.")


class UsageApi(ApiClient):
    """The Usage API (metering)."""

    async def usage(self, project_id: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return await _all_pages(self, f"/v1/projects/{seg(project_id)}/usage", params)


class CostsApi(ApiClient):
    """The Costs API (billing)."""

    async def costs(self, project_id: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return await _all_pages(self, f"/v1/projects/{seg(project_id)}/costs", params)

    async def total(self, project_id: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """The exact total over a range (``/costs/total``): one query, however long the range."""
        path = f"/v1/projects/{seg(project_id)}/costs/total"
        query = httpx.QueryParams(tuple(params))
        result: dict[str, Any] = await self.call("GET", path, params=query)
        return result


class BrowserMiddleware(HttpMiddleware):
    """Keep the browser's address and User-Agent for the calls made while serving it."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), None)
        token = browser_var.set((client[0] if client else None, _printable(agent, 512)))
        try:
            await self.app(scope, receive, send)
        finally:
            browser_var.reset(token)


def _printable(text: str | None, limit: int) -> str | None:
    """At most limit printable characters (a header must not carry a control character)."""
    if text is None:
        return None
    kept = "".join(c for c in text[:limit] if c.isprintable())
    return kept or None
