"""Shared REST models: the problem body, pagination."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request models refuse fields they do not know."""

    model_config = ConfigDict(extra="forbid")


class Page(Strict):
    limit: int = Field(50, ge=1, le=500, description="Items per page (max 500).")
    page: int = Field(1, ge=1, le=1_000_000, description="1-based page number.")

    def slice(self, items: list[Any]) -> list[Any]:
        start = (self.page - 1) * self.limit
        return items[start : start + self.limit]


class FieldError(BaseModel):
    field: str
    message: str
    type: str | None = None


class KerosyneError(BaseModel):
    """The same error as Kerosyne clients read it."""

    code: int = Field(description="The HTTP status.")
    message: str = Field(description='A short sentence, e.g. "Position validation failed".')
    details: dict[str, Any] | None = Field(
        None,
        description="Cerberus's `check`, `reason`, `limit` and `requested` (VALIDATION_FAILED), the field `errors` "
        "(BAD_REQUEST), or what else the problem carries.",
    )


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is the stable machine-readable error."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = Field(None, description="The request id (also in X-Request-ID).")
    errors: list[FieldError] | None = Field(None, description="Field errors of a BAD_REQUEST.")
    details: dict[str, Any] | None = Field(None, description="What Cerberus checked (VALIDATION_FAILED).")
    error: KerosyneError = Field(description="The Kerosyne error member, on every problem.")
