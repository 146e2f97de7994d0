"""The gateway's errors, each in OpenAI's shape with the status the SDK expects.

ApiError (shared)
├── BadRequest                  400 invalid_request_error
│   ├── InvalidJson             400 (body is not JSON: syntax, invalid UTF-8, lone surrogates)
│   ├── NestedTooDeeply         400 (JSON nested deeper than the parser or writer goes)
│   ├── TooManyJsonValues       400 (a parse that could take more memory than allowed)
│   └── WrongModelKind          400 model_not_supported
├── Unauthorized                401 invalid_api_key
│   └── MissingApiKey           401 (OpenAI's wording, code null)
├── Forbidden                   403
│   ├── ModelNotAllowed         403 model_not_allowed (outside the key's allowed_models)
│   └── EndpointNotAllowed      403 insufficient_permissions (outside allowed_endpoints)
├── NotFound
│   └── ModelNotFound           404 model_not_found
├── PayloadTooLarge             413 request_too_large
├── TooManyRequests             429
│   ├── RateLimited             429 rate_limit_exceeded, type requests or tokens
│   └── QuotaExceeded           429 insufficient_quota (a budget would be passed)
├── UpstreamError               502 bad_gateway
├── UpstreamTimeout             504 timeout
└── ServiceUnavailable
    ├── AuthUnavailable         503 (neither Redis nor the key service answered)
    ├── BudgetUnavailable       503 (a budget could be checked nowhere)
    ├── LargeBodiesBusy         503 (too many large bodies in flight; retry)
    ├── NoHealthyUpstream       503 no_healthy_upstream (every endpoint of the model ejected)
    └── UsageUnavailable        503 (usage could not be kept: spool full, Kafka away)
"""

from __future__ import annotations

from typing import Any

from shared.errors import ApiError, BadRequest, NotFound, ServiceUnavailable, Unauthorized

SHOWN_MAX = 64

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


class InvalidJson(BadRequest):
    def __init__(self) -> None:
        super().__init__(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )


class NestedTooDeeply(BadRequest):
    def __init__(self) -> None:
        super().__init__("The JSON body of your request is nested too deeply.")


class TooManyJsonValues(BadRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(
            "The JSON body of your request holds too many values for its size (objects, "
            f"arrays, strings, numbers: at most {limit:,}, and not mostly tiny ones); send "
            "fewer in one request."
        )


class WrongModelKind(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="model_not_supported")


class MissingApiKey(Unauthorized):
    def __init__(self) -> None:
        super().__init__(MISSING_KEY_MESSAGE)
        self.instance_code = None  # OpenAI answers a missing key with code null


class InvalidApiKey(Unauthorized):
    def __init__(self, hint: str) -> None:
        super().__init__(f"Incorrect API key provided: {hint}. Ask your project's owner for a key.")


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """A client's string as an error message may echo it: cut to limit characters, anything
    unprintable (controls, format marks, surrogates) escaped."""
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(
            c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode()
            for c in cut
        )
    return cut + ("..." if len(text) > limit else "")


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{shown(model)}` does not exist or you do not have access to it.",
            param="model",
        )


class PayloadTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body too large: the limit is {limit} bytes.")


class UpstreamError(ApiError):
    status_code = 502
    error_type = "server_error"
    code = "bad_gateway"


class UpstreamTimeout(ApiError):
    status_code = 504
    error_type = "server_error"
    code = "timeout"


class AuthUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "The API key could not be checked right now (key store unavailable). "
            "Please retry shortly."
        )
        self.headers["retry-after"] = "1"


class UsageUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "Usage cannot be recorded right now (usage spool full), so the request was not "
            "served. Please retry shortly."
        )
        self.headers["retry-after"] = "1"


class LargeBodiesBusy(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "Too many large requests are being handled right now. Please retry shortly, or "
            "send a smaller request."
        )
        self.headers["retry-after"] = "1"


class NoHealthyUpstream(ServiceUnavailable):
    code = "no_healthy_upstream"

    def __init__(self, model: str, retry_after_s: int) -> None:
        super().__init__(
            f"No server of the model `{shown(model)}` is available right now (each failed and is "
            "being given time to recover). Please retry shortly."
        )
        self.headers["retry-after"] = str(retry_after_s)


class Forbidden(ApiError):
    status_code = 403
    error_type = "invalid_request_error"
    code = "insufficient_permissions"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"This API key is not allowed to use the model `{shown(model)}`.", param="model"
        )


class EndpointNotAllowed(Forbidden):
    def __init__(self, scope: str) -> None:
        super().__init__(
            f"You have insufficient permissions for this operation: this API key may not "
            f"call {scope}."
        )


class TooManyRequests(ApiError):
    status_code = 429


class RateLimited(TooManyRequests):
    """Over a requests or tokens per minute limit; ``error_type`` is which (OpenAI's way)."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, kind: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.headers["retry-after"] = str(retry_after_s)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["type"] = self.kind
        return body


class QuotaExceeded(TooManyRequests):
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class BudgetUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("The spend budget of this API key cannot be checked right now.")
        self.headers["retry-after"] = "1"
