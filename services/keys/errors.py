"""The key service's errors, in OpenAI's shape (from shared.errors).

KeysError                         500 server_error
├── ProjectNotFound               404 not_found
├── KeyNotFound                   404 not_found
├── KeyRevoked                    409 key_revoked
├── KeyExpired                    409 key_expired
├── InvalidExpiry                 400 invalid_expires_at
├── ModelNotInCatalogue           400 model_not_found (param allowed_models)
├── AdminKeyNotFound              404 not_found
├── AdminKeyRevoked               409 key_revoked
└── DatabaseUnavailable           503 service_unavailable

InsufficientPermissions (403, the permission named) is shared.errors', as metering and billing
answer it too.
"""

from __future__ import annotations

from shared.errors import ApiError, BadRequest, Conflict, NotFound, ServiceUnavailable


class KeysError(ApiError):
    """Base of the key service's own errors."""


class ProjectNotFound(KeysError, NotFound):
    """No project has that id."""

    def __init__(self, project_id: str) -> None:
        super().__init__(f"No project found with id '{project_id}'.", param="project_id")


class KeyNotFound(KeysError, NotFound):
    """No key of that project has that id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"No API key found with id '{key_id}' in this project.", param="key_id")


class KeyRevoked(KeysError, Conflict):
    """The key is revoked: it can no longer be changed."""

    code = "key_revoked"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"The API key '{key_id}' is revoked; it cannot be changed or revoked again."
        )


class KeyExpired(KeysError, Conflict):
    """The key has expired: it cannot become the default nor get a new secret."""

    code = "key_expired"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"The API key '{key_id}' has expired; create a new key instead.")


class InvalidExpiry(KeysError, BadRequest):
    """An expiry that is not in the future."""

    def __init__(self, message: str, *, param: str, code: str = "invalid_expires_at") -> None:
        super().__init__(message, param=param, code=code)


class ModelNotInCatalogue(KeysError, BadRequest):
    """An allowed model that the catalogue does not know."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model[:256]}' is not in the catalogue; 'allowed_models' takes "
            "catalogue ids (the gateway's GET /v1/models lists them).",
            param="allowed_models",
            code="model_not_found",
        )


class AdminKeyNotFound(KeysError, NotFound):
    """No admin key in the caller's sight has that id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"No admin API key found with id '{key_id[:128]}'.", param="key_id")


class AdminKeyRevoked(KeysError, Conflict):
    """The admin key is revoked: it can no longer be changed."""

    code = "key_revoked"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"The admin API key '{key_id}' is revoked; it cannot be rotated or revoked again."
        )


class DatabaseUnavailable(KeysError, ServiceUnavailable):
    """PostgreSQL cannot be reached right now."""
