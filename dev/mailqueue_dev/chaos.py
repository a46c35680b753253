"""The chaos run: thousands of emails through the local stack while AWS misbehaves, then a count.

``python -m mailqueue_dev.chaos`` (what ``make chaos`` runs) starts the local stack
(:class:`mailqueue_dev.local.LocalStack`: moto on loopback, the template's resources, the real
handlers behind the local API, SQS pollers and the requeue schedule), enqueues emails over HTTP
(single and in batches, some a few seconds ahead, some with attachments, some high priority, a few
cancelled) and injects faults into the AWS calls the handlers make, through botocore event hooks
on the clients they share (:func:`mailqueue.aws.client`):

- the SQS publish fails (at enqueue, and when the requeue function publishes again);
- SQS delivers a message twice;
- DynamoDB throttles a write: one attempt (botocore retries it) or every attempt (the call fails);
- SES throttles, answers 5xx, pauses the account, rejects the email, or times out, either before
  the request reached it (nothing sent) or after it accepted the email (the outcome is unknown);
- the sender dies after SES accepted an email, before it recorded ``sent`` (SES's event settles it,
  or, if that is lost, its claim expires and it is sent again);
- two requeue runs overlap, beside the scheduled one.

SES's events come back as they would through EventBridge: late, some lost, a failed invocation
retried twice. Then the run waits until no email is live and counts, per email id, what SES
accepted (moto's own record of sent messages, in order; the hooks tell which answers never reached
the sender) against what the table says. It fails if an email is lost, stuck, failed for a reason
other than a permanent SES error or exhausted attempts, cancelled yet sent, or sent twice outside
the documented windows: an unknown outcome, the sender dying after SES accepted, or the ``sent``
write failing.

Every timing is shortened (see :class:`Timings`) so that the run drains in seconds. The faults of
each email's SES calls are drawn from the seed, the email's index and the attempt, so they are the
same in every run; the other faults are drawn from the seed in the order the calls happen, which
the threads decide.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import itertools
import json
import logging
import random
import re
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailqueue_dev.local import LocalStack

log = logging.getLogger("mailqueue_dev.chaos")

REPOSITORY = Path(__file__).resolve().parents[2]
SENDER = "Chaos <app@example.com>"
INDEX_TAG = "chaos_index"
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
LIVE = frozenset({"scheduled", "queued", "sending", "retrying"})
SENT_OR_LATER = frozenset({"sent", "delivered", "bounced", "complained"})
DOC_BEGIN = "<!-- chaos:begin -->"
DOC_END = "<!-- chaos:end -->"


class SenderDied(BaseException):
    """The sender's runtime ends between SES's answer and the ``sent`` write.

    A BaseException, so that no ``except Exception`` in the handler or Powertools catches it: it
    leaves the invocation as a crash would, the claim stays, and the batch returns to the queue.
    """


# --- configuration --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Every deadline of the run, short enough to drain in seconds (deployed: minutes)."""

    # Longer than a message waits in the local queue, even on a busy machine: as on AWS (15 minutes),
    # the grace presumes a publish lost only when no sender could have reached it. Shorter, the
    # requeue function publishes again emails whose message is merely waiting; on the one process of
    # the local stack that work slows the sender, the wait grows past the grace again, and the queue
    # never drains (2 s did so: dozens of emails still queued behind some 1,500 repeats).
    queued_grace_seconds: int = 10
    # Longer than a live sender ever holds a claim here, even on a busy machine: as on AWS, where the
    # claim outlasts the function's timeout, only a dead sender's claim expires.
    claim_seconds: int = 8
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
    # Per DynamoDB write attempt: throttled once, botocore retries it.
    dynamodb_throttled_once: float = 0.002
    # Per DynamoDB write call: throttled at every attempt, the call fails.
    dynamodb_write_fails: float = 0.01
    # Per SES SendEmail call.
    ses_throttles: float = 0.05
    ses_server_error: float = 0.03
    ses_account_paused: float = 0.01
    ses_timeout_before_send: float = 0.02
    ses_timeout_after_accept: float = 0.02
    sender_dies_after_accept: float = 0.02
    # Per email: SES rejects it (permanent), or fails every attempt with a 5xx (it runs out of attempts;
    # a throttle never spends one).
    rejected_emails: float = 0.01
    doomed_emails: float = 0.005
    # Per email SES accepted: its Send event is lost; a Delivery event follows.
    send_event_lost: float = 0.25
    delivery_event: float = 0.3

    def ses_table(self) -> tuple[tuple[str, float], ...]:
        return (
            ("ses_throttled", self.ses_throttles),
            ("ses_server_error", self.ses_server_error),
            ("ses_account_paused", self.ses_account_paused),
            ("ses_timeout_before_send", self.ses_timeout_before_send),
            ("ses_timeout_after_accept", self.ses_timeout_after_accept),
            ("sender_died_after_accept", self.sender_dies_after_accept),
        )


