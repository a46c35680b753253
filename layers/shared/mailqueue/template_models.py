"""Stored templates as callers send and read them.

The request models generate the API's OpenAPI schema, so their descriptions are user documentation.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TEMPLATE_NAME = re.compile(TEMPLATE_NAME_PATTERN)
# A template is one DynamoDB item (at most 400 KB); its parts together stay well inside that.
MAX_TEMPLATE_PART_CHARS = 200_000
MAX_TEMPLATE_BYTES = 350_000
MAX_SUBJECT_TEMPLATE_CHARS = 2_000

TemplateName = Annotated[
    str,
    StringConstraints(pattern=TEMPLATE_NAME_PATTERN),
    Field(description="A short slug: a lowercase letter or digit, then up to 63 of a-z, 0-9, '-' and '_'."),
]


class TemplateRequest(BaseModel):
    """A template's parts, each a Jinja2 template. Saving it makes a new version."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    subject: str = Field(
        min_length=1,
        max_length=MAX_SUBJECT_TEMPLATE_CHARS,
        description="The subject template; it must render to one line.",
    )
    text: str | None = Field(default=None, max_length=MAX_TEMPLATE_PART_CHARS, description="The plain-text template.")
    html: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_PART_CHARS,
        description="The HTML template; values are HTML-escaped (use |safe for trusted markup).",
    )
    inline_css: bool = Field(
        default=False,
        description="Copy the HTML's <style> rules into style attributes when saving, for email clients "
        "that ignore <style> blocks.",
    )

    @model_validator(mode="after")
    def _a_body(self) -> TemplateRequest:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        size = len(json.dumps([self.subject, self.text, self.html], ensure_ascii=False).encode("utf-8"))
        if size > MAX_TEMPLATE_BYTES:
            raise ValueError(f"the template's parts total {size} bytes; the limit is {MAX_TEMPLATE_BYTES}")
        return self


class TemplateView(BaseModel):
    """One version of a template."""

    model_config = ConfigDict(defer_build=True)

    name: str
    version: int
    subject: str
    text: str | None = None
    html: str | None = None
    created_at: str


class TemplateSummary(BaseModel):
    model_config = ConfigDict(defer_build=True)

    name: str
    latest_version: int
    created_at: str
    updated_at: str


class TemplateList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    templates: list[TemplateSummary]
    cursor: str | None = Field(default=None, description="Pass it back to get the next page; absent on the last.")


class PreviewRequest(BaseModel):
    """The data to render a template with; nothing is sent."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict, description="The template's variables.")
    version: int | None = Field(default=None, ge=1, description="A version; the latest when left out.")


class Preview(BaseModel):
    """A template rendered with data, as an email would carry it."""

    model_config = ConfigDict(defer_build=True)

    template: str
    template_version: int
    subject: str
    text: str | None = Field(description="The text part: the template's, or made from the HTML when it has none.")
    html: str | None = None
