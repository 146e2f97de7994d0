"""The Usage API's answer as its document shows it (OpenAI's organization usage shape).

``service.usage_page`` builds the answer; these models only describe it (api.py lists them
in ``responses=``), so the document says what the route sends.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class UsageResult(BaseModel):
    """Tokens and requests of one bucket (per key and model when grouped by them)."""

    object: Literal["organization.usage.completions.result"]
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    input_cached_tokens: int = Field(ge=0, description="of input_tokens, served from cache")
    num_model_requests: int = Field(ge=0)
    num_errors: int = Field(ge=0, description="requests answered with a status of 400 or more")
    project_id: str
    api_key_id: str | None = Field(description="null unless grouped by api_key_id")
    model: str | None = Field(description="null unless grouped by model")


class UsageBucket(BaseModel):
    """One time bucket: its results (none when nothing was used)."""

    object: Literal["bucket"]
    start_time: int = Field(description="Unix seconds, inclusive")
    end_time: int = Field(description="Unix seconds, exclusive")
    results: list[UsageResult]


class UsagePage(BaseModel):
    """A page of buckets, every bucket of the page listed in order."""

    object: Literal["page"]
    data: list[UsageBucket]
    has_more: bool
    next_page: str | None = Field(description="the `page` of the next page; null: the last")
