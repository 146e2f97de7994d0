"""Token usage: read from the upstream's ``usage`` (each API names its fields its own way),
or estimated when the upstream gives none. Also the stream meter that watches SSE events.

    chat, completions  prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens
    embeddings         prompt_tokens (no output tokens)
    responses          input_tokens, output_tokens, input_tokens_details.cached_tokens
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from shared.events import UsageSource

_TOKEN = re.compile(r"\w+|[^\w\s]")
_DECODER = json.JSONDecoder()
_USAGE_KEY = b'"usage"'


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    source: UsageSource = "upstream"


def estimate_tokens(text: str) -> int:
    """A rough token count: word runs and punctuation marks (what most BPE tokenizers approach)."""
    return len(_TOKEN.findall(text))


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def from_upstream(endpoint: str, usage: object) -> Usage | None:
    """Usage from an upstream ``usage`` object, or None when it has none."""
    if not isinstance(usage, dict):
        return None
    if endpoint == "/v1/responses":
        details = usage.get("input_tokens_details") or {}
        return Usage(
            _count(usage.get("input_tokens")),
            _count(usage.get("output_tokens")),
            _count(details.get("cached_tokens")) if isinstance(details, dict) else 0,
        )
    details = usage.get("prompt_tokens_details") or {}
    output = 0 if endpoint == "/v1/embeddings" else _count(usage.get("completion_tokens"))
    return Usage(
        _count(usage.get("prompt_tokens")),
        output,
        _count(details.get("cached_tokens")) if isinstance(details, dict) else 0,
    )


def find_usage(body: bytes) -> object:
    """The top-level ``usage`` of a JSON body, found from its end (it is last in practice),
    so a 20 MB embeddings answer is not parsed whole just to read three numbers."""
    at = body.rfind(_USAGE_KEY)
    while at >= 0:
        colon = body.find(b":", at + len(_USAGE_KEY))
        try:
            value, _ = _DECODER.raw_decode(body[colon + 1 :].decode().lstrip())
        except (ValueError, UnicodeDecodeError):
            value = None
        if isinstance(value, dict) and ("prompt_tokens" in value or "input_tokens" in value):
            return value
        at = body.rfind(_USAGE_KEY, 0, at)
    return None


def _loads(data: bytes) -> object:
    """JSON from an upstream: orjson (several times faster) for what it reads, else the
    standard library, which is more lenient (NaN, integers past 64 bits), so both read what
    json alone read. None when neither can: a hostile upstream's nesting only fails the parse
    (orjson stops at 1,024 levels; the standard library's RecursionError is caught)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def request_text(endpoint: str, payload: dict[str, Any]) -> str:
    """The prompt text of a request, for estimating its input tokens."""
    if endpoint == "/v1/chat/completions":
        messages = payload.get("messages")
        if isinstance(messages, list):
            return "\n".join(
                _content_text(m.get("content")) for m in messages if isinstance(m, dict)
            )
        return ""
    if endpoint == "/v1/responses":
        given = payload.get("input")
        text = given if isinstance(given, str) else ""
        if isinstance(given, list):
            text = "\n".join(
                _content_text(m.get("content", m.get("text"))) for m in given if isinstance(m, dict)
            )
        instructions = payload.get("instructions")
        return f"{instructions}\n{text}" if isinstance(instructions, str) else text
    given = payload.get("prompt" if endpoint == "/v1/completions" else "input")
    if isinstance(given, list):
        return "\n".join(x for x in given if isinstance(x, str))
    return given if isinstance(given, str) else ""


def response_text(endpoint: str, body: dict[str, Any]) -> str:
    """The generated text of a whole (non-streamed) answer."""
    if endpoint == "/v1/responses":
        out = body.get("output")
        items = out if isinstance(out, list) else []
        return " ".join(_content_text(i.get("content")) for i in items if isinstance(i, dict))
    choices = body.get("choices")
    texts = []
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict):
                texts.append(_content_text(message.get("content")))
            elif isinstance(choice.get("text"), str):
                texts.append(choice["text"])
    return " ".join(texts)


def estimate(endpoint: str, payload: dict[str, Any], output_text: str) -> Usage:
    output = 0 if endpoint == "/v1/embeddings" else estimate_tokens(output_text)
    return Usage(estimate_tokens(request_text(endpoint, payload)), output, 0, "estimated")


def _usage_report_at(data: bytes, start: int = 0) -> int:
    """Where the first ``"usage"`` that may report usage is, or -1: one that is no key
    (``"usage"`` as a text), or a key whose value is not ``null`` (OpenAI's chunks carry
    ``"usage": null`` when usage is asked for). A ``"usage"`` inside a text is escaped
    (``\\"usage\\"``): what is left is a key, or a value."""
    at = data.find(_USAGE_KEY, start)
    while at >= 0:
        rest = data[at + 7 : at + 71].lstrip()  # bounded: long whitespace counts as not null
        if not (rest.startswith(b":") and rest[1:].lstrip().startswith(b"null")):
            return at
        at = data.find(_USAGE_KEY, at + 7)
    return -1


