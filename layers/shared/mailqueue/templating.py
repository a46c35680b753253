"""Rendering stored templates with caller data, safely: Jinja2's sandbox with bounds on work and size.

A template is written by an operator but rendered with data that callers send, and its output
becomes an email, so rendering must neither reach Python's internals nor run away:

- Jinja2's ``ImmutableSandboxedEnvironment``: no access to underscore attributes, unsafe callables
  or methods that modify lists, dicts and sets.
- ``StrictUndefined``: a variable the data lacks is an error naming it (``data.user.name``), never a
  blank in a sent email.
- HTML is autoescaped; the subject and text are not (they are not HTML), and the rendered email
  then passes every check a hand-written one passes (see ``mailqueue.templates``).
- Bounded work: every loop iteration, call and filter spends one step of a per-render budget.
- Bounded size: the output is counted as it is produced; every concatenation, ``+``, ``*``, ``%``
  and filter or method result is checked against the same limit, and numbers that set a width or a
  repeat count (``center(10**9)``) are refused before anything is built.

Only the API renders (at enqueue and for previews): the sender, requeue and events functions never
import this module, so Jinja2 is not on their cold start.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from mailqueue.errors import FieldError
from mailqueue.templates import InvalidTemplate, TemplateDataError

# The rendered body may be as long as a hand-written one (limits.MAX_BODY_CHARS).
MAX_OUTPUT_CHARS = 1_000_000
# Loop iterations, calls and filters of one render of one part.
MAX_STEPS = 100_000
# A width, repeat count or exponent larger than this is refused (no legitimate email needs one).
MAX_NUMBER = MAX_OUTPUT_CHARS
PARTS = ("subject", "text", "html")

_LOOP_FILTER = "mailqueue_bounded_loop"
_SIZE_FILTER = "mailqueue_bounded_size"
# A printf or format() width or precision of seven digits or more.
_HUGE_WIDTH = re.compile(r"\d{7,}")


class _LimitExceeded(Exception):
    """Rendering went past one of the bounds above."""


@dataclass
class _Render:
    """The state of one render: the steps left and where each dict of the data sits."""

    steps: int
    paths: dict[int, str]


_current: ContextVar[_Render | None] = ContextVar("mailqueue_render", default=None)


def _spend() -> None:
    state = _current.get()
    if state is None:
        return
    state.steps -= 1
    if state.steps < 0:
        raise _LimitExceeded(f"the template runs more than {MAX_STEPS} loop iterations, calls and filters")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) else 0


def _checked(value: Any) -> Any:
    if _size(value) > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"a value in the template grows past {MAX_OUTPUT_CHARS} characters or items")
    return value


def _check_format(template: Any) -> None:
    if isinstance(template, str) and _HUGE_WIDTH.search(template):
        raise _LimitExceeded("a format width or precision in the template is too large")


def _check_arguments(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            raise _LimitExceeded(f"a number given to a filter or function is larger than {MAX_NUMBER}")


def _estimate(name: str, subject: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The size a replace or join would build, before it is built (both can grow quadratically)."""
    if name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(subject) + 1 if old == "" else subject.count(old)
        return len(subject) + count * max(0, len(new) - len(old))
    if name == "join":
        if isinstance(subject, str):  # str.join(items)
            separator, items = subject, args[0] if args else None
        else:  # the join filter: items | join(separator)
            separator, items = (args[0] if args else kwargs.get("d", "")), subject
        if isinstance(items, list | tuple | range) and isinstance(separator, str):
            return len(separator) * len(items) + sum(_size(item) or len(str(item)) for item in items)
    return 0


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # Filters that take the context or eval context get it first; the value filtered comes next.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        value, rest = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        _check_arguments(rest, kwargs)
        if name == "format":
            _check_format(value)
        if _estimate(name, value, rest, kwargs) > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"the {name} filter would build more than {MAX_OUTPUT_CHARS} characters")
        return _checked(function(*args, **kwargs))

    return update_wrapper(bounded, function)


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


