"""What the run sends and how often each fault strikes: the configuration and each email's plan."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

SENDER = "Chaos <app@example.com>"
INDEX_TAG = "chaos_index"


# --- configuration --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Every deadline of the run, short enough to drain in seconds (deployed: minutes)."""

    # Longer than a message waits in the local queue, even on a busy machine: as on AWS (15 minutes),
    # the grace presumes a publish lost only when no sender could have reached it. Shorter, the
    # requeue function publishes again emails whose message is merely waiting; on the one process of
    # the local stack that work slows the sender, the wait grows past the grace again, and the queue
    # never drains (2 s did so: 54 to 82 emails still queued behind some 1,500 repeats).
    queued_grace_seconds: int = 10
    # SQS delays a message by at most 15 minutes; an email due later waits `scheduled` until the requeue
    # function releases it. Here the limit is 2 s, so that emails due 2 to 4 s ahead take that path.
    sqs_max_delay_seconds: int = 2
    # Longer than a live sender ever holds a claim here, even on a busy machine: as on AWS, where the
    # claim outlasts the function's timeout, only a dead sender's claim expires.
    claim_seconds: int = 8
    # The sweep's margin (deployed: 30 s): an email on its normal path is swept 2 lags past its grace.
    sweep_lag_seconds: int = 2
    unknown_outcome_seconds: int = 2
    account_error_seconds: int = 2
    backoff_base_seconds: int = 1
    backoff_max_seconds: int = 2
    requeue_every: float = 0.5
    overlap_every: float = 1.0
    # Lambda retries a failed asynchronous invocation twice, about one and two minutes apart, against
    # a claim of three minutes: here a third and two thirds of the claim.
    event_retry_delays: tuple[float, ...] = (2.5, 5.0)

    def environment(self) -> dict[str, str]:
        return {
            "QUEUED_GRACE_SECONDS": str(self.queued_grace_seconds),
            "CLAIM_SECONDS": str(self.claim_seconds),
            "SWEEP_LAG_SECONDS": str(self.sweep_lag_seconds),
            "UNKNOWN_OUTCOME_SECONDS": str(self.unknown_outcome_seconds),
            "ACCOUNT_ERROR_SECONDS": str(self.account_error_seconds),
            "BACKOFF_BASE_SECONDS": str(self.backoff_base_seconds),
            "BACKOFF_MAX_SECONDS": str(self.backoff_max_seconds),
        }


@dataclass(frozen=True)
class Faults:
    """How often each fault strikes."""

    # Per SQS publish call by a function (SendMessage or SendMessageBatch): the call fails.
    sqs_publish_fails: float = 0.05
    # Per message published: SQS delivers it twice.
    sqs_delivers_twice: float = 0.03
    # Per SQS publish attempt: SQS took the messages, but answers 500 (botocore publishes again).
    sqs_delivered_then_error: float = 0.03
    # Per DynamoDB write attempt: throttled once, botocore retries it.
    dynamodb_throttled_once: float = 0.002
    # Per DynamoDB write call: throttled at every attempt, the call fails.
    dynamodb_write_fails: float = 0.01
    # Per DynamoDB write attempt: the write lands, its answer is lost (a read timeout or a reset
    # connection); botocore tries again.
    dynamodb_answer_lost_once: float = 0.01
    # Per DynamoDB write request (its body): the write lands and the answer to every attempt is lost, so
    # the call fails although the write landed: for the status and content writes of an enqueue, and
    # for every other write (claim, outcome, requeue, events, cancel).
    enqueue_answer_lost: float = 0.005
    dynamodb_call_answer_lost: float = 0.005
    # Per SES SendEmail call.
    ses_throttles: float = 0.05
    ses_server_error: float = 0.03
    ses_account_paused: float = 0.01
    ses_timeout_before_send: float = 0.02
    ses_timeout_after_accept: float = 0.02
    sender_dies_after_accept: float = 0.02
    # SES refuses the send: the sending identity is not verified (an error of the configuration).
    ses_identity_unverified: float = 0.01
    # Per email: SES rejects it (permanent), or fails every attempt with a 5xx (it runs out of attempts;
    # a throttle never spends one).
    rejected_emails: float = 0.01
    doomed_emails: float = 0.005
    # Per email SES accepted: its Send event is lost; a Delivery event follows.
    send_event_lost: float = 0.25
    delivery_event: float = 0.3
    # Per SES event: EventBridge delivers it twice; a Delivery event comes before the Send event.
    event_delivered_twice: float = 0.05
    delivery_before_send: float = 0.2

    @classmethod
    def only(cls, **rates: float) -> Faults:
        """No fault at all but ``rates`` (SES's events still come, all of them)."""
        zero = {item.name: 0.0 for item in fields(cls)}
        return cls(**{**zero, **rates})

    def ses_table(self) -> tuple[tuple[str, float], ...]:
        return (
            ("ses_throttled", self.ses_throttles),
            ("ses_server_error", self.ses_server_error),
            ("ses_account_paused", self.ses_account_paused),
            ("ses_timeout_before_send", self.ses_timeout_before_send),
            ("ses_timeout_after_accept", self.ses_timeout_after_accept),
            ("sender_died_after_accept", self.sender_dies_after_accept),
            ("ses_identity_unverified", self.ses_identity_unverified),
        )


