"""The Costs API's and the spend read's answers as their documents show them.

``service.costs_page``, ``api.get_total`` and ``service.spend_body`` build the answers (amounts
as exact JSON numbers, spend as decimal strings); these models only describe them (api.py lists
them in ``responses=``), so the documents say what the routes send.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Amount(BaseModel):
    """An amount of US dollars, exact: a JSON number written without rounding."""

    value: float = Field(description="an exact decimal number (parse it as a decimal)")
    currency: Literal["usd"]


class CostsResult(BaseModel):
    """The cost of one bucket (per key, model and line item when grouped by them)."""

    object: Literal["organization.costs.result"]
    amount: Amount
    line_item: str | None = Field(
        description='"<model>, <line item>" when grouped by line_item; else null'
    )
    project_id: str
    api_key_id: str | None = Field(description="null unless grouped by api_key_id")
    model: str | None = Field(description="null unless grouped by model or line_item")


class CostsBucket(BaseModel):
    """One UTC day: its results (none when nothing was spent)."""

    object: Literal["bucket"]
    start_time: int = Field(description="Unix seconds, inclusive")
    end_time: int = Field(description="Unix seconds, exclusive")
    results: list[CostsResult]


class CostsPage(BaseModel):
    """A page of day buckets, every bucket of the page listed in order."""

    object: Literal["page"]
    data: list[CostsBucket]
    has_more: bool
    next_page: str | None = Field(description="the `page` of the next page; null: the last")


class CostsTotal(BaseModel):
    """The total over a range: summed exactly, then rounded to the cent half-up."""

    object: Literal["costs.total"]
    project_id: str
    start_time: int = Field(description="the start of start_time's UTC day, Unix seconds")
    end_time: int = Field(description="Unix seconds, exclusive")
    amount: Amount = Field(description="rounded to the cent, half-up")
    exact_amount: Amount


class ProjectSpend(BaseModel):
    """What a gateway reads of a project's spend: exact decimal strings, never floats."""

    object: Literal["project.spend"]
    project_id: str
    since: int = Field(description="the UTC day the sum starts at, Unix seconds")
    spent_usd: str = Field(description="a decimal string in plain notation")
    keys: dict[str, str] = Field(description="per key id, a decimal string")
    as_of: int = Field(description="Unix seconds when it was read")
