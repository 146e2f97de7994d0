"""Who a credential is: the key service's console sign-in endpoint, and the break-glass rule.

Every sign-in, by the form or through a single sign-on proxy, is posted to the key service's
``POST /internal/v1/console_sign_ins`` (guarded by the internal token), which answers the
principal or 401 and writes ``login.succeeded`` or ``login.failed`` to the audit log. When the
key service cannot answer, the operator token still signs in (compared in constant time with
the console's own: break-glass, logged as not audited); an admin key cannot, since only the
key service can check it.

    SignInProblem
    ├── SignInRefused       401: neither the operator token nor an active admin key
    └── SignInUnavailable   the key service did not answer, failed, or answered nonsense
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from pydantic import SecretStr

from services.console.access import ROOT, Principal
from shared.http import token_matches
from shared.logs import request_id_var

log = logging.getLogger("services.console.sign_ins")

PATH = "/internal/v1/console_sign_ins"
CREDENTIAL_MAX = 512  # the endpoint's bound; a longer one is sent cut (and refused)
USER_AGENT_MAX = 512
IP_MAX = 64


class SignInProblem(Exception):
    """A sign-in that did not give a principal."""


class SignInRefused(SignInProblem):
    """The key service answered 401: not a credential that may sign in."""


class SignInUnavailable(SignInProblem):
    """The key service could not check the credential."""


class SignIns:
    """The key service's console sign-in endpoint, called with the internal token."""

    def __init__(
        self,
        base_url: str,
        internal_token: SecretStr,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = internal_token
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self, credential: str, ip: str | None, user_agent: str | None) -> Principal:
        """The principal of credential, audited by the key service; SignInRefused (401) or
        SignInUnavailable."""
        body = {
            "credential": credential[:CREDENTIAL_MAX],
            "ip": ip[:IP_MAX] if ip else None,
            "user_agent": user_agent[:USER_AGENT_MAX] if user_agent else None,
        }
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        request_id = request_id_var.get()
        if request_id:
            headers["X-Request-Id"] = request_id
        try:
            response = await self._http.post(PATH, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SignInUnavailable(
                f"the key service did not answer ({type(exc).__name__})"
            ) from exc
        if response.status_code == 401 and _code(response) == "invalid_credentials":
            raise SignInRefused
        if response.status_code == 401:
            # Not the credential: the key service refused the console itself.
            log.error(
                "the key service refused the console's internal token: check "
                "TOLLGATE_CONSOLE_INTERNAL_TOKEN (the same secret as TOLLGATE_KEYS_INTERNAL_TOKEN)"
            )
            raise SignInUnavailable("the key service refused the console's internal token")
        if response.status_code != 200:
            # 5xx is an outage; anything else (a key service without the endpoint, a refused
            # internal token) is one too, as far as signing in goes: only it can check a key.
            raise SignInUnavailable(f"the key service answered {response.status_code}")
        try:
            answer: Any = response.json()
            return Principal.of(answer["principal"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SignInUnavailable("the key service's answer had no principal") from exc


def _code(response: httpx.Response) -> str | None:
    """The error code of an answer in OpenAI's shape, or None."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


async def identify(
    sign_ins: SignIns,
    operator_token: SecretStr,
    credential: str,
    *,
    ip: str | None,
    user_agent: str | None,
) -> Principal:
    """The principal credential signs in as: the key service's answer, or root by the
    break-glass rule when it cannot answer and credential is the console's operator token."""
    try:
        principal = await sign_ins.check(credential, ip, user_agent)
    except SignInUnavailable as exc:
        if token_matches(credential, operator_token):
            log.warning("sign-in not audited: key service unavailable (%s)", exc)
            return ROOT
        raise
    if len(credential) > CREDENTIAL_MAX:  # what was checked is not what was typed
        raise SignInRefused
    return principal
