"""What SES publishes after it accepts an email, for the local stack: EventBridge "SES event" JSON.

On AWS, SES sends each email and reports what happened through the configuration set's event
destination (EventBridge): a Send event, then a Delivery, a Bounce or a Complaint, each tagged with
the message tags of the send (``email_id`` among them). Moto accepts a send and reports nothing, so
the local stack builds those events here from the SendEmail request and answer, in the shape of the
samples in ``events/events/``, and hands them to the events function.

Every recipient is delivered, except the addresses that simulate a failure, as SES's mailbox
simulator does (a ``+label`` is allowed before the ``@``, as there):

- ``bounce@simulator.amazonses.com`` and any address at ``bounce.mailqueue.example``: a permanent
  bounce (Permanent/General, ``550 5.1.1 user unknown``);
- ``complaint@simulator.amazonses.com`` and any address at ``complaint.mailqueue.example``: delivered,
  then a complaint;
- ``suppressionlist@simulator.amazonses.com``: a bounce of subtype OnAccountSuppressionList, as when
  the address is on the SES account's own suppression list.

Two more domains make SES refuse the send itself, so that an email ends ``failed`` (see
:func:`send_failure`; SES's own simulator has no such address):

- any address at ``reject.mailqueue.example``: SendEmail answers ``MessageRejected`` (a permanent
  error): the email is ``failed`` after one attempt;
- any address at ``unavailable.mailqueue.example``: SendEmail answers ``ServiceUnavailable`` (503, a
  transient error) every time: the email is retried with backoff until it runs out of attempts;
- any address at ``unverified.mailqueue.example``: SendEmail answers ``MessageRejected``, "Email address
  is not verified", as SES in the sandbox answers for a recipient it has not verified: an error of the
  account, not of the email, so the email is held (``retrying``, its attempt not counted) until the
  account is fixed, and tried again after ``ACCOUNT_ERROR_SECONDS``.

With a maximum send rate set (:class:`SendRate`; ``MAILQUEUE_SES_MAX_SEND_RATE`` for ``make dev``, in
recipients a second), SendEmail beyond it is answered as SES v2 answers it, ``TooManyRequestsException``
(HTTP 429, "Maximum sending rate exceeded."), by a WSGI middleware in front of moto (:class:`SendRateLimit`),
so that every client of the emulator shares the one rate, as every sender shares the account's.

The reserved domains are under ``.example`` (RFC 2606), not ``.test``: the API refuses special-use
domains such as ``.test``, and ``.example`` is reserved all the same, so no real mailbox is ever hit.
"""

from __future__ import annotations

import enum
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import formataddr, getaddresses
from typing import Any

ACCOUNT = "123456789012"
SIMULATOR_DOMAIN = "simulator.amazonses.com"
BOUNCE_DOMAIN = "bounce.mailqueue.example"
COMPLAINT_DOMAIN = "complaint.mailqueue.example"
REJECT_DOMAIN = "reject.mailqueue.example"
UNAVAILABLE_DOMAIN = "unavailable.mailqueue.example"
UNVERIFIED_DOMAIN = "unverified.mailqueue.example"
# Headers SES copies into every event's ``mail.headers`` (it copies them all; these are what readers use).
_EVENT_HEADERS = ("From", "To", "Cc", "Subject", "Message-ID", "Date", "Reply-To")


