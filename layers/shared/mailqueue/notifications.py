"""Each email's status changes, published as events on the stack's EventBridge bus.

The publisher reads the emails table's DynamoDB stream (new and old images), not the writes that
change a status: it reports only what the table holds, whichever code wrote it, and adds nothing to the
send path. A stream record becomes an event when it is the ``sk = "status"`` record, its status changed
(or it was just created) and the new status is one the stack publishes (``PUBLISH_STATUSES``).

The event's ``detail`` is a :class:`StatusEvent`, schema version "1" (docs/events.md). ``sequence``
is the status record's own counter, incremented in the same conditional write as each change
(:func:`mailqueue.statemachine.transition`), so ``event_id`` (``<email_id>-<sequence>``) is the same
however often a stream record is delivered, and a receiver orders one email's events by ``sequence``.

Events are put ten at a time (PutEvents' limit). Entries EventBridge refuses are tried again; those
still refused are reported as the stream records that failed, so Lambda retries the stream from the
first of them (partial batch responses), and the events after it come again: receivers de-duplicate
on ``event_id``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from mailqueue.packing import PACKED_BODY, unpack
from mailqueue.records import Attr, StatusRecord, iso_or_none
from mailqueue.statemachine import Status
from mailqueue.store import STATUS, EmailStore, decoded

SCHEMA_VERSION: Literal["1"] = "1"
SOURCE = "mailqueue"
DETAIL_TYPE = "Email Status Changed"
# PutEvents takes at most ten entries a call.
PUT_EVENTS_LIMIT = 10
# Calls of PutEvents for the entries it refused, before their stream records are reported failed.
PUT_ATTEMPTS = 3
ALL = "all"
NONE = "none"
DEFAULT_STATUSES = ("delivered", "bounced", "complained", "failed")
# Where a content record keeps its tags: as a plain attribute, in the envelope kept beside a body in S3,
# or inside the compressed body (mailqueue.packing).
_CONTENT_ATTRIBUTES = ("tags", "envelope", PACKED_BODY)


# The event's parts are frozen dataclasses, not pydantic models: they are built from the table's own
# records, never parsed from a caller, and the notify function then starts without importing pydantic.


@dataclass(frozen=True, slots=True)
class EventTag:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    address: str
    status: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class Bounce:
    """SES's bounce: its type (Permanent, Transient, Undetermined), subtype and the recipients it names."""

    type: str
    subtype: str
    recipients: list[BouncedRecipient] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an email failed (or is retrying): SES's error code or mailqueue's own, and its message."""

    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why the email is in its status: the history's words, and the bounce or the error behind them."""

    summary: str | None = None
    bounce: Bounce | None = None
    error: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """The ``detail`` of an ``Email Status Changed`` event, schema version "1"."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    # <email_id>-<sequence>: the same however often the change is delivered.
    event_id: str
    email_id: str
    sequence: int
    status: str
    previous_status: str | None
    reason: Reason | None
    metadata: dict[str, Any] | None
    tags: list[EventTag]
    idempotency_key: str | None
    # When the status changed: the record's updated_at (ISO 8601, UTC, milliseconds).
    time: str

    def to_json(self) -> str:
        """The event as EventBridge's ``Detail``: compact JSON, its fields in the order above."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))


def published_statuses(setting: Iterable[str]) -> frozenset[Status]:
    """The statuses ``PUBLISH_STATUSES`` names: status names, ``all`` or ``none`` (ValueError for anything else)."""
    names = [name.strip().lower() for name in setting if name.strip()]
    if names in ([], [NONE]):
        return frozenset()
    if names == [ALL]:
        return frozenset(Status)
    unknown = [name for name in names if name not in {status.value for status in Status}]
    if unknown:
        allowed = ", ".join(status.value for status in Status)
        raise ValueError(f"PUBLISH_STATUSES names {', '.join(unknown)}; use all, none, or some of {allowed}")
    return frozenset(Status(name) for name in names)


def status_event(record: Mapping[str, Any], published: frozenset[Status]) -> StatusEvent | None:
    """The event a DynamoDB stream record (NEW_AND_OLD_IMAGES) stands for, tags not yet read; or None.

    None for another item than a status record, a record removed (its TTL), a change that left the status as
    it was (a requeue publishing a queued email again), and a status not published.
    """
    change = record.get("dynamodb") or {}
    if record.get("eventName") not in {"INSERT", "MODIFY"} or "NewImage" not in change:
        return None
    if (change.get("Keys") or {}).get("sk", {}).get("S") != STATUS:
        return None
    try:
        new = StatusRecord.from_item(decoded(change["NewImage"]))
    except ValueError:
        return None
    previous = decoded(change["OldImage"]).get(Attr.STATUS) if change.get("OldImage") else None
    status = new.status
    if status.value == previous or status not in published:
        return None
    return StatusEvent(
        event_id=f"{new.email_id}-{new.sequence}",
        email_id=new.email_id,
        sequence=new.sequence,
        status=status.value,
        previous_status=str(previous) if previous else None,
        reason=reason_of(new),
        metadata=new.metadata,
        tags=[],
        idempotency_key=new.idempotency_key,
        time=iso_or_none(new.updated_at) or "",
    )


