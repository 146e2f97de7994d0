"""The console's settings: ``TOLLGATE_CONSOLE_`` variables, built in the app factory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import InternalTokenSettings


class ConsoleSettings(InternalTokenSettings):
    """Where the APIs the console calls answer, and how its sessions behave."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_CONSOLE_", extra="ignore", frozen=True)

    internal_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token of the key service's console sign-in endpoint (its"
        " TOLLGATE_KEYS_INTERNAL_TOKEN; not the operator token)",
    )
    keys_url: str = Field("http://127.0.0.1:8081", description="key service base URL")
    metering_url: str = Field("http://127.0.0.1:8082", description="Usage API base URL")
    billing_url: str = Field("http://127.0.0.1:8083", description="Costs API base URL")
    gateway_url: str = Field(
        "http://127.0.0.1:8080", description="gateway base URL shown in the snippets"
    )
    catalogue_path: Path | None = Field(
        None, description="model catalogue YAML: model filter choices and the snippets' model"
    )
    session_idle_s: int = Field(8 * 3600, gt=0, description="a session ends after this idle time")
    session_max_s: int = Field(24 * 3600, gt=0, description="and after this long in any case")
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure cookie flag: auto sets it when the request came over https"
    )
    api_timeout_s: float = Field(10.0, gt=0, description="timeout of each call to an API")
    signin_attempts_per_minute: int = Field(
        10, gt=0, description="failed sign-ins allowed per client address and minute"
    )
    proxy_auth: bool = Field(
        False,
        description="sign in whoever a single sign-on proxy sends with 'Authorization: Bearer"
        " sk-tg-admin-...' (that user's admin key); off: the sign-in form only",
    )
