"""Configuration, read once per container from the function's environment."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, Field

# Environment variables whose names differ from their field's.
_ENV_NAMES = {"configuration_set": "SES_CONFIGURATION_SET"}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


class Settings(BaseModel):
    """Everything a function needs to know about its deployment.

    Defaults suit the local stack; the template sets every value for Lambda.
    """

    table_name: str = "mailqueue-emails"
    idempotency_table_name: str = "mailqueue-idempotency"
    send_queue_url: str = ""
    high_priority_queue_url: str = ""
    attachments_bucket: str = ""
    # Addresses (app@example.com) or domains (example.com) that `from` may use.
    sending_identities: tuple[str, ...] = ("example.com",)
    configuration_set: str | None = None

    max_attempts: int = Field(default=5, ge=1, le=20)
    retention_days: int = Field(default=30, ge=1)
    # The account's SES send rate (emails per second) and how many sender invocations share it:
    # up to ``sender_concurrency`` per send queue (the event source's MaximumConcurrency), on each
    # of ``send_queues`` queues (normal and high priority).
    send_rate: float = Field(default=14.0, gt=0)
    sender_concurrency: int = Field(default=2, ge=1)
    send_queues: int = Field(default=2, ge=1)

    # The floors of the timings below are low enough for a local run that drains in seconds (the chaos
    # run); a deployment keeps the defaults, and claim_seconds above the sender's timeout.
    # How long a published email may wait in SQS before the requeue function publishes it again.
    queued_grace_seconds: int = Field(default=900, ge=1)
    # How long a claim lasts: longer than the sender's timeout, so only a dead sender's claim expires.
    claim_seconds: int = Field(default=180, ge=1)
    # How long an email whose send had an unknown outcome waits for SES's Send event to settle it.
    unknown_outcome_seconds: int = Field(default=900, ge=1)
    # How long an email waits when the account or configuration, not the email, is at fault.
    account_error_seconds: int = Field(default=900, ge=1)
    backoff_base_seconds: int = Field(default=30, ge=1)
    backoff_max_seconds: int = Field(default=3600, ge=1)

    deadline_shards: int = Field(default=4, ge=1, le=64)
    status_shards: int = Field(default=4, ge=1, le=64)
    # Content larger than this (bytes of the content record) goes to S3 instead of DynamoDB.
    inline_content_limit: int = Field(default=300_000, ge=1_000, le=390_000)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(_ENV_NAMES.get(name, name.upper()))
            if raw is None or raw == "":
                continue
            values[name] = _csv(raw) if name == "sending_identities" else raw
        return cls.model_validate(values)

    def queue_url(self, priority: str) -> str:
        return self.high_priority_queue_url if priority == "high" else self.send_queue_url


@cache
def get_settings() -> Settings:
    return Settings.from_env()
