"""Text no database can store, refused at the edge: NUL (PostgreSQL's text cannot hold
it) and lone surrogates (not encodable as UTF-8). Checked once for every request body
model (`CheckedModel`), form field and URL, so nothing is accepted that fails later."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, field_validator

__all__ = ["CheckedModel", "forbidden_character", "check_text"]

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


def forbidden_character(text: str) -> str | None:
    """What is wrong with `text` ("a NUL character", "a lone surrogate"), or None."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "a lone surrogate (invalid UTF-16)"


def check_text(value: Any) -> Any:
    """`value` unchanged if no string inside it holds a forbidden character; else ValueError."""
    if isinstance(value, str):
        problem = forbidden_character(value)
        if problem is not None:
            raise ValueError(f"the text holds {problem}; remove it")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            check_text(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item)
    return value


class CheckedModel(BaseModel):
    """A request body: every string field, however nested, is checked by `check_text`."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return check_text(value)
