"""Signed webhooks: each status event POSTed to each configured URL, retried with backoff, then dead-lettered.

The status bus's rule puts every event on the webhook queue (SQS). The webhook function takes each
message in turn:

- an event from the bus, with several URLs configured, is fanned out: one message per URL on the same
  queue, so each (event, URL) retries on its own and a good receiver never gets repeats because another
  one failed; with one URL the event is delivered from the bus's message itself;
- a delivery is one POST of the event's ``detail``, as JSON bytes, signed (:func:`sign`):
  ``Mailqueue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
- a 2xx answer is delivered; 408, 429, 5xx, a redirect, a timeout or a connection error is retried after
  :meth:`RetrySchedule.delay` (the message's visibility is changed, and the record reported failed);
- any other 4xx is the receiver refusing the request: it is not retried, it goes to the dead-letter queue
  at once (a refusal is answered again the same way; the alarm tells the operator, who fixes the receiver
  and moves the messages back);
- after the last attempt of the schedule (:attr:`RetrySchedule.attempts`), the delivery goes to the
  dead-letter queue.

docs/webhooks.md gives the schedule, the receiver's side and the costs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SIGNATURE_HEADER = "Mailqueue-Signature"
EVENT_ID_HEADER = "Mailqueue-Event-Id"
# A receiver rejects a signature whose timestamp is further than this from its clock: a replay window.
DEFAULT_TOLERANCE_SECONDS = 300
# The secret `make dev` and `mailqueue listen` use unless MAILQUEUE_WEBHOOK_SECRET says otherwise.
LOCAL_SECRET = "mailqueue-local-webhook-secret"  # noqa: S105 - local only, documented
# How long a secret read from Secrets Manager is kept: once per container, in practice.
SECRET_MAX_AGE_SECONDS = 3600
USER_AGENT = "mailqueue-webhooks/1"
_BATCH_LIMIT = 10
# What the webhook function counts, by the metric it emits.
METRICS = {
    "delivered": "WebhooksDelivered",
    "retried": "WebhooksRetried",
    "dead_lettered": "WebhooksDeadLettered",
    "fanned_out": "WebhooksFannedOut",
    "dropped": "WebhooksDropped",
}
# ChangeMessageVisibility takes at most 12 hours.
MAX_VISIBILITY_SECONDS = 43_200


class InvalidSignature(ValueError):
    """The request is not signed by the secret, is malformed, or is outside the replay window."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _mac(secret: str | bytes, body: bytes, t: int) -> str:
    return hmac.new(_key(secret), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, t: int) -> str:
    """The ``Mailqueue-Signature`` header of ``body`` sent at ``t`` (unix seconds)."""
    return f"t={t},v1={_mac(secret, body, t)}"


