"""What SES says happened after it accepted an email: delivered, bounced, complained, rejected.

SES publishes events through the configuration set to EventBridge, tagged with the ``email_id``
the sender set. Events come late, out of order and more than once, so each one is a guarded
transition: a repeat, or an event that an earlier one outranks (a delivery after a bounce), finds
the guard false and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailqueue import clock
from mailqueue.ids import is_email_id
from mailqueue.records import Attr, StatusRecord
from mailqueue.statemachine import HISTORY_LIMIT, Change, Guard, Status, transition
from mailqueue.store import ConditionFailed, EmailStore, SuppressionList

# Statuses an event may move an email out of, and where to.
_SENT_OR_LATER = {Status.SENT, Status.DELIVERED}
OUTCOMES: dict[str, tuple[frozenset[Status], Status | None]] = {
    "Send": (frozenset({Status.RETRYING}), Status.SENT),
    "Delivery": (frozenset({Status.SENT}), Status.DELIVERED),
    "Bounce": (frozenset(_SENT_OR_LATER), Status.BOUNCED),
    "Complaint": (frozenset({*_SENT_OR_LATER, Status.BOUNCED}), Status.COMPLAINED),
    "Reject": (frozenset({Status.SENT}), Status.FAILED),
    "Rendering Failure": (frozenset({Status.SENT}), Status.FAILED),
    "DeliveryDelay": (frozenset(), None),
}
# Events that prove SES accepted the email: they settle an attempt whose outcome was unknown.
_PROVES_ACCEPTED = {"Send", "Delivery", "Bounce", "Complaint", "DeliveryDelay"}
# Where such an attempt can have left the email by the time its event arrives: still sending (the
# sender died or has not recorded it yet), retrying (the outcome was unknown), queued again (its
# claim expired first), failed (that was the last attempt) or cancelled (cancelled while retrying).
# SES has the email either way: it is sent, and never sent again.
_SETTLED_BY_PROOF = frozenset({Status.SENDING, Status.RETRYING, Status.QUEUED, Status.FAILED, Status.CANCELLED})


class NotYetRecorded(Exception):
    """The sender has not recorded the send yet; the event is retried (Lambda's async retries)."""


class Contended(Exception):
    """The email moved between each read and write of the event's settlement; the event is retried."""


# Reads and guarded writes of one event before it is left to Lambda's asynchronous retries.
SETTLE_ATTEMPTS = 5


@dataclass(frozen=True)
class EventOutcome:
    event_type: str
    email_id: str | None
    result: str  # applied, ignored, unknown-email, foreign
    status: str | None = None
    bounce_type: str | None = None
    suppressed: tuple[str, ...] = ()


def event_type_of(detail: dict[str, Any]) -> str:
    return str(detail.get("eventType") or detail.get("notificationType") or "")


def email_id_of_event(detail: dict[str, Any]) -> str | None:
    values = detail.get("mail", {}).get("tags", {}).get("email_id") or []
    email_id = values[0] if isinstance(values, list) and values else None
    return email_id if isinstance(email_id, str) and is_email_id(email_id) else None


def _reason(event_type: str, detail: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A short history reason, and what to record on the status record."""
    if event_type == "Bounce":
        bounce = detail.get("bounce", {})
        recipients = [
            {
                "address": str(recipient.get("emailAddress", "")),
                "status": str(recipient.get("status", "")),
                "diagnostic": str(recipient.get("diagnosticCode", ""))[:200],
            }
            for recipient in bounce.get("bouncedRecipients", [])[:5]
        ]
        kind = f"{bounce.get('bounceType', 'Undetermined')}/{bounce.get('bounceSubType', 'General')}"
        return f"bounce {kind}", {Attr.BOUNCE: {"type": kind, "recipients": recipients}}
    if event_type == "Complaint":
        feedback = detail.get("complaint", {}).get("complaintFeedbackType", "complaint")
        return f"complaint: {feedback}", {}
    if event_type == "Reject":
        reason = str(detail.get("reject", {}).get("reason", "rejected by SES"))
        return f"rejected: {reason}", {Attr.LAST_ERROR: {"code": "Reject", "message": reason[:300]}}
    if event_type == "Rendering Failure":
        message = str(detail.get("failure", {}).get("errorMessage", "rendering failed"))
        return "rendering failure", {Attr.LAST_ERROR: {"code": "RenderingFailure", "message": message[:300]}}
    if event_type == "Send":
        return "SES Send event: accepted", {}
    return event_type.lower(), {}


def suppressions_from(event_type: str, detail: dict[str, Any]) -> list[tuple[str, str]]:
    """(address, reason) pairs that a permanent bounce or a complaint puts on the suppression list."""
    if event_type == "Bounce":
        bounce = detail.get("bounce", {})
        if bounce.get("bounceType") != "Permanent":
            return []
        reason = f"permanent bounce ({bounce.get('bounceSubType', 'General')})"
        return [
            (str(r["emailAddress"]).lower(), reason)
            for r in bounce.get("bouncedRecipients", [])
            if r.get("emailAddress")
        ]
    if event_type == "Complaint":
        recipients = detail.get("complaint", {}).get("complainedRecipients", [])
        return [(str(r["emailAddress"]).lower(), "complaint") for r in recipients if r.get("emailAddress")]
    return []


@dataclass
class SesEvents:
    store: EmailStore
    suppressions: SuppressionList

    def handle(self, event: dict[str, Any], now: datetime | None = None) -> EventOutcome:
        now = now or clock.now()
        detail = event.get("detail") if event.get("source") == "aws.ses" else None
        if not isinstance(detail, dict):
            return EventOutcome(event_type=str(event.get("detail-type", "")), email_id=None, result="foreign")
        event_type = event_type_of(detail)
        email_id = email_id_of_event(detail)
        suppressed = self._suppress(event_type, detail, email_id, now)
        if event_type not in OUTCOMES or email_id is None:
            return EventOutcome(
                event_type,
                email_id,
                "foreign" if event_type not in OUTCOMES else "unknown-email",
                suppressed=suppressed,
            )
        record: StatusRecord | None = None
        known = False
        if event_type == "Delivery":
            # Most events are a sent email's delivery: one guarded write, no read first. When the email is
            # elsewhere (or its history full), the failed write returns the record to settle from.
            try:
                record = self._deliver_blind(email_id, detail, now)
            except ConditionFailed as failed:
                record, known = failed.current, True
            else:
                return EventOutcome(event_type, email_id, "applied", record.status.value, suppressed=suppressed)
        for _ in range(SETTLE_ATTEMPTS):
            if not known:
                record = self.store.get(email_id)
            known = False
            if record is None:
                return EventOutcome(event_type, email_id, "unknown-email", suppressed=suppressed)
            try:
                return self._settle(event_type, detail, email_id, record, suppressed, now)
            except ConditionFailed:
                # Another actor (the sender, the requeue function, a cancel, another event) moved the email
                # between this read and this write: what the event means depends on where it is now.
                continue
        raise Contended(f"{email_id} kept moving; {event_type} will be retried")

    def _settle(
        self,
        event_type: str,
        detail: dict[str, Any],
        email_id: str,
        record: StatusRecord,
        suppressed: tuple[str, ...],
        now: datetime,
    ) -> EventOutcome:
        """Apply the event to the email as ``record`` shows it; ConditionFailed if it moved since."""
        status = record.status
        message_id = str(detail.get("mail", {}).get("messageId", ""))

        if status is Status.SENDING and event_type not in _PROVES_ACCEPTED:
            raise NotYetRecorded(f"{email_id} is still being sent; {event_type} will be retried")
        if status in _SETTLED_BY_PROOF and event_type in _PROVES_ACCEPTED:
            # SES proves it accepted the email: never send it again. Retrying: the last attempt's outcome
            # was unknown. Sending: the sender has not recorded the send, and may never: if it died after
            # SES accepted, its claim would expire and the requeue function would hand the email out again.
            settled = {Attr.SES_MESSAGE_ID: message_id}
            record = self._write(record, Status.SENT, "SES Send event: accepted", settled, now, (Attr.CLAIM_TOKEN,))
            status = Status.SENT
            if event_type == "Send":
                return EventOutcome(event_type, email_id, "applied", status.value, suppressed=suppressed)

        sources, target = OUTCOMES[event_type]
        if target is None or status not in sources:
            return EventOutcome(event_type, email_id, "ignored", status.value, suppressed=suppressed)
        reason, extra = _reason(event_type, detail)
        if message_id and not record.ses_message_id:
            extra[Attr.SES_MESSAGE_ID] = message_id
        record = self._write(record, target, reason, extra, now)
        bounce_type = extra.get(Attr.BOUNCE, {}).get("type")
        return EventOutcome(event_type, email_id, "applied", record.status.value, bounce_type, suppressed)

    def _deliver_blind(self, email_id: str, detail: dict[str, Any], now: datetime) -> StatusRecord:
        """sent -> delivered without a read: the history appended, guarded to stay within its bound."""
        message_id = str(detail.get("mail", {}).get("messageId", ""))
        change = Change(
            Status.DELIVERED,
            reason=_reason("Delivery", detail)[0],
            set_if_absent={Attr.SES_MESSAGE_ID: message_id} if message_id else {},
        )
        return transition(self.store, email_id, Guard({Status.SENT}, history_below=HISTORY_LIMIT), change, now)

    def _write(
        self,
        record: StatusRecord,
        target: Status,
        reason: str,
        extra: dict[str, Any],
        now: datetime,
        remove: tuple[str, ...] = (),
    ) -> StatusRecord:
        """Move the email from where ``record`` shows it to ``target``, only if nobody moved it since.

        The guard holds the status and the time of the last write that was read, so the history read
        with them can be rewritten trimmed to its bound (an append would outgrow it: after ``sent`` no
        sender outcome comes to trim it), and a lost race raises ConditionFailed for the caller to read
        the email again and settle again.
        """
        guard = Guard({record.status}, updated_at=record.updated_at)
        change = Change(target, reason=reason, set=extra, remove=remove, history=record.history)
        return transition(self.store, record.email_id, guard, change, now)

    def _suppress(
        self, event_type: str, detail: dict[str, Any], email_id: str | None, now: datetime
    ) -> tuple[str, ...]:
        entries = suppressions_from(event_type, detail)
        for address, reason in entries:
            self.suppressions.add(address, reason, clock.iso(now), email_id)
        return tuple(address for address, _ in entries)
