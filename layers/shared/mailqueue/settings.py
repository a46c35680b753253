"""Configuration, read once per container from the function's environment.

A frozen dataclass checked by hand rather than a pydantic model: the sender, requeue and events
functions use pydantic for nothing else, and importing it and building a model took a third of
their cold start (see docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

# Environment variables whose names differ from their field's.
_ENV_NAMES = {"configuration_set": "SES_CONFIGURATION_SET"}

# Bounds of the numeric settings, inclusive: (least, greatest or None).
_BOUNDS: dict[str, tuple[int, int | None]] = {
    "max_attempts": (1, 20),
    "retention_days": (1, None),
    "sender_concurrency": (1, None),
    "queued_grace_seconds": (1, None),
    "claim_seconds": (1, None),
    "sweep_lag_seconds": (1, None),
    "unknown_outcome_seconds": (1, None),
    "account_error_seconds": (1, None),
    "backoff_base_seconds": (1, None),
    "backoff_max_seconds": (1, None),
    "deadline_shards": (1, 64),
    "status_shards": (1, 64),
    "requeue_concurrency": (1, 64),
    "inline_content_limit": (1_000, 390_000),
}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a function needs to know about its deployment.

    Defaults suit the local stack; the template sets every value for Lambda. Values given as text
    (from the environment) are converted to each field's type; a value out of bounds is a ValueError.
    """

    # The fields, by name (the same mapping pydantic models offer under this name).
    model_fields: ClassVar[dict[str, dataclasses.Field[Any]]]

    table_name: str = "mailqueue-emails"
    idempotency_table_name: str = "mailqueue-idempotency"
    send_queue_url: str = ""
    high_priority_queue_url: str = ""
    # The dead-letter queues, counted by GET /stats (the API function alone is given them).
    send_dead_letter_queue_url: str = ""
    high_priority_dead_letter_queue_url: str = ""
    events_dead_letter_queue_url: str = ""
    attachments_bucket: str = ""
    # Addresses (app@example.com) or domains (example.com) that `from` may use.
    sending_identities: tuple[str, ...] = ("example.com",)
    configuration_set: str | None = None

    max_attempts: int = 5
    retention_days: int = 30
    # The account's SES send rate (emails per second) and how many sender invocations share it: up to
    # ``sender_concurrency`` per send queue (the event source's MaximumConcurrency). Whichever queue
    # has mail gets the whole rate: normal-priority mail waits while the high-priority queue has some
    # (``high_priority_first``), so the two queues never send at full pace together.
    send_rate: float = 14.0
    sender_concurrency: int = 2
    high_priority_first: bool = True

    # The floors of the timings below are low enough for a local run that drains in seconds (the chaos
    # run); a deployment keeps the defaults, and claim_seconds above the sender's timeout.
    # How long a published email may wait in SQS before the requeue function publishes it again.
    queued_grace_seconds: int = 900
    # How long a claim lasts: longer than the sender's timeout, so only a dead sender's claim expires.
    claim_seconds: int = 180
    # The sweep's margins (see mailqueue.sweeping): an email whose deadline lies within the grace and one lag
    # of its id's time is found by the sweep, which examines it one more lag later (clock differences
    # between functions, an enqueue's write landing late, the index catching up).
    sweep_lag_seconds: int = 30
    # How long an email whose send had an unknown outcome waits for SES's Send event to settle it.
    unknown_outcome_seconds: int = 900
    # How long an email waits when the account or configuration, not the email, is at fault.
    account_error_seconds: int = 900
    backoff_base_seconds: int = 30
    backoff_max_seconds: int = 3600

    deadline_shards: int = 4
    status_shards: int = 4
    # How many due emails one requeue run acts on at once (threads; 1: one at a time). Each waits on a
    # DynamoDB write, so the release rate grows with it until the function's CPU is busy (docs/capacity.md).
    requeue_concurrency: int = 16
    # Content larger than this (bytes of the content record) goes to S3 instead of DynamoDB.
    inline_content_limit: int = 300_000

    # The statuses whose changes are published as events on the status event bus (see mailqueue.notifications):
    # status names, or "all", or "none".
    publish_statuses: tuple[str, ...] = ("delivered", "bounced", "complained", "failed")
    status_event_bus: str = ""

    def __post_init__(self) -> None:
        for name, kind in _KINDS.items():
            object.__setattr__(self, name, _converted(name, kind, getattr(self, name)))
        if self.send_rate <= 0:
            raise ValueError(f"send_rate must be greater than 0, not {self.send_rate}")
        for name, (least, greatest) in _BOUNDS.items():
            value = getattr(self, name)
            if value < least or (greatest is not None and value > greatest):
                bounds = f"at least {least}" + (f" and at most {greatest}" if greatest is not None else "")
                raise ValueError(f"{name} must be {bounds}, not {value}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(_ENV_NAMES.get(name, name.upper()))
            if raw is None or raw == "":
                continue
            values[name] = _csv(raw) if name == "sending_identities" else raw
        return cls(**values)

    def model_copy(self, update: dict[str, Any] | None = None) -> Settings:
        """These settings with some values replaced (as pydantic models offer under this name)."""
        return dataclasses.replace(self, **(update or {}))

    def queue_url(self, priority: str) -> str:
        return self.high_priority_queue_url if priority == "high" else self.send_queue_url

    def dead_letter_queue_urls(self) -> dict[str, str]:
        """The dead-letter queues this function is given, by name (send, high_priority, events)."""
        urls = {
            "send": self.send_dead_letter_queue_url,
            "high_priority": self.high_priority_dead_letter_queue_url,
            "events": self.events_dead_letter_queue_url,
        }
        return {name: url for name, url in urls.items() if url}


Settings.model_fields = {field.name: field for field in dataclasses.fields(Settings)}
# Each field's type, as the annotation names it.
_KINDS: dict[str, str] = {name: str(field.type) for name, field in Settings.model_fields.items()}


def _converted(name: str, kind: str, value: Any) -> Any:
    """``value`` as the field's type: text from the environment becomes a number or a tuple."""
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return _flag(value)
        if kind == "tuple[str, ...]":
            return _csv(value) if isinstance(value, str) else tuple(str(item) for item in value)
        if kind == "str | None":
            return None if value is None else str(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {kind}, not {value!r}") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError


@cache
def get_settings() -> Settings:
    return Settings.from_env()