def _data_of(event: bytes) -> bytes:
    """The data of one SSE event (its lines, without the blank line that ends it)."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip()  # one data line, as every OpenAI-style upstream sends
    return b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))


class StreamMeter:
    """Watches a stream's SSE events: keeps the usage, counts what was produced, and drops the
    usage-only chunk the gateway asked for when the client did not.

    A chat or completions chunk that reports no usage is only kept, not parsed: its text is
    needed only if the usage never comes (then it is estimated), which is rare. Kept chunks
    are parsed into their text once they pass ``_UNREAD_MAX`` bytes, or when asked for it.
    ``feed_events`` takes what arrived at once: the events before the first that may report
    usage are kept as they came, in one piece."""

    _FINAL_RESPONSE_EVENTS = ("response.completed", "response.incomplete", "response.failed")
    _UNREAD_MAX = 64 * 1024

    def __init__(self, endpoint: str, forward_usage_chunk: bool) -> None:
        self.endpoint = endpoint
        self.forward_usage_chunk = forward_usage_chunk
        self.usage: Usage | None = None
        self._text: list[str] = []
        self._unread: list[bytes] = []  # events without usage, in order, not parsed yet
        self._unread_size = 0

    @property
    def output_text(self) -> list[str]:
        """The text produced so far, piece by piece."""
        self._read_unread()
        return self._text

    def feed(self, event: bytes) -> bool:
        """Account for one SSE event; True when it goes on to the client."""
        return self._account(event.rstrip(b"\n"))

    def feed_events(self, events: bytes) -> bytes:
        """Account for whole SSE events (``\\n`` line ends, each ending in a blank line); what
        of them goes on to the client. The events before the first that may report usage are
        kept unread in one piece, not looked at one by one: most of a chat stream."""
        start = 0
        if self.endpoint != "/v1/responses":
            at = _usage_report_at(events)
            if at < 0:
                start = len(events)
            else:
                cut = events.rfind(b"\n\n", 0, at)
                start = 0 if cut < 0 else cut + 2
            if start:
                self._keep(events[:start])
            if start == len(events):
                return events
        parts = events[start:].split(b"\n\n")
        tail = parts.pop()  # after the last blank line: empty, but for a stream's last bytes
        kept = [part for part in parts if self._account(part)]
        keep_tail = bool(tail) and self._account(tail)
        if len(kept) == len(parts) and keep_tail == bool(tail):
            return events
        rebuilt = b"".join(part + b"\n\n" for part in kept)
        return events[:start] + rebuilt + (tail if keep_tail else b"")

    def _account(self, event: bytes) -> bool:
        """One SSE event without its blank line; True when it goes on to the client."""
        data = _data_of(event)
        if not data or data == b"[DONE]":
            return True
        if self.endpoint == "/v1/responses":
            chunk = _loads(data)
            return self._response_event(chunk) if isinstance(chunk, dict) else True
        if _usage_report_at(data) < 0:
            self._keep(event)
            return True
        chunk = _loads(data)
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        if choices:  # text with the usage: after the kept chunks' text, in order
            self._read_unread()
            self._take_text(choices)
        usage = chunk.get("usage")
        found = None if usage is None else from_upstream(self.endpoint, usage)
        if found is not None:
            self.usage = found
            return self.forward_usage_chunk or bool(choices)
        return True

    def _keep(self, events: bytes) -> None:
        """Keep events that report no usage unread (their text is read if it is needed)."""
        self._unread.append(events)
        self._unread_size += len(events)
        if self._unread_size > self._UNREAD_MAX:
            self._read_unread()

    def _take_text(self, choices: object) -> None:
        """Append the text of a chat or completions chunk's ``choices``."""
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict):
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(piece, str):
                    self._text.append(piece)

    def _read_unread(self) -> None:
        for events in self._unread:
            for event in events.split(b"\n\n"):
                data = _data_of(event)
                if data and data != b"[DONE]":
                    chunk = _loads(data)
                    if isinstance(chunk, dict):
                        self._take_text(chunk.get("choices"))
        self._unread.clear()
        self._unread_size = 0

    def _response_event(self, chunk: dict[str, Any]) -> bool:
        kind = chunk.get("type")
        if kind == "response.output_text.delta" and isinstance(chunk.get("delta"), str):
            self._text.append(chunk["delta"])
        elif kind in self._FINAL_RESPONSE_EVENTS:
            response = chunk.get("response")
            if isinstance(response, dict):
                self.usage = from_upstream(self.endpoint, response.get("usage")) or self.usage
        return True

    def result(self, payload: dict[str, Any]) -> Usage:
        """The upstream's usage, or an estimate of what was asked and produced so far."""
        if self.usage is not None:
            return self.usage
        return estimate(self.endpoint, payload, "".join(self.output_text))


def answer_usage(endpoint: str, payload: dict[str, Any], content: bytes) -> Usage:
    """The usage of a whole answer: the upstream's own figures, else an estimate from the
    request and the answer's text (an answer that is not JSON counts as no text)."""
    found = from_upstream(endpoint, find_usage(content))
    if found is not None:
        return found
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        answer = {}
    text = response_text(endpoint, answer) if isinstance(answer, dict) else ""
    return estimate(endpoint, payload, text)
