"""Validation errors as the API's error details: one code per kind of mistake, the field named, a hint.

pydantic (and Powertools' request validation, which is pydantic) reports each problem with a location
and a type; this turns each into a :class:`~mailqueue.errors.FieldError` that says what to fix:

- a field the model does not have is ``unknown_field``, with the nearest known name when one is close
  (``reply-to`` → ``reply_to``);
- a required field that is absent is ``missing_field``;
- a query, path or header parameter is ``invalid_parameter``;
- anything else is ``invalid_field``, with pydantic's message.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from mailqueue.errors import (
    INVALID_FIELD,
    INVALID_PARAMETER,
    MISSING_FIELD,
    UNKNOWN_FIELD,
    FieldError,
    InvalidEmail,
    InvalidParameter,
    MailqueueError,
)

_PARAMETER_KINDS = frozenset({"query", "path", "header"})


def field_path(location: Sequence[Any]) -> str:
    """A location as the caller wrote it: ``attachments[0].filename``, ``from`` (not ``from_``)."""
    path = ""
    for part in location:
        if part in ("body", "query", "path", "header") and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = "from" if part == "from_" else str(part)
            path = f"{path}.{name}" if path else name
    return path


def field_problems(issues: Iterable[Mapping[str, Any]], model: type[BaseModel] | None = None) -> list[FieldError]:
    """Each pydantic issue as a FieldError; ``model`` is what the body was validated against (for hints)."""
    problems: list[FieldError] = []
    for issue in issues:
        location = tuple(issue.get("loc", ()))
        kind = str(issue.get("type", ""))
        message = str(issue.get("msg", "")).removeprefix("Value error, ")
        field = field_path(location) or "body"
        if location and location[0] in _PARAMETER_KINDS:
            problems.append(FieldError(field, message, INVALID_PARAMETER))
        elif kind == "extra_forbidden":
            body_path = location[1:] if location and location[0] == "body" else location
            problems.append(FieldError(field, unknown_field_message(model, body_path), UNKNOWN_FIELD))
        elif kind == "missing":
            problems.append(FieldError(field, "is required", MISSING_FIELD))
        else:
            problems.append(FieldError(field, message, INVALID_FIELD))
    return problems


def unknown_field_message(model: type[BaseModel] | None, path: Sequence[Any]) -> str:
    known = _known_names(model, path) if model is not None and path else None
    if not known:
        return "is not a field this API knows"
    name = str(path[-1])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        name.lower().replace("-", "_"), known, n=1, cutoff=0.6
    )
    if close:
        return f"is not a field this API knows: did you mean {close[0]}?"
    return f"is not a field this API knows (the fields here: {', '.join(known)})"


def failure_of(problems: list[FieldError], what: str) -> MailqueueError:
    """The error to answer with: its code is the first problem's, its message names the first three."""
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    if problems and problems[0].code == INVALID_PARAMETER:
        return InvalidParameter(f"the request is not valid: {summary}", problems)
    return InvalidEmail(f"{what} is not valid: {summary}", problems)


def _known_names(model: type[BaseModel], path: Sequence[Any]) -> list[str] | None:
    """The field names (as callers write them) of the model that holds ``path``'s last part."""
    current: type[BaseModel] | None = model
    for part in path[:-1]:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        found = next(
            (f for name, f in current.model_fields.items() if part in {name, f.alias}),
            None,
        )
        current = _model_in(found.annotation) if found is not None else None
    if current is None:
        return None
    return [f.alias or name for name, f in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None
