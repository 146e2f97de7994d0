"""The proxy: authenticated request in, the model's upstream answer out, one usage event.

The body is read once (bounded, ``request/body.py``) and parsed once; the fields that decide
metering and limits are checked (``request/fields.py``), and the upstream gets the parsed body
written again, never the client's bytes: what it reads (one ``model``, one ``stream``, the output
limit reserved, its own model name, ``stream_options.include_usage`` on streams) is what the
gateway read, whatever duplicate keys or escapes the client's bytes held. Answers are passed
through as bytes; streams event by event as they arrive.

The usage event carries the catalogue id, or ``UNKNOWN_MODEL``; never the client's string,
and building it cannot fail on anything the client sent (``usage/event.py``).

Each model's route is built once at start (``upstream/route.py``); a stream is relayed, after this
returned its response, by ``usage/relay.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

import orjson
from fastapi import Request
from opentelemetry import trace
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from services.gateway.errors import (
    ModelNotFound,
    NoHealthyUpstream,
    UpstreamError,
    UpstreamTimeout,
    WrongModelKind,
)
from services.gateway.keys.auth import Authenticator
from services.gateway.policies.gate import Admission, PolicyGate
from services.gateway.request.body import (
    Body,
    BodyBudget,
    BodyLimits,
    read_body,
    requested_model,
    serialise,
)
from services.gateway.request.fields import Reading, forwarded, read_fields
from services.gateway.telemetry.probe import tracing
from services.gateway.upstream.client import UpstreamConnectFailed, UpstreamConnectionError
from services.gateway.upstream.fleet import Replica, affinity_of
from services.gateway.upstream.pool import NotSent, UpstreamPool, UpstreamResponse
from services.gateway.upstream.route import ENDPOINT_KINDS, Route, routes_of
from services.gateway.usage.emitter import UsageEmitter
from services.gateway.usage.event import usage_message
from services.gateway.usage.meter import StreamMeter, Usage, answer_usage
from services.gateway.usage.relay import close_upstream, relay_events
from services.gateway.usage.responses import MeteredResponse, MeteredStream
from shared.catalogue import Catalogue
from shared.errors import ApiError
from shared.events import UNKNOWN_MODEL, Endpoint, KeyState
from shared.policy import SCOPE_OF_PATH

# What _finish is given: the usage, or how to measure it (run inside its guard, since an
# estimate walks the client's body).
Measure = Usage | Callable[[], Usage]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tollgate.gateway")

_USAGE_OPTION_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
# Client errors the upstream found in the request: the client should see them as they are.
# Anything else (5xx, its 401/403/404) is the gateway's or upstream's problem: 502.
_PASS_THROUGH = frozenset({400, 409, 413, 422, 429})
# nginx's "client closed request": the client left before its request was read to the end.
CLIENT_CLOSED = 499


def _span(name: str, attributes: dict[str, str]) -> AbstractContextManager[trace.Span]:
    """The request's span; with telemetry off (no SDK provider installed, so every span would
    be a non-recording one) a no-op without the cost of making one and making it current."""
    if not tracing():
        return nullcontext(trace.INVALID_SPAN)
    return tracer.start_as_current_span(name, attributes=attributes)


@dataclass
class Call:
    """One authenticated request, until its usage event is written."""

    key: KeyState
    endpoint: Endpoint
    request_id: str
    started: float
    model: str = UNKNOWN_MODEL  # the catalogue id once the request named a known model
    stream: bool = False
    done: bool = False
    admission: Admission | None = None  # its claims on rate limits and budgets, if any
    upstream_endpoint: str | None = None  # the fleet's endpoint that served it (or last tried)


class Proxy:
    """Routes by the catalogue, forwards over a shared connection pool, meters every answer."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        auth: Authenticator,
        policies: PolicyGate,
        pool: UpstreamPool,
        emitter: UsageEmitter,
        limits: BodyLimits,
        budget: BodyBudget,
    ) -> None:
        self.catalogue = catalogue
        self.routes = routes_of(catalogue.models)
        self.auth = auth
        self.policies = policies
        self.pool = pool
        self.emitter = emitter
        self.limits = limits
        self.budget = budget

    async def handle(self, request: Request, endpoint: str) -> Response:
        """Authenticate, then forward; every outcome after authentication is metered."""
        started = perf_counter()
        key = await self.auth.authenticate(request.headers.get("authorization"))
        request_id = str(request.state.request_id)
        call = Call(key, cast(Endpoint, endpoint), request_id, started)
        attributes = {"tollgate.key_id": key.key_id, "tollgate.project_id": key.project_id}
        body: Body | None = None
        with _span(f"gateway {endpoint}", attributes) as span:
            try:
                self.policies.check_scope(key, SCOPE_OF_PATH[endpoint])
                body = await read_body(request, self.limits, self.budget)
                route = self._route(call, body.payload)
                reading = read_fields(body.payload, endpoint)
                call.stream = reading.stream
                span.set_attribute("tollgate.model", call.model)
                self.policies.check_model(key, call.model)
                call.admission = await self.policies.admit(
                    key, route.entry, reading.output_limit, body.size, request.state
                )
                return await self._forward(request, call, route, body.payload, reading)
            except ClientDisconnect:
                # Gone mid-upload: nothing to answer, and not an error of ours.
                self._finish(call, CLIENT_CLOSED, Usage(source="estimated"))
                return Response(status_code=CLIENT_CLOSED)
            except ApiError as exc:
                span.set_attribute("http.response.status_code", exc.status_code)
                self._finish(call, exc.status_code, Usage(source="estimated"))
                raise
            except Exception:
                # A bug, not the client's doing: still counted, then the generic 500.
                self._finish(call, 500, Usage(source="estimated"))
                raise
            finally:
                # The body's share of the large-body budget: held while it was read, parsed
                # and sent, and until the upstream answered (or the request failed).
                if body is not None and body.held:
                    self.budget.give(body.held)

    def reload(self, catalogue: Catalogue) -> None:
        """Route by ``catalogue`` from the next request on; requests under way finish on the
        endpoints they were sent to, and an endpoint both catalogues name keeps its load and
        health."""
        self.routes = routes_of(catalogue.models, self.routes)
        self.catalogue = catalogue

    def _route(self, call: Call, payload: dict[str, Any]) -> Route:
        model = requested_model(payload)
        route = self.routes.get(model)
        if route is None:
            raise ModelNotFound(model)
        call.model = route.entry.id
        if route.entry.kind not in ENDPOINT_KINDS[call.endpoint]:
            raise WrongModelKind(
                f"The model `{model}` is a {route.entry.kind} model and is not supported "
                f"on {call.endpoint}."
            )
        return route

    async def _forward(
        self,
        request: Request,
        call: Call,
        route: Route,
        payload: dict[str, Any],
        reading: Reading,
    ) -> Response:
        upstream_payload = forwarded(payload, reading, call.endpoint)
        if route.entry.upstream_model != call.model:
            upstream_payload = {**upstream_payload, "model": route.entry.upstream_model}
        wants_usage_chunk = True
        if call.stream and call.endpoint in _USAGE_OPTION_ENDPOINTS:
            wants_usage_chunk = reading.include_usage
            if not wants_usage_chunk:
                options = payload.get("stream_options") or {}
                upstream_payload = {
                    **upstream_payload,
                    "stream_options": {**options, "include_usage": True},
                }
        # Always written again: {"model": "cheap", "model": "dear"}, or a key spelled with
        # escapes, reaches the upstream as the one value the gateway routed and metered.
        body = serialise(upstream_payload)
        affinity = _affinity(call, payload) if route.fleet.affinity else None
        upstream, content = await self._exchange(request, call, route, body, affinity)
        if upstream.status >= 400:
            return self._upstream_failure(call, upstream, content)
        if call.stream:
            return self._stream(call, upstream, payload, wants_usage_chunk)
        status = upstream.status
        return MeteredResponse(
            content,
            status,
            upstream.headers.get("content-type", "application/json"),
            lambda: self._finish(
                call, status, lambda: answer_usage(call.endpoint, payload, content)
            ),
        )

    async def _exchange(
        self, request: Request, call: Call, route: Route, body: bytes, affinity: int | None
    ) -> tuple[UpstreamResponse, bytes]:
        """The upstream's answer and, unless it is a stream, its whole body (read here, so
        that its timeouts and breaks are 504 and 502). A connection not read to its end
        (a failure, or the client gone) is closed, never reused."""
        sent = perf_counter()
        upstream: UpstreamResponse | None = None
        replica: Replica | None = None
        try:
            replica, upstream = await self._send(call, route, body, affinity)
            # From here, a failure is the answer's (its body timed out or broke off).
            content = b""
            if not call.stream or upstream.status >= 400:
                content = await upstream.read()
                upstream.release()
        except TimeoutError:
            if upstream is not None:
                upstream.close()
            if replica is not None:
                route.fleet.failed(replica, "timeout")
            raise UpstreamTimeout(
                f"The model's server did not answer within {route.entry.upstream.timeout_s:g} s."
            ) from None
        except UpstreamConnectionError as exc:
            if upstream is not None:
                upstream.close()
            if replica is not None:
                route.fleet.failed(replica, "broken")
            raise UpstreamError(
                f"The model's server could not be reached ({type(exc).__name__})."
            ) from None
        except BaseException:
            if upstream is not None:
                upstream.close()
            raise
        finally:
            request.state.upstream_s = perf_counter() - sent
        return upstream, content

    async def _send(
        self, call: Call, route: Route, body: bytes, affinity: int | None
    ) -> tuple[Replica, UpstreamResponse]:
        """Send to an endpoint of the model's fleet; one that nothing of the request reached
        (refused, or a pooled connection closed under it) leaves the request to another, at
        most ``retries`` times within the model's timeout. A request that reached a server is
        never sent again."""
        fleet = route.fleet
        request_id = b"x-request-id: %s\r\n" % call.request_id.encode()
        started = perf_counter()
        tried: list[Replica] = []
        while True:
            replica = fleet.pick(tried, affinity)
            if replica is None:
                raise NoHealthyUpstream(call.model, fleet.retry_after_s())
            call.upstream_endpoint = replica.name
            fleet.sent(replica)
            began = perf_counter()
            try:
                upstream = await self.pool.post(
                    replica.targets[call.endpoint], body, request_id, route.timeouts, replica
                )
            except NotSent as exc:
                replica.end()
                connect = isinstance(exc.error, UpstreamConnectFailed)
                fleet.failed(replica, "connect" if connect else "broken")
                tried.append(replica)
                out_of_time = perf_counter() - started >= route.timeouts.pool_s
                if len(tried) > route.entry.upstream.retries or out_of_time:
                    raise exc.error from None
                log.info(
                    "upstream %s of %s failed before the request reached it (%s); retrying",
                    replica.name,
                    call.model,
                    type(exc.error).__name__,
                )
                continue
            except TimeoutError:
                replica.end()
                fleet.failed(replica, "timeout")
                raise
            except UpstreamConnectionError:
                replica.end()
                fleet.failed(replica, "broken")
                raise
            except BaseException:
                replica.end()
                raise
            fleet.answered(replica, upstream.status, perf_counter() - began)
            return replica, upstream

    def _upstream_failure(self, call: Call, upstream: UpstreamResponse, content: bytes) -> Response:
        status = upstream.status
        if status in _PASS_THROUGH:
            passed = MeteredResponse(
                content,
                status,
                upstream.headers.get("content-type", "application/json"),
                lambda: self._finish(call, status, Usage(source="estimated")),
            )
            if "retry-after" in upstream.headers:
                passed.headers["retry-after"] = upstream.headers["retry-after"]
            return passed
        detail = ""
        try:
            detail = str(orjson.loads(content)["error"]["message"])[:500]
        except (orjson.JSONDecodeError, KeyError, TypeError, RecursionError):
            detail = ""
        log.warning("upstream of %s answered %s", call.model, status)
        raise UpstreamError(
            f"The model's server answered {status}" + (f": {detail}" if detail else ".")
        )

    def _stream(
        self,
        call: Call,
        upstream: UpstreamResponse,
        payload: dict[str, Any],
        wants_usage: bool,
    ) -> Response:
        meter = StreamMeter(call.endpoint, wants_usage)
        outcome = {"status": upstream.status}
        return MeteredStream(
            relay_events(upstream, meter, outcome, call.model),
            lambda: self._finish(call, outcome["status"], lambda: meter.result(payload)),
            lambda: close_upstream(upstream),
        )

    def _finish(self, call: Call, status: int, usage: Measure) -> None:
        """Write the call's usage event, once. Never raises on what the client sent: the
        usage is measured under a guard and the event's fields are bounded before it is built."""
        if call.done:
            return
        call.done = True
        if not isinstance(usage, Usage):
            try:
                usage = usage()
            except Exception as exc:  # a pathological body must not lose the event
                log.warning(
                    "could not estimate the usage of a %s request (%s); counted with no tokens",
                    call.model,
                    type(exc).__name__,
                )
                usage = Usage(source="estimated")
        if call.admission is not None:
            try:
                self.policies.settle(call.admission, usage)
            except Exception:  # the usage event below must be written whatever happens here
                log.exception("could not settle a request's rate limits and budget")
        self.emitter.put(
            usage_message(
                request_id=call.request_id,
                key=call.key,
                model=call.model,
                endpoint=call.endpoint,
                status=status,
                usage=usage,
                latency_s=perf_counter() - call.started,
                stream=call.stream,
                upstream_endpoint=call.upstream_endpoint,
            )
        )


# How much of a request's first messages its endpoint affinity hashes.
_AFFINITY_PREFIX_BYTES = 2048


def _affinity(call: Call, payload: dict[str, Any]) -> int:
    """The hash a key and its request's first two messages (or input, or prompt) stick by."""
    head = payload.get("messages") or payload.get("input") or payload.get("prompt") or ""
    if isinstance(head, list):
        head = head[:2]
    try:
        prefix = orjson.dumps(head)[:_AFFINITY_PREFIX_BYTES]
    except (TypeError, orjson.JSONEncodeError):
        prefix = b""
    return affinity_of(call.key.key_id, prefix)
