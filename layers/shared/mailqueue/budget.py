"""The API's answer must reach API Gateway within its 30 seconds: a time budget for every AWS call.

botocore bounds one attempt of a call by its client's ``connect_timeout`` and ``read_timeout``, and
sleeps before each retry (standard mode: up to ``min(2 ** (attempt - 1), 20)`` seconds for a
throttle, plus up to 5 more when AWS asks to wait with ``x-amz-retry-after``). A request that makes
a few calls, each retried, can take minutes in the worst case. So while an API request runs, every
attempt of every AWS call is checked before it starts: it starts only if, in the worst case, it and
the retry sleep after it still end inside the budget, with ``kept`` seconds left for what must come
after (settling whether an uncertain write landed). An attempt that does not fit raises
:class:`OutOfTime`, a botocore error that botocore does not retry, so the request ends with a
``503`` in time rather than a gateway timeout with its outcome unknown.

The budget lives in a context variable: functions sharing a process and its clients (the local
stack) are checked only inside an API request's own thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError

# API Gateway ends an integration that has not answered in 30 seconds (HTTP APIs: not raisable).
API_GATEWAY_SECONDS = 30.0
# What an API request may spend on AWS calls. The rest (3 s) covers what the budget does not see: a
# cold start's initialization (1 to 2 s), the store's own sleep between its retries (0.4 s at most)
# and the work after the last call.
ANSWER_SECONDS = 27.0
# botocore's standard retry mode: the largest sleep before a retry, and what x-amz-retry-after adds.
_MAX_BACKOFF = 20.0
_RETRY_AFTER_EXTRA = 5.0


class OutOfTime(BotoCoreError):  # type: ignore[misc]
    """An AWS call's attempt would not end before the API must answer: it is not started."""

    fmt = "no time left for {operation} (attempt {attempt}) before the API must answer"


def attempt_seconds(config: Any) -> float:
    """The longest one attempt can take: connecting, then waiting for the answer."""
    return float(config.connect_timeout) + float(config.read_timeout)


def backoff_seconds(attempt: int) -> float:
    """The longest botocore sleeps after ``attempt`` (1-based) fails, before the next one."""
    return min(2.0 ** (attempt - 1), _MAX_BACKOFF) + _RETRY_AFTER_EXTRA


def attempts_of(config: Any) -> int:
    return int((config.retries or {}).get("total_max_attempts", 3))


def call_seconds(config: Any) -> float:
    """The longest one call of a client with ``config`` can take, retries and their sleeps included."""
    attempts = attempts_of(config)
    return attempts * attempt_seconds(config) + sum(backoff_seconds(n) for n in range(1, attempts))


@dataclass
class Budget:
    """``seconds`` from ``started``, on the ``clock`` given (time.monotonic, or a test's)."""

    seconds: float
    started: float
    clock: Callable[[], float] = time.monotonic
    kept: float = 0.0

    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.started)


_current: ContextVar[Budget | None] = ContextVar("mailqueue_budget", default=None)
# The clock budgets are started on; tests replace it with one they move by hand.
clock: Callable[[], float] = time.monotonic


@contextmanager
def answering(seconds: float = ANSWER_SECONDS) -> Iterator[Budget]:
    """Check every AWS attempt made inside against a budget of ``seconds`` from now."""
    budget = Budget(seconds, clock(), clock)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


@contextmanager
def keeping(seconds: float) -> Iterator[None]:
    """Inside, attempts start only if ``seconds`` are left after them, for the work that follows."""
    budget = _current.get()
    if budget is None:
        yield
        return
    before = budget.kept
    budget.kept = before + seconds
    try:
        yield
    finally:
        budget.kept = before


def watch(client: Any) -> None:
    """Check each attempt of ``client``'s calls against the budget of the request running, if any."""
    config = client.meta.config

    def check(request: Any, operation_name: str = "", **_: Any) -> None:
        budget = _current.get()
        if budget is None:
            return
        retries = getattr(request, "context", {}).get("retries") or {}
        attempt = int(retries.get("attempt", 1))
        last = attempt >= int(retries.get("max", attempts_of(config)))
        need = attempt_seconds(config) + (0.0 if last else backoff_seconds(attempt)) + budget.kept
        if budget.remaining() < need:
            raise OutOfTime(operation=operation_name or "an AWS call", attempt=attempt)

    client.meta.events.register("request-created", check, unique_id="mailqueue-budget")