def verify(
    secret: str | bytes, header: str | None, body: bytes, now: float, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> int:
    """Check a ``Mailqueue-Signature`` header; its timestamp when it holds, else :class:`InvalidSignature`.

    The header is ``t=<digits>`` and one or more ``v1=<64 hex digits>``, comma-separated; one ``v1`` must
    match (compared in constant time), and ``t`` be within ``tolerance`` seconds of ``now``.
    """
    if not header:
        raise InvalidSignature("no signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals:
            raise InvalidSignature("malformed signature")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                raise InvalidSignature("malformed timestamp")
            timestamp = int(value)
        elif name == "v1":
            if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
                raise InvalidSignature("malformed v1 signature")
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("the signature needs t= and v1=")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature(f"timestamp {timestamp} is more than {tolerance}s away from now")
    expected = _mac(secret, body, timestamp)
    matched = False
    for candidate in candidates:  # every one compared: the time taken says nothing about which matched
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature("the signature does not match")
    return timestamp


def encode(detail: Mapping[str, Any]) -> bytes:
    """The body of a delivery: the event's detail as compact UTF-8 JSON, the bytes that are signed."""
    return json.dumps(detail, separators=(",", ":"), ensure_ascii=False).encode()


# --- one delivery ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookOutcome:
    """What became of one POST: ``delivered``, ``retry`` (try again later) or ``refused`` (do not)."""

    verdict: str
    status: int | None
    reason: str

    @property
    def delivered(self) -> bool:
        return self.verdict == "delivered"


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "delivered"
    if 400 <= status < 500 and status not in {408, 429}:
        return "refused"
    return "retry"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed (a signed POST goes where it was configured to): it is an answer like any other."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body``; the answer's status. Raises OSError (URLError, timeouts) when there is none."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - http(s) checked
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(1024)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


def deliver(
    url: str,
    detail: Mapping[str, Any],
    secret: str | bytes,
    now: float,
    timeout: float = 5.0,
    send: Callable[[str, bytes, Mapping[str, str], float], int] = post,
) -> WebhookOutcome:
    """POST one event to one URL, signed at ``now``, and say what became of it."""
    body = encode(detail)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(detail.get("event_id", "")),
        SIGNATURE_HEADER: sign(secret, body, int(now)),
    }
    try:
        status = send(url, body, headers, timeout)
    except TimeoutError as error:
        return WebhookOutcome("retry", None, f"timed out after {timeout:g}s: {error}")
    except OSError as error:
        reason = getattr(error, "reason", error)
        return WebhookOutcome("retry", None, f"could not connect: {reason}")
    return WebhookOutcome(classify(status), status, f"answered {status}")


# --- retries ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrySchedule:
    """When a failed delivery is tried again, and when it is given up.

    After the n-th failed attempt the next comes ``min(base * 2**(n-1), cap)`` seconds later, plus up to a
    quarter of that at random (jitter, so that the deliveries a receiver failed together do not all come
    back together). After ``attempts`` attempts the delivery goes to the dead-letter queue. The defaults
    (30 s doubling to 1 h, 31 attempts) wait at least 24 h 3 min 30 s between the first attempt and the
    last (:meth:`least_span`).
    """

    base_seconds: int = 30
    cap_seconds: int = 3600
    attempts: int = 31

    def __post_init__(self) -> None:
        if self.base_seconds < 1 or self.cap_seconds < self.base_seconds or self.attempts < 1:
            raise ValueError(f"not a retry schedule: {self}")
        if self.cap_seconds * 5 // 4 > MAX_VISIBILITY_SECONDS:
            raise ValueError(f"a delay cannot exceed {MAX_VISIBILITY_SECONDS}s (SQS's longest visibility)")

    def least_delay(self, attempt: int) -> int:
        """The delay after the ``attempt``-th failed attempt (1-based), without jitter."""
        return min(self.base_seconds * (1 << max(0, min(attempt - 1, 40))), self.cap_seconds)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> int:
        least = self.least_delay(attempt)
        return least + int(rand() * (least // 4 + 1)) if least >= 4 else least

    def gives_up(self, attempt: int) -> bool:
        """Whether the ``attempt``-th attempt, failed, was the last."""
        return attempt >= self.attempts

    def least_span(self) -> int:
        """The least time from the first attempt to the last."""
        return sum(self.least_delay(n) for n in range(1, self.attempts))


DEFAULT_SCHEDULE = RetrySchedule()


# --- configuration ---------------------------------------------------------------------------------------


def _urls(raw: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in raw.split(",") if part.strip())
    for url in urls:
        if not url.lower().startswith(("https://", "http://")):
            raise ValueError(f"a webhook URL must be http(s): {url!r}")
    return urls


@dataclass(frozen=True)
class WebhookSettings:
    """The webhook function's environment (the template sets it; the local stack too)."""

    urls: tuple[str, ...] = ()
    queue_url: str = ""
    dead_letter_queue_url: str = ""
    # Secrets Manager's ARN or name of the signing secret.
    secret_id: str = ""
    timeout_seconds: float = 5.0
    schedule: RetrySchedule = DEFAULT_SCHEDULE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            return int(raw) if raw else default

        schedule = RetrySchedule(
            base_seconds=number("WEBHOOK_BACKOFF_BASE_SECONDS", DEFAULT_SCHEDULE.base_seconds),
            cap_seconds=number("WEBHOOK_BACKOFF_MAX_SECONDS", DEFAULT_SCHEDULE.cap_seconds),
            attempts=number("WEBHOOK_ATTEMPTS", DEFAULT_SCHEDULE.attempts),
        )
        timeout = env.get("WEBHOOK_TIMEOUT_SECONDS", "").strip()
        return cls(
            urls=_urls(env.get("WEBHOOK_URLS", "")),
            queue_url=env.get("WEBHOOK_QUEUE_URL", ""),
            dead_letter_queue_url=env.get("WEBHOOK_DEAD_LETTER_QUEUE_URL", ""),
            secret_id=env.get("WEBHOOK_SECRET_ID", ""),
            timeout_seconds=float(timeout) if timeout else 5.0,
            schedule=schedule,
        )


# --- the webhook function's work -------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """The delivery is to be tried again: its message comes back after the schedule's delay."""


@dataclass(frozen=True)
class Delivery:
    """One SQS message of the webhook queue, as the function reads it."""

    detail: dict[str, Any]
    # The one URL it is for (a fanned-out message); None for the bus's own message, for every URL.
    url: str | None = None

    @classmethod
    def parse(cls, body: str) -> Delivery:
        message = json.loads(body)
        if not isinstance(message, dict) or not isinstance(message.get("detail"), dict):
            raise ValueError("a webhook message holds an event's detail object")
        url = message.get("url")
        if url is not None and not isinstance(url, str):
            raise ValueError("a webhook message's url is text")
        return cls(detail=message["detail"], url=url)

    def to_body(self, url: str) -> str:
        return json.dumps({"url": url, "detail": self.detail}, separators=(",", ":"))

    @property
    def event_id(self) -> str:
        return str(self.detail.get("event_id", ""))


class Courier:
    """Delivers the webhook queue's messages; all its SQS calls go through ``sqs``.

    ``secret`` returns the signing secret (cached by the caller), ``clock`` the unix time, ``send`` posts.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        sqs: Any,
        secret: Callable[[], str],
        clock: Callable[[], float],
        send: Callable[[str, bytes, Mapping[str, str], float], int] = post,
        rand: Callable[[], float] = random.random,
        log: Any = None,
    ) -> None:
        self.settings = settings
        self._sqs = sqs
        self._secret = secret
        self._clock = clock
        self._send = send
        self._rand = rand
        self._log = log
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def handle(self, body: str, receipt_handle: str, receive_count: int) -> None:
        """One message. Returns when it is done with; raises :class:`DeliveryFailed` to have it again."""
        try:
            delivery = Delivery.parse(body)
        except ValueError as error:
            self._dead_letter(body, f"unreadable message: {error}", attempts=receive_count)
            return
        configured = self.settings.urls
        if delivery.url is None and len(configured) > 1:
            self._fan_out(delivery, configured)
            return
        url = delivery.url or (configured[0] if configured else None)
        if url is None or url not in configured:
            # The URL was removed from the stack's parameters since: nothing more goes to it.
            self._count("dropped")
            self._warn("webhook %s for %s dropped: that URL is no longer configured", delivery.event_id, url)
            return
        outcome = deliver(
            url, delivery.detail, self._secret(), self._clock(), self.settings.timeout_seconds, self._send
        )
        if outcome.delivered:
            self._count("delivered")
            return
        schedule = self.settings.schedule
        if outcome.verdict == "refused" or schedule.gives_up(receive_count):
            why = "refused" if outcome.verdict == "refused" else f"{receive_count} attempts failed"
            self._dead_letter(delivery.to_body(url), f"{why}; last: {outcome.reason}", attempts=receive_count)
            return
        delay = schedule.delay(receive_count, self._rand)
        self._sqs.change_message_visibility(
            QueueUrl=self.settings.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay
        )
        self._count("retried")
        raise DeliveryFailed(f"{delivery.event_id} to {url}: {outcome.reason}; attempt {receive_count + 1} in {delay}s")

    def _fan_out(self, delivery: Delivery, urls: Sequence[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": delivery.to_body(url)} for i, url in enumerate(urls)]
        for start in range(0, len(entries), _BATCH_LIMIT):
            answer = self._sqs.send_message_batch(
                QueueUrl=self.settings.queue_url, Entries=entries[start : start + _BATCH_LIMIT]
            )
            if answer.get("Failed"):
                # The whole event comes again; the URLs whose message was sent may get it twice (same event_id).
                raise DeliveryFailed(f"could not fan out {delivery.event_id}: {answer['Failed']}")
        self._count("fanned_out")

    def _dead_letter(self, body: str, reason: str, attempts: int) -> None:
        self._sqs.send_message(
            QueueUrl=self.settings.dead_letter_queue_url,
            MessageBody=body,
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000]},
                "attempts": {"DataType": "Number", "StringValue": str(attempts)},
            },
        )
        self._count("dead_lettered")
        self._warn("webhook dead-lettered after %d attempt(s): %s", attempts, reason)

    def _warn(self, message: str, *args: Any) -> None:
        if self._log is not None:
            self._log.warning(message, *args)


def in_sequence_order(records: list[Any], body: Callable[[Any], str]) -> list[Any]:
    """The records of a batch ordered by each event's ``sequence`` (stable: the rest keep their order)."""

    def sequence(record: Any) -> int:
        try:
            value = json.loads(body(record)).get("detail", {}).get("sequence")
        except (ValueError, AttributeError):
            return 0
        return value if isinstance(value, int) else 0

    return sorted(records, key=sequence)


class EmailLocks:
    """One asyncio lock per email id: a batch's deliveries run at once, but one email's in turn."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, body: str) -> asyncio.Lock:
        try:
            email_id = str(json.loads(body).get("detail", {}).get("email_id", ""))
        except (ValueError, AttributeError):
            email_id = ""
        return self._locks.setdefault(email_id, asyncio.Lock())
