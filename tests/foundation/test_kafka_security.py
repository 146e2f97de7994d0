"""Kafka's security settings: contradictions refused naming the setting, nothing falls back to
plaintext, and the options every client gets (aiokafka's and FastStream's) carry TLS with
host name checks and SASL as set, the password never in a description."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.abc import AbstractTokenProvider
from faststream.security import SASLScram512
from pydantic import SecretStr, ValidationError

from shared.bus import new_broker
from shared.kafka_security import KafkaAccess, KafkaSettingsError, kafka_options
from shared.settings import TokenGuardedSettings

pytestmark = pytest.mark.unit
TOKEN = "unit-admin-token-0123456789"


class Tokens(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    async def token(self) -> str:
        return "a-token"


def make_tokens() -> Tokens:
    return Tokens()


def not_tokens() -> str:
    return "a token, but not a provider"


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A file that exists (its content is read only when a context is made)."""
    path = tmp_path / "ca.pem"
    path.write_text(ssl.get_server_certificate.__doc__ or "x")
    return path


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"ssl_cafile": "ca"}, "PLAINTEXT but TLS or SASL"),
        ({"sasl_mechanism": "PLAIN"}, "PLAINTEXT but TLS or SASL"),
        ({"security_protocol": "SASL_SSL"}, "set KAFKA_SASL_MECHANISM"),
        ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"}, "needs KAFKA_SECURITY_PROTOCOL"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
            "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "KAFKA_SASL_OAUTH_TOKEN_PROVIDER",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": "ca"}, "go together"),
        ({"security_protocol": "SSL", "ssl_cafile": "missing"}, "KAFKA_SSL_CAFILE: no readable"),
    ],
)
def test_contradictions_are_refused_naming_the_setting(
    given: dict[str, Any], named: str, ca: Path
) -> None:
    values: dict[str, Any] = {
        k: (ca if v == "ca" else ca.parent / v) if k.startswith("ssl_") else v
        for k, v in given.items()
    }
    with pytest.raises(KafkaSettingsError, match=named):
        KafkaAccess("broker:9093", **values)


def test_service_settings_refuse_them_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="KAFKA_SASL_MECHANISM"):
        TokenGuardedSettings(admin_token=SecretStr(TOKEN))
    monkeypatch.setenv("TOLLGATE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        TokenGuardedSettings(admin_token=SecretStr(TOKEN))  # never SASL in clear text


def test_plaintext_is_the_bootstrap_alone() -> None:
    assert kafka_options("a:1,b:2") == {"bootstrap_servers": "a:1,b:2"}
    assert KafkaAccess("a:1,b:2").client_options() == {"bootstrap_servers": "a:1,b:2"}
    assert KafkaAccess(" a:1 , b:2 ").servers == ["a:1", "b:2"]


def test_scram_over_tls_checks_the_host_and_hides_the_password() -> None:
    access = KafkaAccess(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gateway",
        sasl_password=SecretStr("s3cret-pass"),
    )
    options = access.client_options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert options == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gateway",
        "sasl_plain_password": "s3cret-pass",
    }
    assert "s3cret" not in access.describe()
    assert "s3cret" not in repr(access)
    security, extra = access.broker_security()
    assert isinstance(security, SASLScram512)
    assert extra == {}
    # FastStream's clients (the relay's, the last_used consumer's) get the same.
    builder = new_broker(access, "client").config.broker_config.builder
    built = builder.keywords  # type: ignore[attr-defined]  # a functools.partial
    assert built["security_protocol"] == "SASL_SSL"
    assert built["sasl_mechanism"] == "SCRAM-SHA-512"
    assert built["ssl_context"].check_hostname is True


def test_oauthbearer_takes_the_named_provider() -> None:
    access = KafkaAccess(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider=f"{__name__}:make_tokens",
    )
    assert isinstance(access.client_options()["sasl_oauth_token_provider"], Tokens)
    wrong = KafkaAccess(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider=f"{__name__}:not_tokens",
    )
    with pytest.raises(KafkaSettingsError, match="AbstractTokenProvider"):
        wrong.client_options()
    missing = KafkaAccess(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider="no_such_module:tokens",
    )
    with pytest.raises(KafkaSettingsError, match="KAFKA_SASL_OAUTH_TOKEN_PROVIDER"):
        missing.client_options()


def test_redis_tls_and_acl_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.redis_client import RedisAuth, RedisSettingsError

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    auth = RedisAuth(ca_certs=ca, username="gateway", password=SecretStr("pw-0123456789"))
    assert auth.options("rediss://redis:6380/0") == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(ca),
        "username": "gateway",
        "password": "pw-0123456789",
    }
    with pytest.raises(RedisSettingsError, match="use rediss://"):
        auth.check("redis://redis:6379/0")  # TLS files with a plaintext URL: refused
    with pytest.raises(RedisSettingsError, match="go together"):
        RedisAuth(certfile=ca).check("rediss://redis:6380/0")
    with pytest.raises(RedisSettingsError, match="REDIS_SSL_CA_CERTS: no readable file"):
        RedisAuth(ca_certs=tmp_path / "missing").check("rediss://redis:6380/0")
    monkeypatch.setenv("TOLLGATE_REDIS_SSL_CA_CERTS", str(ca))
    with pytest.raises(ValidationError, match="use rediss://"):
        TokenGuardedSettings(admin_token=SecretStr(TOKEN))
    monkeypatch.setenv("TOLLGATE_REDIS_URL", "rediss://127.0.0.1:6380/0")
    monkeypatch.setenv("TOLLGATE_REDIS_PASSWORD", "pw-0123456789")
    settings = TokenGuardedSettings(admin_token=SecretStr(TOKEN))
    assert settings.redis_auth.options(settings.redis_url)["ssl_ca_certs"] == str(ca)
    assert "pw-0123456789" not in repr(settings)