@dataclass(frozen=True)
class ChaosConfig:
    emails: int = 2000
    seed: int = 20_261_126
    batch_share: float = 0.5
    scheduled_share: float = 0.1
    attachment_share: float = 0.15
    high_priority_share: float = 0.1
    # Emails cancelled right after they are accepted; None for one in a hundred (at least 4).
    cancels: int | None = None
    faults: Faults = field(default_factory=Faults)
    timings: Timings = field(default_factory=Timings)
    # Give up waiting for the queue to drain after this long (it is then a failed run: emails stuck).
    drain_timeout: float = 600.0
    # Powertools log level of the functions: the faults make them log a lot on purpose.
    log_level: str = "CRITICAL"

    @property
    def cancel_count(self) -> int:
        return self.cancels if self.cancels is not None else max(4, self.emails // 100)


# --- what to send -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailPlan:
    index: int
    batch: bool
    send_in: float | None
    attachment_bytes: int
    high_priority: bool
    cancel: str | None  # "scheduled" (an hour ahead, then cancelled) or "queued" (cancelled at once)
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
    plans = []
    for index in range(config.emails):
        cancel = ("scheduled" if index % 2 else "queued") if index in cancelled else None
        draw = rng.random()
        fate = "normal"
        if cancel is None and draw < config.faults.rejected_emails:
            fate = "rejected"
        elif cancel is None and draw < config.faults.rejected_emails + config.faults.doomed_emails:
            fate = "doomed"
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


# --- what happened --------------------------------------------------------------------------------------------


@dataclass
class Acceptance:
    """SES accepted one SendEmail call for an email."""

    sequence: int | None  # in the ledger's order; None for a send only SES's record shows
    kind: str  # "clean", "ses_timeout_after_accept", "sender_died_after_accept" or "answer_lost"
    message_id: str


@dataclass
class Ledger:
    """Everything the run saw, written from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, int] = field(default_factory=dict)  # email id -> plan index
    accepted_at: dict[str, float] = field(default_factory=dict)
    api_errors: list[str] = field(default_factory=list)
    cancel_answers: dict[str, int] = field(default_factory=dict)
    acceptances: dict[str, list[Acceptance]] = field(default_factory=lambda: defaultdict(list))
    # Email ids whose `sent` write failed after SES accepted, with the sequence number of the failure.
    sent_write_failures: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    faults: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    requeue_runs: Counter[str] = field(default_factory=Counter)
    # SES message ids of the sends that SES's events (Send or Delivery) were on their way for.
    with_events: set[str] = field(default_factory=set)
    _sequence: int = 0

    def next_sequence(self) -> int:
        with self.lock:
            self._sequence += 1
            return self._sequence

    def fault(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.faults[kind] += count

    def event(self, kind: str) -> None:
        with self.lock:
            self.events[kind] += 1

    def ses_accepted(self, email_id: str, kind: str, message_id: str) -> Acceptance:
        acceptance = Acceptance(self.next_sequence(), kind, message_id)
        with self.lock:
            self.acceptances[email_id].append(acceptance)
        return acceptance

    def sent_write_failed(self, email_id: str) -> None:
        sequence = self.next_sequence()
        with self.lock:
            self.sent_write_failures[email_id].append(sequence)


# --- faults ---------------------------------------------------------------------------------------------------


class _Body:
    """The raw stream of a made-up HTTP response."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def failed_call(status: int, code: str, message: str) -> tuple[Any, dict[str, Any]]:
    """What a before-call hook returns to end the call with an AWS error, as after botocore's retries."""
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    http = AWSResponse("https://chaos.invalid/", status, {}, _Body(b""))
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    return http, parsed


def _body_of(params: dict[str, Any]) -> dict[str, Any]:
    body = params.get("body") or b"{}"
    decoded: dict[str, Any] = json.loads(body.decode() if isinstance(body, bytes) else body)
    return decoded


def _sent_write_of(body: dict[str, Any]) -> str | None:
    """The email id, if this UpdateItem request records ``sent``."""
    target = body.get("ExpressionAttributeValues", {}).get(":to", {}).get("S")
    if target != "sent":
        return None
    email_id = body.get("Key", {}).get("pk", {}).get("S")
    return str(email_id) if email_id else None


@dataclass
class Injector:
    """The botocore hooks that break the functions' AWS calls, and record what SES accepted."""

    config: ChaosConfig
    plans: list[EmailPlan]
    ledger: Ledger
    on_accepted: Callable[[str, int, Acceptance], None]
    duplicate: Callable[[str, dict[str, Any]], None]
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _ses_attempts: Counter[int] = field(default_factory=Counter, init=False)
    _registered: list[tuple[Any, str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.config.seed}:calls")

    def chance(self, probability: float) -> bool:
        with self._lock:
            return self._rng.random() < probability

    def install(self) -> None:
        from mailqueue import aws  # noqa: PLC0415 - the clients the loaded handlers share

        ses, sqs, dynamodb = aws.client("sesv2"), aws.client("sqs"), aws.client("dynamodb")
        self._register(ses, "before-parameter-build.sesv2.SendEmail", self._ses_params)
        self._register(ses, "before-call.sesv2.SendEmail", self._ses_before)
        # After the local stack's outbox hook: the outbox shows what SES accepted, then the answer is lost.
        self._register(ses, "after-call.sesv2.SendEmail", self._ses_after)
        for operation in ("SendMessage", "SendMessageBatch"):
            self._register(sqs, f"before-parameter-build.sqs.{operation}", self._remember_params)
            self._register(sqs, f"before-call.sqs.{operation}", self._sqs_before)
            self._register(sqs, f"after-call.sqs.{operation}", self._sqs_after)
        for operation in DYNAMODB_WRITES:
            self._register(dynamodb, f"before-call.dynamodb.{operation}", self._dynamodb_before_call)
            self._register(dynamodb, f"before-send.dynamodb.{operation}", self._dynamodb_before_send)

    def uninstall(self) -> None:
        for client, event, unique_id in self._registered:
            client.meta.events.unregister(event, unique_id=unique_id)
        self._registered.clear()

    def _register(self, client: Any, event: str, handler: Callable[..., Any]) -> None:
        unique_id = f"mailqueue-chaos-{event}"
        client.meta.events.register(event, handler, unique_id=unique_id)
        self._registered.append((client, event, unique_id))

    # --- SES ----------------------------------------------------------------------------------------------

    def _ses_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        tags = {tag.get("Name"): tag.get("Value") for tag in params.get("EmailTags", [])}
        index = tags.get(INDEX_TAG)
        context["chaos_email_id"] = tags.get("email_id")
        context["chaos_index"] = int(index) if index is not None and str(index).isdigit() else None

    def _ses_before(self, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        index = context.get("chaos_index")
        if index is None or not 0 <= index < len(self.plans):
            return None
        with self._lock:
            self._ses_attempts[index] += 1
            attempt = self._ses_attempts[index]
        fault = ses_fault(self.config, self.plans[index], attempt)
        context["chaos_fault"] = fault
        if fault is None:
            return None
        self.ledger.fault(fault)
        if fault == "ses_throttled":
            return failed_call(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if fault == "ses_server_error":
            if attempt % 2:
                return failed_call(500, "InternalFailure", "The request processing has failed.")
            return failed_call(503, "ServiceUnavailable", "Service is unavailable.")
        if fault == "ses_account_paused":
            return failed_call(400, "SendingPausedException", "Email sending is disabled for your account.")
        if fault == "ses_rejected":
            return failed_call(400, "MessageRejected", "Email address is on the account-level suppression list.")
        if fault == "ses_timeout_before_send":
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        # Timing out after SES accepted, or dying then: the call goes through first.
        return None

    def _ses_after(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 500) >= 300:
            return
        email_id = context.get("chaos_email_id")
        index = context.get("chaos_index")
        if not email_id or index is None:
            return
        fault = context.get("chaos_fault")
        kind = fault if fault in {"ses_timeout_after_accept", "sender_died_after_accept"} else "clean"
        acceptance = self.ledger.ses_accepted(str(email_id), str(kind), str(parsed.get("MessageId", "")))
        self.on_accepted(str(email_id), int(index), acceptance)
        if fault == "ses_timeout_after_accept":
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        if fault == "sender_died_after_accept":
            raise SenderDied(email_id)

    # --- SQS ----------------------------------------------------------------------------------------------

    def _remember_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["chaos_params"] = dict(params)

    def _sqs_before(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if not self.chance(self.config.faults.sqs_publish_fails):
            return None
        entries = len(_body_of(params).get("Entries", [None]))
        self.ledger.fault("sqs_publish_failed")
        self.ledger.fault("sqs_publish_failed_messages", entries)
        return failed_call(500, "InternalError", "We encountered an internal error. Please try again.")

    def _sqs_after(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 500) >= 300:
            return
        params = context.get("chaos_params") or {}
        queue_url = str(params.get("QueueUrl", ""))
        if "Entries" in params:
            succeeded = {entry.get("Id") for entry in parsed.get("Successful", [])}
            messages = [entry for entry in params["Entries"] if entry.get("Id") in succeeded]
        else:
            messages = [params]
        for message in messages:
            if self.chance(self.config.faults.sqs_delivers_twice):
                self.ledger.fault("sqs_delivered_twice")
                self.duplicate(
                    queue_url,
                    {"MessageBody": message["MessageBody"], "DelaySeconds": int(message.get("DelaySeconds", 0))},
                )

    # --- DynamoDB -----------------------------------------------------------------------------------------

    def _dynamodb_before_call(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if not self.chance(self.config.faults.dynamodb_write_fails):
            return None
        self.ledger.fault("dynamodb_write_failed")
        email_id = _sent_write_of(_body_of(params))
        if email_id:
            self.ledger.fault("dynamodb_sent_write_failed")
            self.ledger.sent_write_failed(email_id)
        return failed_call(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        )

    def _dynamodb_before_send(self, request: Any, **_: Any) -> Any:
        if not self.chance(self.config.faults.dynamodb_throttled_once):
            return None
        from botocore.awsrequest import AWSResponse  # noqa: PLC0415

        retry = dict(part.strip().split("=", 1) for part in str(request.headers.get("amz-sdk-request", "")).split(";"))
        if retry.get("attempt") and retry.get("attempt") == retry.get("max"):
            # The last attempt throttled too: the call fails, as a throttled write that botocore gave up on.
            self.ledger.fault("dynamodb_write_failed")
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "{}")
            email_id = _sent_write_of(json.loads(body))
            if email_id:
                self.ledger.fault("dynamodb_sent_write_failed")
                self.ledger.sent_write_failed(email_id)
        else:
            self.ledger.fault("dynamodb_throttled_then_retried")
        error = {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded.",
        }
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": str(uuid.uuid4())}
        return AWSResponse(request.url, 400, headers, _Body(json.dumps(error).encode()))


# --- SES events ------------------------------------------------------------------------------------------------


def ses_event(event_type: str, email_id: str, message_id: str, recipient: str) -> dict[str, Any]:
    """An SES event as EventBridge delivers it to the events function."""
    now = datetime.now(UTC)
    detail: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": now.isoformat(),
            "source": SENDER,
            "messageId": message_id,
            "destination": [recipient],
            "tags": {"email_id": [email_id]},
        },
    }
    if event_type == "Send":
        detail["send"] = {}
    else:
        detail["delivery"] = {
            "timestamp": now.isoformat(),
            "recipients": [recipient],
            "processingTimeMillis": 120,
            "smtpResponse": "250 2.0.0 OK",
        }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Email Sent" if event_type == "Send" else "Email Delivered",
        "source": "aws.ses",
        "account": "123456789012",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


@dataclass
class EventBus:
    """Delivers SES events to the events function after a delay; retries a failed invocation as Lambda's
    asynchronous invocation does (twice), then drops it."""

    invoke: Callable[[dict[str, Any]], Any]
    retry_delays: tuple[float, ...]
    ledger: Ledger
    _queue: list[tuple[float, int, dict[str, Any], int]] = field(default_factory=list, init=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False)
    _stopped: bool = field(default=False, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _counter: int = field(default=0, init=False)
    # The most an invocation ended after its event was due, in seconds.
    latest: float = field(default=0.0, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-ses-events", daemon=True)
        self._thread.start()

    def publish(self, event: dict[str, Any], delay: float, tries: int = 0) -> None:
        with self._changed:
            self._counter += 1
            heapq.heappush(self._queue, (time.monotonic() + delay, self._counter, event, tries))
            self._changed.notify()

    def stop(self) -> int:
        """Stop; returns how many events were still waiting."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._changed.wait(wait)
                if self._stopped:
                    return
                due, _, event, tries = heapq.heappop(self._queue)
            kind = event["detail"]["eventType"]
            try:
                self.invoke(event)
                self.latest = max(self.latest, time.monotonic() - due)
            except Exception as error:
                name = type(error).__name__
                if tries < len(self.retry_delays):
                    self.ledger.event(f"{kind} retried after {name}")
                    self.publish(event, self.retry_delays[tries], tries + 1)
                else:
                    self.ledger.event(f"{kind} dropped after {name}")
            else:
                self.ledger.event(f"{kind} delivered")


# --- overlapping requeue runs -----------------------------------------------------------------------------------


@dataclass
class OverlappingRequeues:
    """Every ``every`` seconds, two requeue runs at once (as two containers would), beside the schedule."""

    run: Callable[[], Any]
    every: float
    ledger: Ledger
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaos-requeue-pairs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            pair = [threading.Thread(target=self._one, name=f"chaos-requeue-{n}", daemon=True) for n in (1, 2)]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join()
            self.ledger.fault("requeue_runs_overlapped")

    def _one(self) -> None:
        try:
            self.run()
        except Exception as error:  # a fault struck the run: the next one picks up what it left
            with self.ledger.lock:
                self.ledger.requeue_runs[f"failed: {type(error).__name__}"] += 1
        else:
            with self.ledger.lock:
                self.ledger.requeue_runs["finished"] += 1


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    emails: int
    seed: int
    accepted: int = 0
    accepted_single: int = 0
    accepted_in_batches: int = 0
    sent: int = 0
    delivered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    cancel_refused: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)
    ses_accepted: int = 0
    ses_recorded_by_moto: int = 0
    sent_twice: int = 0
    sent_twice_outside_windows: list[str] = field(default_factory=list)
    extra_sends_by_window: dict[str, int] = field(default_factory=dict)
    sent_in_window_yet_not_sent: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    requeue_runs: dict[str, int] = field(default_factory=dict)
    # How late (past its drawn delay) the latest SES event reached the events function.
    event_latest_seconds: float = 0.0
    seconds_to_drain: float = 0.0
    seconds_after_last_enqueue: float = 0.0
    seconds_total: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fault_kinds(self) -> int:
        return sum(1 for name, count in self.faults.items() if count and name not in _FAULT_DETAILS)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "fault_kinds": self.fault_kinds}

    def _rows(self) -> list[tuple[str, str]]:
        failed = sum(self.failed.values())
        windows = {name: count for name, count in self.extra_sends_by_window.items() if name != _DESPITE_EVENT}
        late = self.extra_sends_by_window.get(_DESPITE_EVENT, 0)
        answered = self.ses_recorded_by_moto - self.ses_accepted
        return [
            ("emails enqueued", f"{self.emails} (seed {self.seed})"),
            ("accepted", f"{self.accepted} ({self.accepted_single} single, {self.accepted_in_batches} in batches)"),
            ("sent", f"{self.sent} (of which {self.delivered} delivered, by SES's events)"),
            ("failed", f"{failed}" + "".join(f"; {reason} {count}" for reason, count in sorted(self.failed.items()))),
            ("cancelled", f"{self.cancelled} (and {self.cancel_refused} cancels refused: already sending or sent)"),
            ("**lost**", f"**{len(self.lost)}**"),
            ("**stuck live**", f"**{len(self.stuck)}**"),
            (
                "SES sends",
                f"{self.ses_recorded_by_moto} in SES's record"
                + (f", {answered} of them never answered to the sender" if answered else ""),
            ),
            ("**sent twice outside the windows**", f"**{len(self.sent_twice_outside_windows)}**"),
            (
                "sent twice inside the windows",
                f"emails {self.sent_twice}, extra sends {sum(windows.values())}"
                + "".join(f"; {WINDOWS.get(name, name)} {count}" for name, count in sorted(windows.items()))
                + (f" ({late} although SES's event was on its way: it came too late)" if late else ""),
            ),
            (
                "time to drain",
                f"{self.seconds_to_drain:.0f} s ({self.seconds_after_last_enqueue:.0f} s after the last enqueue)",
            ),
        ]

    def _faults(self, indent: str) -> list[tuple[str, int]]:
        """Each fault's label and count; a detail of the fault above it is indented."""
        return [
            (f"{indent if name in _FAULT_DETAILS else ''}{FAULTS.get(name, name)}", count)
            for name, count in sorted(self.faults.items(), key=_fault_order)
        ]

    def lines(self) -> list[str]:
        lines = [f"{name.strip('*'):<34} {value.strip('*')}" for name, value in self._rows()]
        if self.sent_in_window_yet_not_sent:
            unsettled = ", ".join(
                f"{status} {count}" for status, count in sorted(self.sent_in_window_yet_not_sent.items())
            )
            lines.append(f"{'accepted by SES in a window, yet':<34} {unsettled}")
        lines.append(f"faults injected ({self.fault_kinds} kinds)")
        lines += [f"  {name:<70} {count}" for name, count in self._faults("  ")]
        lines.append(f"SES events (the latest handed over {self.event_latest_seconds:.1f} s past its delay)")
        lines += [f"  {name:<70} {count}" for name, count in sorted(self.events.items())]
        lines.append("requeue runs beside the schedule")
        lines += [f"  {name:<70} {count}" for name, count in sorted(self.requeue_runs.items())]
        lines.append(f"{'result':<34} " + ("PASS" if self.ok else "FAIL"))
        lines += [f"  problem: {problem}" for problem in self.problems]
        return lines

    def markdown(self) -> str:
        table = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in self._rows())]
        faults = [
            "| fault injected | count |",
            "|---|---|",
            *(f"| {name} | {count} |" for name, count in self._faults("&nbsp;&nbsp;&nbsp;&nbsp;")),
        ]
        events = [
            "| SES event | count |",
            "|---|---|",
            *(f"| {name} | {count} |" for name, count in sorted(self.events.items())),
        ]
        return "\n".join([*table, "", *faults, "", *events])


FAULTS = {
    "sqs_publish_failed": "SQS publish failed (calls)",
    "sqs_publish_failed_messages": "emails those calls carried",
    "sqs_delivered_twice": "SQS delivered a message twice",
    "dynamodb_throttled_then_retried": "DynamoDB throttled a write attempt; botocore retried it",
    "dynamodb_write_failed": "DynamoDB throttled a write through its retries: the call failed",
    "dynamodb_sent_write_failed": "of which the `sent` write after SES accepted",
    "ses_throttled": "SES throttled",
    "ses_server_error": "SES answered 500 or 503",
    "ses_account_paused": "SES: sending paused for the account",
    "ses_rejected": "SES rejected the email for good",
    "ses_timeout_before_send": "SES timed out before it got the request",
    "ses_timeout_after_accept": "SES timed out after it accepted the email",
    "sender_died_after_accept": "the sender died after SES accepted, before writing `sent`",
    "requeue_runs_overlapped": "two requeue runs at once, beside the schedule",
}
WINDOWS = {
    "ses_timeout_after_accept": "unknown outcome (timed out after SES accepted)",
    "answer_lost": "unknown outcome (SES's answer never reached the sender)",
    "sender_died_after_accept": "the sender died after SES accepted",
    "sent_write_failed": "the `sent` write failed after SES accepted",
}


def _fault_order(item: tuple[str, int]) -> int:
    return list(FAULTS).index(item[0]) if item[0] in FAULTS else len(FAULTS)


# Repeats whose earlier send had an SES event on its way, which came too late to settle it.
_DESPITE_EVENT = "despite_an_event"
# Counters that detail another fault rather than count one of their own.
_FAULT_DETAILS = frozenset({"sqs_publish_failed_messages", "dynamodb_sent_write_failed"})


# --- the run --------------------------------------------------------------------------------------------------


class ChaosRun:
    """One run: start the stack, enqueue under faults, wait for the drain, count."""

    def __init__(self, config: ChaosConfig, workdir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda _: None)
        self.workdir = workdir
        self.plans = plan_emails(config)
        self.ledger = Ledger()
        self._plain_clients: dict[str, Any] = {}
        self.local = LocalStack(
            api_port=0,
            emulator_port=0,
            outbox_dir=workdir / "outbox",
            requeue_seconds=config.timings.requeue_every,
            poll_interval=0.05,
            identities=("example.com",),
            # The pace of SES is not what this run measures.
            parameters={"SendRate": "10000", "LogLevel": "ERROR"},
            environment={**config.timings.environment(), "POWERTOOLS_LOG_LEVEL": config.log_level},
            metrics_file=workdir / "metrics.log",
        )

    def run(self) -> ChaosReport:
        started = time.monotonic()
        report = ChaosReport(emails=self.config.emails, seed=self.config.seed)
        quiet = _quiet_loggers()
        try:
            with quiet, self.local:
                self._run(report)
        finally:
            report.seconds_total = time.monotonic() - started
        return report

    def _run(self, report: ChaosReport) -> None:
        local = self.local
        plain_sqs = self._plain("sqs")
        self._crash_like_a_runtime()
        bus = EventBus(self._events_invoker(), self.config.timings.event_retry_delays, self.ledger)
        injector = Injector(
            self.config,
            self.plans,
            self.ledger,
            on_accepted=lambda email_id, index, acceptance: self._emit_events(bus, email_id, index, acceptance),
            duplicate=lambda queue_url, message: plain_sqs.send_message(QueueUrl=queue_url, **message),
        )
        requeue = sys.modules[local.functions["RequeueFunction"].module_name]
        overlaps = OverlappingRequeues(
            lambda: requeue.requeuer.run(lambda: 60_000), self.config.timings.overlap_every, self.ledger
        )
        injector.install()
        bus.start()
        overlaps.start()
        try:
            enqueue_started = time.monotonic()
            self._enqueue_all()
            last_enqueue = time.monotonic()
            drained = self._wait_for_drain()
            finished = time.monotonic()
        finally:
            overlaps.stop()
            waiting = bus.stop()
            injector.uninstall()
        if waiting:
            self.ledger.events["still on their way when the run ended"] = waiting
        report.seconds_to_drain = finished - enqueue_started
        report.event_latest_seconds = bus.latest
        report.seconds_after_last_enqueue = finished - last_enqueue
        if not drained:
            report.problems.append(f"the queue did not drain in {self.config.drain_timeout:.0f} s")
        records = self._status_records()
        moto_sends = _moto_sends()
        self._count(report, records, moto_sends)

    # --- the pieces --------------------------------------------------------------------------------------------

    def _crash_like_a_runtime(self) -> None:
        """A sender that dies ends its invocation with an error: Lambda returns the whole batch to the queue."""
        function = self.local.functions["SenderFunction"]
        handler = function.handler
        assert handler is not None

        def runtime(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            except SenderDied:
                raise RuntimeError("the sender's runtime exited mid-batch") from None

        function.handler = runtime

    def _events_invoker(self) -> Callable[[dict[str, Any]], Any]:
        """What the events function does with one event, beside the other functions rather than in turn.

        On AWS the events function runs concurrently with the senders; the local stack's invocations
        take turns (Powertools keeps metrics per process), which would hold SES's events back behind
        every sender batch. So the event goes to the handler module's domain object, ``events``, with
        the handler's clients (faults included), and its Powertools wrapping is left out.
        """
        function = self.local.functions.get("EventsFunction") or getattr(self.local, "events_function", None)
        if function is not None and function.module_name in sys.modules:
            module = sys.modules[function.module_name]
        else:
            folder = REPOSITORY / "functions" / "events"
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            import importlib  # noqa: PLC0415

            # Afresh, as a new container would: its clients are the ones the faults are hooked on.
            if "ses_events" in sys.modules:
                module = importlib.reload(sys.modules["ses_events"])
            else:
                module = importlib.import_module("ses_events")
        events = module.events
        handle: Callable[[dict[str, Any]], Any] = events.handle
        return handle

    def _emit_events(self, bus: EventBus, email_id: str, index: int, acceptance: Acceptance) -> None:
        draw = random.Random(f"{self.config.seed}:events:{index}:{acceptance.sequence}")
        recipient = f"r{index}@example.org"
        published = False
        if draw.random() < self.config.faults.send_event_lost:
            self.ledger.event("Send lost")
        else:
            bus.publish(ses_event("Send", email_id, acceptance.message_id, recipient), draw.uniform(0.05, 0.6))
            published = True
        if draw.random() < self.config.faults.delivery_event:
            bus.publish(ses_event("Delivery", email_id, acceptance.message_id, recipient), draw.uniform(0.3, 1.5))
            published = True
        if published:
            with self.ledger.lock:
                self.ledger.with_events.add(acceptance.message_id)

    def _enqueue_all(self) -> None:
        import requests  # noqa: PLC0415

        step = max(1, self.config.emails // 10)
        reported = 0
        with requests.Session() as http:
            for unit in enqueue_units(self.plans, self.config.seed):
                if len(self.ledger.accepted) >= reported + step:
                    reported = len(self.ledger.accepted) // step * step
                    self.progress(f"accepted {len(self.ledger.accepted)} of {self.config.emails}")
                if len(unit) == 1:
                    email_id = self._enqueue_one(http, unit[0])
                    if email_id and unit[0].cancel:
                        self._cancel(http, email_id)
                else:
                    self._enqueue_batch(http, unit)

    def _post(self, http: Any, path: str, body: Any) -> tuple[int, Any]:
        """POST, trying again while the API answers 503 (it stored nothing), as a client should."""
        for attempt in range(10):
            answer = http.post(f"{self.local.api_url}{path}", json=body, timeout=60)
            if answer.status_code != 503:
                return answer.status_code, answer.json() if answer.content else None
            self.ledger.event("API answered 503 (nothing stored; sent again)")
            time.sleep(0.05 * (attempt + 1))
        return answer.status_code, answer.json() if answer.content else None

    def _enqueue_one(self, http: Any, plan: EmailPlan) -> str | None:
        status, body = self._post(http, "/emails", plan.request(datetime.now(UTC)))
        if status == 202 and body and body.get("id"):
            self._accepted(body["id"], plan)
            return str(body["id"])
        self.ledger.api_errors.append(f"POST /emails for email {plan.index}: {status} {body}")
        return None

    def _enqueue_batch(self, http: Any, plans: list[EmailPlan]) -> None:
        pending = plans
        for _ in range(10):
            now = datetime.now(UTC)
            status, body = self._post(http, "/emails/batch", {"emails": [plan.request(now) for plan in pending]})
            if status != 202 or not body:
                self.ledger.api_errors.append(f"POST /emails/batch of {len(pending)}: {status} {body}")
                return
            again = []
            for result in body["results"]:
                plan = pending[result["index"]]
                if result.get("id"):
                    self._accepted(result["id"], plan)
                elif (result.get("error") or {}).get("code") == "not_stored":
                    again.append(plan)
                else:
                    self.ledger.api_errors.append(f"batch item {plan.index}: {result.get('error')}")
            if not again:
                return
            self.ledger.event("batch items not stored (sent again)")
            pending = again
        self.ledger.api_errors.append(f"{len(pending)} batch items could not be stored in ten tries")

    def _accepted(self, email_id: str, plan: EmailPlan) -> None:
        with self.ledger.lock:
            self.ledger.accepted[email_id] = plan.index
            self.ledger.accepted_at[email_id] = time.monotonic()

    def _cancel(self, http: Any, email_id: str) -> None:
        for attempt in range(10):
            answer = http.delete(f"{self.local.api_url}/emails/{email_id}", timeout=60)
            if answer.status_code != 503:
                break
            time.sleep(0.05 * (attempt + 1))
        self.ledger.cancel_answers[email_id] = answer.status_code

    def _plain(self, service: str) -> Any:
        """A client of the emulator that no fault reaches: what an operator looking at the stack sees."""
        if service not in self._plain_clients:
            assert self.local.emulator is not None
            self._plain_clients[service] = self.local.emulator.client(service)
        return self._plain_clients[service]

    def _table(self) -> str:
        assert self.local.stack is not None
        return str(self.local.stack.names["EmailsTable"])

    def _live_count(self) -> int:
        dynamodb = self._plain("dynamodb")
        table = self._table()
        count, start = 0, None
        while True:
            params: dict[str, Any] = {"TableName": table, "IndexName": "by-deadline", "Select": "COUNT"}
            if start:
                params["ExclusiveStartKey"] = start
            answer = dynamodb.scan(**params)
            count += int(answer.get("Count", 0))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return count

    def _wait_for_drain(self) -> bool:
        deadline = time.monotonic() + self.config.drain_timeout
        told = time.monotonic()
        while time.monotonic() < deadline:
            live = self._live_count()
            if live == 0:
                return True
            if time.monotonic() - told >= 5:
                self.progress(f"{live} emails still live")
                told = time.monotonic()
            time.sleep(0.25)
        return False

    def _status_records(self) -> dict[str, dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

        dynamodb = self._plain("dynamodb")
        table = self._table()
        deserializer = TypeDeserializer()
        records: dict[str, dict[str, Any]] = {}
        start = None
        while True:
            params: dict[str, Any] = {
                "TableName": table,
                "FilterExpression": "sk = :status",
                "ExpressionAttributeValues": {":status": {"S": "status"}},
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = dynamodb.scan(**params)
            for item in answer.get("Items", []):
                record = {key: deserializer.deserialize(value) for key, value in item.items()}
                records[str(record["pk"])] = record
            start = answer.get("LastEvaluatedKey")
            if not start:
                return records

    # --- counting ----------------------------------------------------------------------------------------------

    def _count(self, report: ChaosReport, records: dict[str, dict[str, Any]], moto_sends: dict[str, list[str]]) -> None:
        from mailqueue.ses_errors import Outcome, classify_code  # noqa: PLC0415
        from mailqueue.settings import get_settings  # noqa: PLC0415

        ledger = self.ledger
        max_attempts = get_settings().max_attempts
        problems = report.problems
        report.accepted = len(ledger.accepted)
        report.accepted_in_batches = sum(1 for index in ledger.accepted.values() if self.plans[index].batch)
        report.accepted_single = report.accepted - report.accepted_in_batches
        report.faults = dict(ledger.faults)
        report.events = dict(ledger.events)
        report.requeue_runs = dict(ledger.requeue_runs)
        report.ses_accepted = sum(len(items) for items in ledger.acceptances.values())
        report.ses_recorded_by_moto = sum(len(items) for items in moto_sends.values())
        problems += [f"the API refused or failed: {error}" for error in ledger.api_errors[:20]]
        if report.accepted < self.config.emails:
            problems.append(f"only {report.accepted} of {self.config.emails} emails were accepted")
        seen_by_hooks = {item.message_id for items in ledger.acceptances.values() for item in items}
        recorded = {message_id for items in moto_sends.values() for message_id in items}
        if seen_by_hooks - recorded:
            problems.append(f"{len(seen_by_hooks - recorded)} sends the hooks saw accepted are not in SES's record")

        failed: Counter[str] = Counter()
        windows: Counter[str] = Counter()
        unsettled: Counter[str] = Counter()
        for email_id in sorted(set(records) - set(ledger.accepted)):
            problems.append(f"{email_id} is stored but its enqueue was never answered with its id")
        for email_id, index in sorted(ledger.accepted.items()):
            plan = self.plans[index]
            record = records.get(email_id)
            sends = self._sends(email_id, moto_sends.get(email_id, []))
            if record is None:
                report.lost.append(email_id)
                problems.append(f"{email_id} (email {index}) was accepted and is gone from the table")
                continue
            status = str(record["status"])
            told = f"{email_id} (email {index}, {_story(record)})"
            problems += [f"{told}: {forbidden}" for forbidden in _forbidden_transitions(record)]
            if status in LIVE:
                report.stuck[email_id] = status
                problems.append(f"{told} is still {status}")
                continue
            in_window, unexplained = self._duplicates(email_id, sends, windows)
            if unexplained:
                report.sent_twice_outside_windows.append(email_id)
                problems.append(f"{told} was sent again although SES's answer to an earlier send was recorded")
            if status in SENT_OR_LATER:
                report.sent += 1
                report.delivered += status == "delivered"
                if not sends:
                    report.lost.append(email_id)
                    problems.append(f"{told} is {status} but SES never accepted it")
            elif status == "failed":
                code = str((record.get("last_error") or {}).get("code", "unknown"))
                if classify_code(code) is Outcome.PERMANENT:
                    failed[f"{code} (permanent)"] += 1
                elif int(record.get("attempts", 0)) >= max_attempts:
                    failed[f"{code} (attempts exhausted)"] += 1
                else:
                    failed[f"{code} (not allowed)"] += 1
                    report.lost.append(email_id)
                    problems.append(f"{told} failed for a reason that may not fail an email: {code}")
                if sends:
                    unsettled["failed"] += 1
                    if not in_window:
                        problems.append(f"{told} is failed, yet SES accepted it")
            elif status == "cancelled":
                report.cancelled += 1
                if ledger.cancel_answers.get(email_id) != 200:
                    report.lost.append(email_id)
                    problems.append(f"{told} is cancelled, but no cancel of it succeeded")
                if sends:
                    unsettled["cancelled"] += 1
                    if not in_window:
                        problems.append(f"{told} was cancelled, yet SES accepted it")
            if plan.cancel == "scheduled" and ledger.cancel_answers.get(email_id) != 200:
                problems.append(f"the cancel of scheduled {told} answered {ledger.cancel_answers.get(email_id)}")
        report.cancel_refused = sum(1 for answer in ledger.cancel_answers.values() if answer == 409)
        report.failed = dict(failed)
        report.extra_sends_by_window = dict(windows)
        report.sent_in_window_yet_not_sent = dict(unsettled)
        report.sent_twice = sum(1 for sends in moto_sends.values() if len(sends) > 1)

    def _sends(self, email_id: str, message_ids: list[str]) -> list[Acceptance]:
        """Every send SES accepted for the email, in SES's order, with what the hooks saw of each.

        A send the hooks never saw is one whose answer never reached the sender (the emulator took
        longer than the client's read timeout): an unknown outcome the run did not inject.
        """
        seen = {item.message_id: item for item in self.ledger.acceptances.get(email_id, [])}
        return [seen.get(message_id) or Acceptance(None, "answer_lost", message_id) for message_id in message_ids]

    def _duplicates(self, email_id: str, sends: list[Acceptance], windows: Counter[str]) -> tuple[bool, bool]:
        """Count each send after the first by the window it came through.

        Returns whether the email had a send in a window at all, and whether it was sent again after a
        send whose acceptance was recorded (outside every window).
        """
        failures = self.ledger.sent_write_failures.get(email_id, [])
        later_hooked = [item.sequence for item in sends if item.sequence is not None]

        def unrecorded(item: Acceptance) -> str | None:
            """Why SES's acceptance of ``item`` was never recorded as sent, if it was not."""
            if item.kind != "clean":
                return item.kind
            following = [
                sequence for sequence in later_hooked if item.sequence is not None and sequence > item.sequence
            ]
            until = min(following, default=None)
            if any(item.sequence is not None and item.sequence < f and (until is None or f < until) for f in failures):
                return "sent_write_failed"
            return None

        unexplained = False
        for earlier, _ in itertools.pairwise(sends):
            window = unrecorded(earlier)
            if window is None:
                unexplained = True
            else:
                windows[window] += 1
                if earlier.message_id in self.ledger.with_events:
                    windows[_DESPITE_EVENT] += 1
        return any(unrecorded(item) is not None for item in sends), unexplained


def _story(record: dict[str, Any]) -> str:
    """An email's history, short: what a failed run should print about it."""
    steps = [
        f"{entry.get('status')}" + (f" ({entry['reason']})" if entry.get("reason") else "")
        for entry in record.get("history") or []
    ]
    return "history: " + " > ".join(steps)[:600]


def _forbidden_transitions(record: dict[str, Any]) -> list[str]:
    """Transitions in the email's history that the state machine does not allow."""
    from mailqueue.statemachine import ALLOWED, HISTORY_LIMIT, Status  # noqa: PLC0415

    history = record.get("history") or []
    statuses = [Status(entry["status"]) for entry in history]
    # A trimmed history (it keeps its first entry and the latest) skips entries after the first.
    start = 1 if len(history) >= HISTORY_LIMIT else 0
    found = []
    for before, after, entry in zip(statuses[start:], statuses[start + 1 :], history[start + 1 :], strict=False):
        # Failing a queued email with no attempts left claims it first; the history omits that claim.
        bridged = before is Status.QUEUED and after is Status.FAILED and "attempts exhausted" in entry.get("reason", "")
        if after not in ALLOWED[before] and not bridged:
            found.append(f"went from {before} to {after}, which the state machine forbids")
    return found


def _moto_sends() -> dict[str, list[str]]:
    """The message ids SES (moto, in this process) accepted for each email, in order, by the Message-ID the
    renderer sets."""
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415
    from moto.ses.models import ses_backends  # noqa: PLC0415

    pattern = re.compile(r"^Message-ID:\s*<([0-9A-HJKMNP-TV-Z]{26})@", re.IGNORECASE | re.MULTILINE)
    sends: dict[str, list[str]] = defaultdict(list)
    for message in list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages):
        raw = getattr(message, "raw_data", "") or ""
        found = pattern.search(raw if isinstance(raw, str) else raw.decode(errors="replace"))
        if found:
            sends[found.group(1)].append(str(message.id))
    return dict(sends)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The local stack logs each failed batch with its trace: here they are the point, and counted."""
    logger = logging.getLogger("mailqueue_dev.local")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(config: ChaosConfig, workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> ChaosReport:
    """Run the chaos run of ``config``; its outbox and metrics go to ``workdir`` (a temporary folder if None)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return ChaosRun(config, workdir, progress).run()
    with tempfile.TemporaryDirectory(prefix="mailqueue-chaos-") as folder:
        return ChaosRun(config, Path(folder), progress).run()


def update_doc(path: Path, report: ChaosReport) -> None:
    """Replace the figures between the chaos markers of ``path`` with this run's."""
    text = path.read_text(encoding="utf-8")
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_BEGIN} … {DOC_END} block")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    block = f"{DOC_BEGIN}\nLast `make chaos` run: {stamp}, {report.emails} emails, seed {report.seed}, "
    block += (
        f"{report.fault_kinds} fault kinds, {'passed' if report.ok else 'FAILED'}.\n\n{report.markdown()}\n{DOC_END}"
    )
    path.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailqueue_dev.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=ChaosConfig.emails, help="how many emails (default 2000)")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed, help="the seed of every fault")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--doc", type=Path, help="write the figures into this Markdown file's chaos block")
    parser.add_argument("--workdir", type=Path, help="keep the outbox and metrics here")
    parser.add_argument("--log-level", default="CRITICAL", help="the functions' log level (default CRITICAL)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    config = ChaosConfig(emails=args.emails, seed=args.seed, log_level=args.log_level.upper())
    print(f"chaos run: {config.emails} emails, seed {config.seed}; faults on every AWS call…", flush=True)
    # Progress goes to stderr: the local stack sends stdout to its metrics file during each invocation.
    report = run(config, args.workdir, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    print("\n".join(report.lines()), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    if args.doc and report.ok:
        update_doc(args.doc, report)
        print(f"figures written to {args.doc}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