class Fate(enum.Enum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"  # on the SES account's suppression list: SES drops it, and says so as a bounce
    COMPLAINED = "complained"  # delivered, then marked as spam by its reader


_SIMULATOR = {"bounce": Fate.BOUNCED, "complaint": Fate.COMPLAINED, "suppressionlist": Fate.SUPPRESSED}
_DOMAINS = {BOUNCE_DOMAIN: Fate.BOUNCED, COMPLAINT_DOMAIN: Fate.COMPLAINED}

_BOUNCES = {
    Fate.BOUNCED: ("General", "5.1.1", "smtp; 550 5.1.1 user unknown", "dsn; a1-1.smtp-out.amazonses.com"),
    Fate.SUPPRESSED: (
        "OnAccountSuppressionList",
        "5.1.1",
        "Amazon SES did not send the message to this address because it is on the suppression list for your account.",
        "dns; amazonses.com",
    ),
}


def fate_of(address: str) -> Fate:
    """What happens to mail for ``address`` (a bare address) once SES accepted it."""
    local_part, _, domain = address.strip().lower().rpartition("@")
    if domain == SIMULATOR_DOMAIN:
        return _SIMULATOR.get(local_part.split("+", 1)[0], Fate.DELIVERED)
    return _DOMAINS.get(domain, Fate.DELIVERED)


# What SendEmail answers when a recipient is at one of these domains: HTTP status, error code, message
# ({address} is the recipient's).
SEND_FAILURES: dict[str, tuple[int, str, str]] = {
    REJECT_DOMAIN: (400, "MessageRejected", f"Email address is rejected (local stack: {REJECT_DOMAIN})."),
    UNAVAILABLE_DOMAIN: (503, "ServiceUnavailable", f"Service is unavailable (local stack: {UNAVAILABLE_DOMAIN})."),
    UNVERIFIED_DOMAIN: (
        400,
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region US-EAST-1: {address}",
    ),
}

# Every address that does something other than a delivery, and what: for the banner and the README.
SPECIAL_ADDRESSES: tuple[tuple[str, str], ...] = (
    (f"bounce@{SIMULATOR_DOMAIN}, *@{BOUNCE_DOMAIN}", "bounced (permanent)"),
    (f"complaint@{SIMULATOR_DOMAIN}, *@{COMPLAINT_DOMAIN}", "delivered, then complained"),
    (f"suppressionlist@{SIMULATOR_DOMAIN}", "bounced (on the account's suppression list)"),
    (f"*@{REJECT_DOMAIN}", "failed: SES rejects the send"),
    (f"*@{UNAVAILABLE_DOMAIN}", "failed: SES unavailable until the attempts run out"),
    (f"*@{UNVERIFIED_DOMAIN}", "held: not verified (SES's sandbox), waits for the account"),
)


def send_failure(params: dict[str, Any]) -> tuple[int, str, str] | None:
    """The error SendEmail answers for this request, when a recipient is at a failing domain; else None."""
    for address in recipients_of(params):
        failure = SEND_FAILURES.get(address.rpartition("@")[2].lower())
        if failure is not None:
            status, code, message = failure
            return status, code, message.replace("{address}", address)
    return None


def recipients_of(params: dict[str, Any]) -> list[str]:
    """The bare addresses a SendEmail request sends to (Bcc included), in order, each once."""
    destination = params.get("Destination") or {}
    values: list[str] = [
        str(value) for key in ("ToAddresses", "CcAddresses", "BccAddresses") for value in destination.get(key) or []
    ]
    seen: dict[str, None] = {}
    for _, address in getaddresses(values):
        if address:
            seen.setdefault(address, None)
    return list(seen)


def events_for_send(
    params: dict[str, Any], message_id: str, now: datetime | None = None, region: str = "us-east-1"
) -> list[dict[str, Any]]:
    """The events SES would publish for one accepted SendEmail call, in the order it would publish them.

    A Send event; a Delivery for the recipients that receive it; a Bounce for those that bounce (one
    per bounce subtype); a Complaint for those that complain (after their delivery).
    """
    now = now or datetime.now(UTC)
    mail = _mail(params, message_id, now, region)
    fates: dict[Fate, list[str]] = {}
    for address in recipients_of(params):
        fates.setdefault(fate_of(address), []).append(address)
    delivered = [*fates.get(Fate.DELIVERED, []), *fates.get(Fate.COMPLAINED, [])]

    stamp = _iso(now)
    events = [_event("Send", "Email Sent", mail, params, now, region, {"send": {}})]
    if delivered:
        delivery = {
            "timestamp": stamp,
            "processingTimeMillis": 1,
            "recipients": delivered,
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a1-1.smtp-out.amazonses.com",
        }
        events.append(_event("Delivery", "Email Delivered", mail, params, now, region, {"delivery": delivery}))
    for fate, (subtype, status, diagnostic, reporting) in _BOUNCES.items():
        if not fates.get(fate):
            continue
        bounce = {
            "feedbackId": f"{uuid.uuid4()}-bounce",
            "bounceType": "Permanent",
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {"emailAddress": address, "action": "failed", "status": status, "diagnosticCode": diagnostic}
                for address in fates[fate]
            ],
            "timestamp": stamp,
            "reportingMTA": reporting,
        }
        events.append(_event("Bounce", "Email Bounced", mail, params, now, region, {"bounce": bounce}))
    if fates.get(Fate.COMPLAINED):
        complaint = {
            "feedbackId": f"{uuid.uuid4()}-complaint",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": address} for address in fates[Fate.COMPLAINED]],
            "timestamp": stamp,
            "userAgent": "mailqueue local stack",
            "complaintFeedbackType": "abuse",
            "arrivalDate": stamp,
        }
        events.append(
            _event("Complaint", "Email Complaint Received", mail, params, now, region, {"complaint": complaint})
        )
    return events