@dataclass(frozen=True)
class ChaosConfig:
    emails: int = 2000
    seed: int = 20_261_126
    batch_share: float = 0.5
    scheduled_share: float = 0.1
    attachment_share: float = 0.15
    high_priority_share: float = 0.1
    # Emails cancelled: a third scheduled an hour ahead then cancelled, a third cancelled at once, a third
    # cancelled at a random moment of their first seconds (racing the sender, the requeue function and
    # SES's events); None for one in a hundred (at least 6).
    cancels: int | None = None
    faults: Faults = field(default_factory=Faults)
    timings: Timings = field(default_factory=Timings)
    # Give up waiting for the queue to drain after this long (it is then a failed run: emails stuck).
    drain_timeout: float = 600.0
    # Powertools log level of the functions: the faults make them log a lot on purpose.
    log_level: str = "CRITICAL"

    @property
    def cancel_count(self) -> int:
        return self.cancels if self.cancels is not None else max(6, self.emails // 100)


# --- what to send -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailPlan:
    index: int
    batch: bool
    send_in: float | None
    attachment_bytes: int
    high_priority: bool
    # "scheduled" (an hour ahead, then cancelled), "queued" (cancelled at once) or "racing" (cancelled
    # after cancel_after seconds, whatever it is doing by then)
    cancel: str | None
    fate: str  # "normal", "rejected" (permanently) or "doomed" (a 5xx at every attempt)

    def request(self, now: datetime) -> dict[str, Any]:
        email: dict[str, Any] = {
            "from": SENDER,
            "to": [f"r{self.index}@example.org"],
            "subject": f"Chaos {self.index}",
            "text": f"Email {self.index} of the chaos run.",
            "tags": [{"name": INDEX_TAG, "value": str(self.index)}],
            "metadata": {INDEX_TAG: self.index},
        }
        if self.index % 7 == 0:
            email["cc"] = [f"c{self.index}@example.org"]
        if self.high_priority:
            email["priority"] = "high"
        if self.send_in is not None:
            email["send_at"] = (now + timedelta(seconds=self.send_in)).isoformat()
        if self.attachment_bytes:
            data = random.Random(self.index).randbytes(self.attachment_bytes)
            email["attachments"] = [
                {
                    "filename": f"chaos-{self.index}.bin",
                    "content_type": "application/octet-stream",
                    "content": base64.b64encode(data).decode(),
                }
            ]
        return email


def plan_emails(config: ChaosConfig) -> list[EmailPlan]:
    rng = random.Random(f"{config.seed}:plan")
    cancelled = set(rng.sample(range(config.emails), min(config.cancel_count, config.emails)))
    # As many rejected and doomed emails as their rates give, at least one of each when the rate is not
    # zero: drawn one by one, a seed could give a run none, and its fault would never strike.
    fates: dict[int, str] = {}
    for fate_of_some, rate in (("rejected", config.faults.rejected_emails), ("doomed", config.faults.doomed_emails)):
        pool = [index for index in range(config.emails) if index not in cancelled and index not in fates]
        if rate > 0 and pool:
            for index in rng.sample(pool, min(len(pool), max(1, round(rate * config.emails)))):
                fates[index] = fate_of_some
    plans = []
    for index in range(config.emails):
        cancel = ("scheduled", "queued", "racing")[index % 3] if index in cancelled else None
        rng.random()  # once each email's draw of its fate; kept so that the draws after it stay the same
        fate = fates.get(index, "normal")
        send_in: float | None = None
        if cancel == "scheduled":
            send_in = 3600.0
        elif rng.random() < config.scheduled_share:
            send_in = round(rng.uniform(1.0, 4.0), 1)
        plans.append(
            EmailPlan(
                index=index,
                batch=cancel is None and rng.random() < config.batch_share,
                send_in=send_in,
                attachment_bytes=rng.randint(200, 8_000) if rng.random() < config.attachment_share else 0,
                high_priority=rng.random() < config.high_priority_share,
                cancel=cancel,
                fate=fate,
            )
        )
    return plans


def enqueue_units(plans: list[EmailPlan], seed: int) -> Iterator[list[EmailPlan]]:
    """Singles as they come, the others in batches of 2 to 60."""
    rng = random.Random(f"{seed}:batches")
    batch: list[EmailPlan] = []
    size = rng.randint(2, 60)
    for plan in plans:
        if not plan.batch:
            yield [plan]
            continue
        batch.append(plan)
        if len(batch) >= size:
            yield batch
            batch, size = [], rng.randint(2, 60)
    if batch:
        yield batch


def ses_fault(config: ChaosConfig, plan: EmailPlan, attempt: int) -> str | None:
    """The fault of one email's ``attempt``-th SendEmail call: the same in every run with this seed."""
    if plan.fate == "rejected":
        return "ses_rejected"
    if plan.fate == "doomed":
        return "ses_server_error"
    draw = random.Random(f"{config.seed}:ses:{plan.index}:{attempt}").random()
    for kind, chance in config.faults.ses_table():
        if draw < chance:
            return kind
        draw -= chance
    return None
