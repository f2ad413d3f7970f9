"""Documenting request bodies we parse by hand, so the OpenAPI document (and schemathesis) sees them."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter


def json_body(adapter: TypeAdapter, example: Any = None) -> dict:
    schema = adapter.json_schema()
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}