def _event(
    event_type: str,
    detail_type: str,
    mail: dict[str, Any],
    params: dict[str, Any],
    now: datetime,
    region: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    configuration_set = params.get("ConfigurationSetName")
    resources = [f"arn:aws:ses:{region}:{ACCOUNT}:configuration-set/{configuration_set}"] if configuration_set else []
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.ses",
        "account": ACCOUNT,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": resources,
        "detail": {"eventType": event_type, "mail": mail, **body},
    }


def _mail(params: dict[str, Any], message_id: str, now: datetime, region: str) -> dict[str, Any]:
    raw = (params.get("Content") or {}).get("Raw", {}).get("Data") or b""
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
    source = str(params.get("FromEmailAddress") or headers.get("From", ""))
    sender_domain = (getaddresses([source])[0][1] or source).rpartition("@")[2].lower()
    tags: dict[str, list[str]] = {
        "ses:source-ip": ["127.0.0.1"],
        "ses:from-domain": [sender_domain],
        "ses:caller-identity": ["mailqueue-sender"],
    }
    if params.get("ConfigurationSetName"):
        tags["ses:configuration-set"] = [str(params["ConfigurationSetName"])]
    for tag in params.get("EmailTags") or []:
        tags[str(tag.get("Name"))] = [str(tag.get("Value"))]
    common: dict[str, Any] = {"messageId": message_id}
    for name, key in (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Reply-To", "replyTo")):
        if headers.get(name):
            common[key] = _header_list(headers.get_all(name) or [])
    if headers.get("Subject") is not None:
        common["subject"] = str(headers["Subject"])
    return {
        "timestamp": _iso(now),
        "source": source,
        "sourceArn": f"arn:aws:ses:{region}:{ACCOUNT}:identity/{sender_domain}",
        "sendingAccountId": ACCOUNT,
        "messageId": message_id,
        "destination": recipients_of(params),
        "headersTruncated": False,
        "headers": [{"name": name, "value": str(value)} for name, value in headers.items() if name in _EVENT_HEADERS],
        "commonHeaders": common,
        "tags": tags,
    }


def _header_list(values: Iterable[str]) -> list[str]:
    return [formataddr(pair) for pair in getaddresses([str(value) for value in values]) if pair[1]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- the account's maximum send rate ---------------------------------------------------------------------------

THROTTLE_CODE = "TooManyRequestsException"
THROTTLE_MESSAGE = "Maximum sending rate exceeded."
# SES v2's SendEmail: POST /v2/email/outbound-emails (REST-JSON).
SEND_EMAIL_PATH = "/v2/email/outbound-emails"


@dataclass
class SendRate:
    """The account's maximum send rate, as SES enforces it: a bucket of ``burst`` recipients that refills at
    ``rate`` recipients a second. A send goes through while the bucket holds anything, and takes one unit
    per recipient (an email to five recipients at a rate of 1 passes, and the next four seconds are
    throttled, as SES documents); otherwise it is refused with ``TooManyRequestsException`` (HTTP 429,
    "Maximum sending rate exceeded."), SES v2's answer, and SES takes nothing.

    ``burst`` defaults to one second's worth: SES lets an account exceed its rate "for short bursts".
    """

    rate: float
    burst: float | None = None
    monotonic: Callable[[], float] = time.monotonic
    accepted: int = 0
    throttled: int = 0
    # Monotonic time of every send let through and every send throttled: what `make bench` reads.
    accepted_at: list[float] = field(default_factory=list)
    throttled_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"the send rate must be greater than 0, not {self.rate}")
        self.capacity = self.burst if self.burst is not None else max(1.0, self.rate)
        self._tokens = self.capacity
        self._at = self.monotonic()
        self._lock = threading.Lock()

    def take(self, recipients: int = 1) -> bool:
        """Whether a send to ``recipients`` goes through now (and, if it does, its units are taken)."""
        with self._lock:
            now = self.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens <= 0:
                self.throttled += 1
                self.throttled_at.append(now)
                return False
            self._tokens -= max(1, recipients)
            self.accepted += 1
            self.accepted_at.append(now)
            return True


class SendRateLimit:
    """WSGI middleware in front of moto's server: SES v2's SendEmail beyond ``limit`` is answered as SES does."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: SendRate) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != SEND_EMAIL_PATH:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        if self.limit.take(len(recipients_of(params if isinstance(params, dict) else {}))):
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        payload = json.dumps({"message": THROTTLE_MESSAGE}).encode()
        start_response(
            "429 Too Many Requests",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-ErrorType", THROTTLE_CODE),
            ],
        )
        return [payload]
