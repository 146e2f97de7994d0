"""How every Kafka client of Tollgate connects: plaintext on one machine, TLS (``SSL``) or TLS
with SASL (``SASL_SSL``) to a managed or secured cluster (README.md: "Past one machine").

``KafkaAccess`` is the whole of it: the bootstrap servers and the security settings, built
from a service's ``KAFKA_*`` settings (``ServiceSettings.kafka``). ``client_options`` turns it
into the keyword arguments of every aiokafka client (producer, consumer, admin) and
``broker_security`` into FastStream's, so no client connects another way. TLS verifies the
broker's certificate and its host name against the CA file (or the system's CAs when none is
given); a client certificate and key make it mutual TLS. SASL mechanisms: ``PLAIN``,
``SCRAM-SHA-256``, ``SCRAM-SHA-512`` (user name and password, a ``SecretStr`` never logged)
and ``OAUTHBEARER`` (a token provider: ``module:callable`` returning an aiokafka
``AbstractTokenProvider``, for Amazon MSK's IAM or an identity provider's tokens). Nothing
falls back to plaintext: a setting that asks for TLS gets TLS or an error.
"""

from __future__ import annotations

import importlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from aiokafka.abc import AbstractTokenProvider
from faststream.security import (
    BaseSecurity,
    SASLOAuthBearer,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)


class KafkaSettingsError(ValueError):
    """The Kafka settings contradict each other or name a file that cannot be used."""


@dataclass(frozen=True)
class KafkaAccess:
    """Where Kafka answers and how to connect to it."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    oauth_token_provider: str | None = None  # module:callable

    def __post_init__(self) -> None:
        for problem in self.problems():
            raise KafkaSettingsError(problem)

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming the setting (empty: usable)."""
        out: list[str] = []
        tls = self.security_protocol != "PLAINTEXT"
        files = {
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        if not tls and (any(files.values()) or self.sasl_mechanism):
            out.append(
                "KAFKA_SECURITY_PROTOCOL is PLAINTEXT but TLS or SASL settings are given: "
                "set it to SSL or SASL_SSL (nothing is sent in clear text by mistake)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            out.append("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (mutual TLS)")
        for name, path in files.items():
            if path is not None and not path.is_file():
                out.append(f"{name}: no readable file at {path}")
        sasl = self.security_protocol == "SASL_SSL"
        if sasl and self.sasl_mechanism is None:
            out.append("KAFKA_SECURITY_PROTOCOL is SASL_SSL: set KAFKA_SASL_MECHANISM")
        if not sasl and self.sasl_mechanism is not None:
            out.append("KAFKA_SASL_MECHANISM needs KAFKA_SECURITY_PROTOCOL=SASL_SSL")
        if self.sasl_mechanism == "OAUTHBEARER":
            if not self.oauth_token_provider:
                out.append("OAUTHBEARER needs KAFKA_SASL_OAUTH_TOKEN_PROVIDER (module:callable)")
        elif self.sasl_mechanism is not None:
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            if not self.sasl_username or not password:
                out.append(
                    f"{self.sasl_mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
        return out

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers, one per entry (the setting separates them by commas)."""
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (host names and certificates verified), or None for plaintext."""
        if self.security_protocol == "PLAINTEXT":
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def token_provider(self) -> AbstractTokenProvider | None:
        """The OAUTHBEARER token provider the setting names, made once per client."""
        if self.oauth_token_provider is None:
            return None
        module_name, _, attribute = self.oauth_token_provider.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
            provider = factory()
        except (ImportError, AttributeError, TypeError) as exc:
            raise KafkaSettingsError(
                f"KAFKA_SASL_OAUTH_TOKEN_PROVIDER: cannot make a provider of "
                f"{self.oauth_token_provider!r} ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(provider, AbstractTokenProvider):
            raise KafkaSettingsError(
                "KAFKA_SASL_OAUTH_TOKEN_PROVIDER must name a callable returning an "
                "aiokafka.abc.AbstractTokenProvider"
            )
        return provider

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka producer, consumer or admin client."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.security_protocol == "PLAINTEXT":
            return options
        options |= {"security_protocol": self.security_protocol, "ssl_context": self.ssl_context()}
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = self.token_provider()
        elif self.sasl_mechanism is not None and self.sasl_password is not None:
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def broker_security(self) -> tuple[BaseSecurity | None, dict[str, Any]]:
        """FastStream's security object, and the broker's extra keyword arguments."""
        context = self.ssl_context()
        if self.security_protocol == "PLAINTEXT":
            return None, {}
        if self.sasl_mechanism is None:
            return BaseSecurity(ssl_context=context, use_ssl=True), {}
        if self.sasl_mechanism == "OAUTHBEARER":
            provider = self.token_provider()
            return SASLOAuthBearer(ssl_context=context, use_ssl=True), {
                "sasl_oauth_token_provider": provider
            }
        password = self.sasl_password.get_secret_value() if self.sasl_password else ""
        username = self.sasl_username or ""
        kinds = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256}
        kind = kinds.get(self.sasl_mechanism, SASLScram512)
        return kind(username, password, ssl_context=context, use_ssl=True), {}

    def describe(self) -> str:
        """The connection, for a log line: never the password."""
        who = f" as {self.sasl_username}" if self.sasl_username else ""
        how = f"{self.security_protocol}"
        if self.sasl_mechanism:
            how += f"/{self.sasl_mechanism}"
        return f"{self.bootstrap} ({how}{who})"


def kafka_options(kafka: str | KafkaAccess) -> dict[str, Any]:
    """aiokafka's keyword arguments for a bootstrap string (plaintext) or a KafkaAccess."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    return kafka.client_options()