class _MissingVariable(UndefinedError):
    """A variable the data lacks, with its path in the data when known."""

    def __init__(self, message: Any = None) -> None:
        self.path: str | None = message.path if isinstance(message, _Path) else None
        super().__init__(f"{self.path} is undefined" if self.path else message)


@dataclass(frozen=True)
class _Path:
    path: str


class _Undefined(StrictUndefined):
    """StrictUndefined whose error names the variable as the caller's data does: ``user.name``."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        wanted: type[TemplateRuntimeError] = _MissingVariable if exc is UndefinedError else exc
        super().__init__(hint, obj, name, wanted)

    @property
    def _undefined_message(self) -> Any:
        name = self._undefined_name
        if self._undefined_hint is None and isinstance(name, str):
            if self._undefined_obj is missing:
                return _Path(name)
            state = _current.get()
            parent = state.paths.get(id(self._undefined_obj)) if state else None
            if parent:
                return _Path(f"{parent}.{name}")
        return super()._undefined_message


class _Bounds(NodeTransformer):
    """Wraps each loop's iterable in the step-counting filter and each ``~`` in the size check."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - the name Jinja2's visitor calls
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802 - the name Jinja2's visitor calls
        self.generic_visit(node)
        return nodes.Filter(node, _SIZE_FILTER, [], [], None, None, lineno=node.lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, part: str) -> None:
        # HTML is escaped; text and HTML keep the newline their file ends with, a subject is one line.
        super().__init__(
            autoescape=part == "html",
            keep_trailing_newline=part != "subject",
            undefined=_Undefined,
            auto_reload=False,
            cache_size=0,
        )
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters[_LOOP_FILTER] = _bounded_loop
        self.filters[_SIZE_FILTER] = _checked

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's tree, with every loop's iterable and every ``~`` concatenation bounded."""
        tree: nodes.Template = _Bounds().visit(super()._parse(source, name, filename))
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if _size(sequence) and isinstance(count, int) and _size(sequence) * count > MAX_OUTPUT_CHARS:
                    raise _LimitExceeded(f"a repetition in the template builds more than {MAX_OUTPUT_CHARS} items")
        numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if operator == "**" and numbers and abs(left) > 1 and max(1, int(abs(left)).bit_length()) * abs(right) > 65536:
            raise _LimitExceeded("a power in the template is too large")
        if operator == "%":
            _check_format(left)
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _spend()
        _check_arguments(args, kwargs)
        # The sandbox hands out str.format wrapped; the method it wraps tells the string it formats.
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        method = getattr(target, "__name__", "")
        if isinstance(owner, str):
            if method in {"format", "format_map"}:
                _check_format(owner)
            if _estimate(method, owner, args, kwargs) > MAX_OUTPUT_CHARS:
                raise _LimitExceeded(f"{method} would build more than {MAX_OUTPUT_CHARS} characters")
        return _checked(super().call(__context, __obj, *args, **kwargs))


_ENVIRONMENTS: dict[str, _Sandbox] = {}


def _environment(part: str) -> _Sandbox:
    if part not in _ENVIRONMENTS:
        _ENVIRONMENTS[part] = _Sandbox(part)
    return _ENVIRONMENTS[part]


@dataclass(frozen=True)
class Parts:
    """A message's three templated parts, as source or as rendered text."""

    subject: str
    text: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class Compiled:
    """A template's parts compiled once; render them as often as needed."""

    subject: Template
    text: Template | None
    html: Template | None


