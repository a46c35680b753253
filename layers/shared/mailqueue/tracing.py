"""The functions' tracer: Powertools' Tracer where the function is traced, and nothing where it is not.

Powertools' Tracer imports the X-Ray SDK (and with it asyncio and wrapt) even when tracing is disabled,
a third of a small function's cold start. Only the API samples traces (``Tracing: Active``); the other
functions run ``PassThrough`` with ``POWERTOOLS_TRACE_DISABLED`` set, and get a stand-in whose
decorators return the function as it is, so the SDK is never imported there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools.shared.functions import strtobool

F = TypeVar("F", bound=Callable[..., Any])


class HandlerTracer(Protocol):
    """What the handlers use of a tracer: its two decorators (Powertools' take options as well)."""

    def capture_lambda_handler(self, lambda_handler: Any) -> Callable[..., Any]: ...

    def capture_method(self, method: Any) -> Any: ...


class Untraced:
    """A tracer that records nothing and imports nothing."""

    def capture_lambda_handler(self, lambda_handler: F) -> F:
        return lambda_handler

    def capture_method(self, method: F) -> F:
        return method


def tracing_disabled(environment: dict[str, str] | None = None) -> bool:
    """As Powertools decides: disabled by POWERTOOLS_TRACE_DISABLED, or outside Lambda (no X-Ray daemon)."""
    env = os.environ if environment is None else environment
    if strtobool(env.get("POWERTOOLS_TRACE_DISABLED", "false")):
        return True
    return not env.get("LAMBDA_TASK_ROOT") or bool(env.get("AWS_SAM_LOCAL") or env.get("AWS_CHALICE_CLI_MODE"))


def tracer() -> HandlerTracer:
    """Powertools' Tracer patching botocore alone (the functions call out through nothing else), or
    :class:`Untraced` where tracing is disabled."""
    if tracing_disabled():
        return Untraced()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports the X-Ray SDK

    traced: HandlerTracer = Tracer(patch_modules=("botocore",))
    return traced
