"""The status record: the small item (``sk = "status"``) that every transition of an email rewrites.

:class:`StatusRecord` is the record as the code reads it: typed fields, built once by the store from the
decoded DynamoDB item (:meth:`StatusRecord.from_item`), never a dict handed around. :class:`Attr` names
the item's attributes: the store builds its expressions from these names, and a
:class:`mailqueue.statemachine.Change` names what it sets or removes with them, so no other module spells
an attribute of the status record.

Timestamps are stored as ``clock.iso`` strings (UTC, milliseconds: they sort as times do) and read as
aware datetimes; ``clock.iso`` gives back the stored string exactly, which is what a guard compares.

A record read from an index holds only what the index projects (``by-deadline``: status, priority,
attempts, the deadline and the keys): the fields it lacks keep their defaults.

Its own module, not the state machine's: the state machine says which changes are allowed, this module
what a record holds; the store, the domain modules and the dev tools read it, and it imports nothing
beyond the statuses and the clock (it is on every function's cold-start path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from mailqueue import clock
from mailqueue.statemachine import HELD_PREFIX, Status


class Attr:
    """The attributes of a status record in DynamoDB (plain strings: the store puts them into requests)."""

    PK: Final = "pk"
    SK: Final = "sk"
    STATUS: Final = "status"
    DEADLINE: Final = "deadline"
    PRIORITY: Final = "priority"
    ATTEMPTS: Final = "attempts"
    # Counts the changes: 1 when enqueued, one more with every transition (see mailqueue.notifications).
    SEQUENCE: Final = "seq"
    CREATED_AT: Final = "created_at"
    UPDATED_AT: Final = "updated_at"
    TO: Final = "to"
    SUBJECT: Final = "subject"
    SEND_AT: Final = "send_at"
    HISTORY: Final = "history"
    METADATA: Final = "metadata"
    TEMPLATE: Final = "template"
    TEMPLATE_VERSION: Final = "template_version"
    IDEMPOTENCY_KEY: Final = "idempotency_key"
    CONTENT_UNTIL: Final = "content_until"
    CLAIM_TOKEN: Final = "claim_token"  # noqa: S105 (a name, not a secret)
    LAST_ERROR: Final = "last_error"
    SES_MESSAGE_ID: Final = "ses_message_id"
    BOUNCE: Final = "bounce"
    # The index keys (see mailqueue.store): by-deadline, by-arrival, by-status.
    SHARD: Final = "shard"
    ARRIVAL_SHARD: Final = "arrival_shard"
    STATUS_SHARD: Final = "status_shard"
    # DynamoDB's TTL, on terminal emails.
    EXPIRES_AT: Final = "expires_at"


# The sort key of the status record.
STATUS_KIND = "status"
# One entry of an email's history: ``status``, ``at`` and, when there is one, ``reason``.
HistoryStep = Mapping[str, str]


# The sender builds two records an email: reading them stays cheap (datetime.fromisoformat reads the trailing
# "Z" from Python 3.11 on; a dict finds the status without Enum's call machinery).
_parse_time = datetime.fromisoformat
_STATUSES: dict[str, Status] = {status.value: status for status in Status}


def _time(value: Any) -> datetime | None:
    return _parse_time(value) if value else None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """An email's status record (see the module's docstring)."""

    email_id: str
    status: Status
    # Live emails only: when the requeue function acts if nothing else happened.
    deadline: datetime | None = None
    priority: str = "normal"
    attempts: int = 0
    # Counts every change, 1 at enqueue (0 for an email enqueued before sequences existed).
    sequence: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # A summary: the first recipient and the subject cut short (the content record has the rest).
    to: str | None = None
    subject: str | None = None
    send_at: datetime | None = None
    history: tuple[HistoryStep, ...] = ()
    metadata: dict[str, Any] | None = None
    template: str | None = None
    template_version: int | None = None
    idempotency_key: str | None = None
    # Until when the content (and the uploads it names) is kept.
    content_until: datetime | None = None
    claim_token: str | None = None
    last_error: dict[str, str] | None = None
    ses_message_id: str | None = None
    bounce: dict[str, Any] | None = None
    shard: int | None = None
    arrival_shard: int | None = None
    status_shard: str | None = None
    expires_at: int | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> StatusRecord:
        """The record of a decoded item (plain values, as ``EmailStore`` decodes them).

        Raises ValueError for an item whose status is not one of :class:`Status`.
        """
        get = item.get
        status = _STATUSES.get(item[Attr.STATUS])
        if status is None:
            raise ValueError(f"{item[Attr.STATUS]!r} is not a status")
        template_version = get(Attr.TEMPLATE_VERSION)
        return cls(
            email_id=str(item[Attr.PK]),
            status=status,
            deadline=_time(get(Attr.DEADLINE)),
            priority=get(Attr.PRIORITY) or "normal",
            attempts=int(get(Attr.ATTEMPTS) or 0),
            sequence=int(get(Attr.SEQUENCE) or 0),
            created_at=_time(get(Attr.CREATED_AT)),
            updated_at=_time(get(Attr.UPDATED_AT)),
            to=get(Attr.TO),
            subject=get(Attr.SUBJECT),
            send_at=_time(get(Attr.SEND_AT)),
            history=tuple(get(Attr.HISTORY) or ()),
            metadata=get(Attr.METADATA),
            template=get(Attr.TEMPLATE),
            template_version=_int(template_version),
            idempotency_key=get(Attr.IDEMPOTENCY_KEY),
            content_until=_time(get(Attr.CONTENT_UNTIL)),
            claim_token=get(Attr.CLAIM_TOKEN),
            last_error=get(Attr.LAST_ERROR),
            ses_message_id=get(Attr.SES_MESSAGE_ID),
            bounce=get(Attr.BOUNCE),
            shard=_int(get(Attr.SHARD)),
            arrival_shard=_int(get(Attr.ARRIVAL_SHARD)),
            status_shard=get(Attr.STATUS_SHARD),
            expires_at=_int(get(Attr.EXPIRES_AT)),
        )

    def to_item(self) -> dict[str, Any]:
        """The item as stored (plain values, before DynamoDB's encoding); absent fields left out."""
        item: dict[str, Any] = {
            Attr.PK: self.email_id,
            Attr.SK: STATUS_KIND,
            Attr.STATUS: self.status.value,
            Attr.DEADLINE: iso_or_none(self.deadline),
            Attr.PRIORITY: self.priority,
            Attr.ATTEMPTS: self.attempts,
            # A record that has none (enqueued before sequences existed, or read from an index) writes none.
            Attr.SEQUENCE: self.sequence or None,
            Attr.CREATED_AT: iso_or_none(self.created_at),
            Attr.UPDATED_AT: iso_or_none(self.updated_at),
            Attr.TO: self.to,
            Attr.SUBJECT: self.subject,
            Attr.SEND_AT: iso_or_none(self.send_at),
            Attr.HISTORY: [dict(step) for step in self.history] or None,
            Attr.METADATA: self.metadata,
            Attr.TEMPLATE: self.template,
            Attr.TEMPLATE_VERSION: self.template_version,
            Attr.IDEMPOTENCY_KEY: self.idempotency_key,
            Attr.CONTENT_UNTIL: iso_or_none(self.content_until),
            Attr.CLAIM_TOKEN: self.claim_token,
            Attr.LAST_ERROR: self.last_error,
            Attr.SES_MESSAGE_ID: self.ses_message_id,
            Attr.BOUNCE: self.bounce,
            Attr.SHARD: self.shard,
            Attr.ARRIVAL_SHARD: self.arrival_shard,
            Attr.STATUS_SHARD: self.status_shard,
            Attr.EXPIRES_AT: self.expires_at,
        }
        return {name: value for name, value in item.items() if value is not None}

    @property
    def error_code(self) -> str | None:
        """The code of the error the last attempt ended with, if any."""
        code = (self.last_error or {}).get("code")
        return str(code) if code else None

    @property
    def held(self) -> bool:
        """Whether the sender holds the email for an error of the SES account or configuration."""
        return is_held(self.status, self.history)


def iso_or_none(moment: datetime | None) -> str | None:
    """``clock.iso`` of a timestamp the record may lack: as it is stored, and as the API shows it."""
    return None if moment is None else clock.iso(moment)


def is_held(status: str, history: Sequence[Mapping[str, Any]]) -> bool:
    """True for an email the sender holds for an error of the account or configuration (sending paused, an
    identity not verified): retrying, the last step of its history saying so (see ``mailqueue.sender``).
    ``history`` is the record's, or the API's JSON view of it."""
    return (
        status == Status.RETRYING.value
        and bool(history)
        and str(history[-1].get("reason") or "").startswith(HELD_PREFIX)
    )