def compile_parts(parts: Parts) -> Compiled:
    """Compile each part; a part that does not compile is an :class:`InvalidTemplate` naming it and the line."""
    compiled: dict[str, Template | None] = {}
    errors: list[FieldError] = []
    for part in PARTS:
        source = getattr(parts, part)
        if source is None:
            compiled[part] = None
            continue
        try:
            compiled[part] = _environment(part).from_string(source)
        except TemplateSyntaxError as error:
            errors.append(FieldError(part, f"line {error.lineno}: {error.message}"))
            compiled[part] = None
        except RecursionError:
            errors.append(FieldError(part, "nested too deeply to compile"))
            compiled[part] = None
    if errors:
        summary = "; ".join(f"{error.field} {error.message}" for error in errors)
        raise InvalidTemplate(f"the template does not compile: {summary}", errors)
    subject = compiled["subject"]
    assert subject is not None
    return Compiled(subject=subject, text=compiled["text"], html=compiled["html"])


_CACHE_LIMIT = 64
_compiled_cache: dict[tuple[str, int], Compiled] = {}


def compiled_version(name: str, version: int, parts: Parts) -> Compiled:
    """``compile_parts``, remembered per (name, version) across calls: a stored version never changes."""
    key = (name, version)
    found = _compiled_cache.get(key)
    if found is None:
        found = compile_parts(parts)
        if len(_compiled_cache) >= _CACHE_LIMIT:
            _compiled_cache.pop(next(iter(_compiled_cache)))
        _compiled_cache[key] = found
    return found


def _paths(data: Any) -> dict[int, str]:
    """Where each dict and list of the data sits, to name a missing key by its full path.

    Walked with a stack of its own, since data may be nested as deep as JSON allows.
    """
    found: dict[int, str] = {}
    pending: list[tuple[Any, str]] = [(data, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            found[id(value)] = path
            pending.extend((item, f"{path}.{key}" if path else str(key)) for key, item in value.items())
        elif isinstance(value, list):
            found[id(value)] = path
            pending.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    return found


def render_parts(compiled: Compiled, data: dict[str, Any]) -> Parts:
    """Render every part with ``data``; a :class:`TemplateDataError` names what went wrong and where."""
    paths = _paths(data)
    rendered: dict[str, str | None] = {}
    for part in PARTS:
        template = getattr(compiled, part)
        rendered[part] = None if template is None else _render_one(part, template, data, paths)
    subject = rendered["subject"]
    assert subject is not None
    return Parts(subject=subject, text=rendered["text"], html=rendered["html"])


def _render_one(part: str, template: Template, data: dict[str, Any], paths: dict[int, str]) -> str:
    token = _current.set(_Render(steps=MAX_STEPS, paths=paths))
    try:
        pieces: list[str] = []
        length = 0
        for piece in template.generate(data):
            length += len(piece)
            if length > MAX_OUTPUT_CHARS:
                raise _LimitExceeded(f"the rendered {part} is longer than {MAX_OUTPUT_CHARS} characters")
            pieces.append(piece)
        return "".join(pieces)
    except _MissingVariable as error:
        if error.path is None:
            message = f"{_where(error, part)}: {error}"
            raise TemplateDataError(
                f"the template cannot be rendered with this data: {message}", [FieldError("data", message)]
            ) from None
        message = f"the template uses {error.path}, which data does not give ({_where(error, part)})"
        raise TemplateDataError(message, [FieldError(f"data.{error.path}", message)]) from None
    except (_LimitExceeded, SecurityError) as error:
        message = f"{_where(error, part)}: {error}"
        raise TemplateDataError(
            f"the template cannot be rendered: {message}", [FieldError("template", message)]
        ) from None
    except Exception as error:
        message = f"{_where(error, part)}: {type(error).__name__}: {error}"
        raise TemplateDataError(
            f"the template cannot be rendered with this data: {message}", [FieldError("data", message)]
        ) from None
    finally:
        _current.reset(token)


def _where(error: BaseException, part: str) -> str:
    """``html, line 3``: the line comes from the traceback, which Jinja2 rewrites to point into the template."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == "<template>" and frame.lineno:
            return f"{part}, line {frame.lineno}"
    return part