def reason_of(record: StatusRecord) -> Reason | None:
    """Why the email is in its status: the history entry of the change, with the bounce or the error behind it."""
    status, history = record.status, record.history
    latest = history[-1] if history and history[-1].get("status") == status.value else {}
    summary = latest.get("reason")
    bounce = None
    if status is Status.BOUNCED and isinstance(record.bounce, dict):
        kind, _, subtype = str(record.bounce.get("type", "")).partition("/")
        recipients = [
            BouncedRecipient(
                address=str(recipient.get("address", "")),
                status=str(recipient.get("status", "")),
                diagnostic=str(recipient.get("diagnostic", "")),
            )
            for recipient in record.bounce.get("recipients") or []
        ]
        bounce = Bounce(type=kind, subtype=subtype, recipients=recipients)
    error = None
    if status in {Status.FAILED, Status.RETRYING} and isinstance(record.last_error, dict):
        error = Failure(code=str(record.last_error.get("code", "")), message=str(record.last_error.get("message", "")))
    if summary is None and bounce is None and error is None:
        return None
    return Reason(summary=summary, bounce=bounce, error=error)


def tags_of(content: Mapping[str, Any] | None) -> list[EventTag]:
    """The tags an email was enqueued with, from its content record (none when the record is gone)."""
    if not content:
        return []
    envelope = content.get("envelope")
    body = envelope if isinstance(envelope, dict) else unpack(dict(content))
    return [EventTag(name=str(tag["name"]), value=str(tag["value"])) for tag in body.get("tags") or []]


def entry(event: StatusEvent, bus: str) -> dict[str, Any]:
    """A PutEvents entry for ``event`` on ``bus`` (a name or an ARN)."""
    put: dict[str, Any] = {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": event.to_json(),
        "EventBusName": bus,
    }
    if event.time:
        put["Time"] = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    return put


@dataclass(frozen=True)
class Published:
    """What a batch of stream records came to: events put, and the records whose event was refused."""

    put: int
    failed: list[str]

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The partial batch response naming the stream records that failed (Lambda retries from the first)."""
        return {"batchItemFailures": [{"itemIdentifier": number} for number in self.failed]}


@dataclass
class StatusPublisher:
    """Turns a batch of stream records into events on ``bus``; reports the records whose event was not put."""

    store: EmailStore
    events: Any  # an EventBridge client
    bus: str
    published: frozenset[Status]
    sleep: Callable[[float], None] = time.sleep

    def publish(self, records: Sequence[Mapping[str, Any]]) -> Published:
        """Put the events of ``records``, in their order; with the stream sequence numbers of the records whose
        event EventBridge still refused after retries (Lambda's ``itemIdentifier``s)."""
        pending = [
            (str(record["dynamodb"]["SequenceNumber"]), event)
            for record in records
            if (event := status_event(record, self.published)) is not None
        ]
        if not pending:
            return Published(put=0, failed=[])
        contents = self.store.contents(sorted({event.email_id for _, event in pending}), _CONTENT_ATTRIBUTES)
        with_tags = [(number, replace(event, tags=tags_of(contents.get(event.email_id)))) for number, event in pending]
        failed: list[str] = []
        for start in range(0, len(with_tags), PUT_EVENTS_LIMIT):
            failed += self._put(with_tags[start : start + PUT_EVENTS_LIMIT])
        return Published(put=len(with_tags) - len(failed), failed=failed)

    def _put(self, batch: list[tuple[str, StatusEvent]]) -> list[str]:
        """Put one call's worth of events; the sequence numbers of those still refused after PUT_ATTEMPTS."""
        for attempt in range(PUT_ATTEMPTS):
            answer = self.events.put_events(Entries=[entry(event, self.bus) for _, event in batch])
            if not answer.get("FailedEntryCount"):
                return []
            # Entries answer in the order they were put; a refused one has an ErrorCode.
            batch = [item for item, result in zip(batch, answer["Entries"], strict=True) if result.get("ErrorCode")]
            if attempt < PUT_ATTEMPTS - 1:
                self.sleep(0.1 * 2**attempt)
        return [number for number, _ in batch]
