"""What the API does: accept emails, show them, cancel and retry them, hand out upload URLs.

Handlers call these functions with validated models; nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailqueue import budget, clock
from mailqueue.blobs import BlobStore
from mailqueue.errors import (
    SUPPRESSED_RECIPIENT,
    EmailNotFound,
    FieldError,
    IdempotencyConflict,
    InvalidEmail,
    InvalidParameter,
    MailqueueError,
    StatusConflict,
    Unavailable,
)
from mailqueue.ids import is_email_id, new_email_id
from mailqueue.limits import MAX_ATTACHMENT_BYTES
from mailqueue.models import (
    UPLOAD_PREFIX,
    BatchItemResult,
    BatchResult,
    EmailList,
    EmailRequest,
    EmailView,
    EnqueueResult,
    HistoryEntry,
    Mailbox,
    Recipients,
    SkippedRecipient,
    Suppression,
    SuppressionPage,
    Tag,
    UploadRequest,
    UploadTicket,
    summary_subject,
)
from mailqueue.packing import pack, unpack
from mailqueue.problems import failure_of, field_problems
from mailqueue.queue import MAX_DELAY_SECONDS, Publication, SendQueue
from mailqueue.records import Attr, StatusRecord, iso_or_none
from mailqueue.settings import Settings
from mailqueue.statemachine import Change, Guard, Status, history_entry, transition
from mailqueue.store import TIMED, ConditionFailed, EmailStore, SuppressionList

if TYPE_CHECKING:
    from mailqueue.templates import TemplateLibrary, TemplateRef

MAX_SCHEDULE_DAYS = 7
# Who a request comes from when no authorizer ran (the local stack): every such request is the same caller.
LOCAL_CALLER = "local"
# How long past its due time an email's content is kept at least, for its retries; the sender keeps it
# longer for an email that waits longer.
KEEP_AFTER_DUE_SECONDS = 86400
# How long an idempotency key stays bound to its emails' ids: past the 24 hours its answer replays.
IDEMPOTENCY_BINDING_DAYS = 2
NOT_STORED_MESSAGE = "the email could not be stored; nothing was accepted and nothing will be sent: send it again"
# The longest sort key DynamoDB stores: what a cursor or a suppressed address can be.
MAX_KEY_BYTES = 1024
# What GET /emails/{id} shows of an email's content: its recipients and whole subject.
ENVELOPE = ("to", "cc", "bcc", "subject", "tags")
UNPUBLISHED_MESSAGE = (
    "stored, but the send queue could not be reached: the email stays queued and is published "
    "again when its deadline passes"
)


@dataclass
class Mailqueue:
    """The queue's operations, bound to one deployment's settings and AWS clients."""

    settings: Settings
    store: EmailStore
    queue: SendQueue
    blobs: BlobStore
    suppressions: SuppressionList
    # Renders emails that name a template; None where templates are not offered.
    templates: TemplateLibrary | None = None

    # --- enqueue --------------------------------------------------------------------------------------

    def enqueue(
        self,
        request: EmailRequest,
        now: datetime | None = None,
        key: str | None = None,
        caller: str = "",
        idempotency_key: str | None = None,
    ) -> EnqueueResult:
        """Store and publish one email. ``key`` (an idempotency key, with its caller) binds its id: every
        request with that key names the same email, so a repeat never stores a second one. ``caller`` (who
        sent the request, see ``upload_prefix``) may attach only its own uploads. ``idempotency_key``, the key
        as the caller gave it, is kept on the email for its status events (see ``mailqueue.notifications``)."""
        now = now or clock.now()
        ids, found = self._ids(key, 1, now)
        email_id = ids[0]
        if email_id in found:
            return _replayed(found[email_id])
        expanded = self._expand([request])[0]
        if isinstance(expanded, InvalidEmail):
            raise expanded
        request, origin = expanded
        prepared = self._prepare(request, now, self._suppressed([request]), email_id, origin, caller, idempotency_key)
        outcome = self._store([prepared], now)
        if email_id in outcome.withdrawn:
            raise Unavailable(NOT_STORED_MESSAGE)
        if email_id in outcome.unsettled:
            raise _unconfirmed(email_id, key)
        return self._publish([prepared])[0]

    def enqueue_batch(
        self,
        items: list[dict[str, Any]],
        now: datetime | None = None,
        key: str | None = None,
        caller: str = "",
        idempotency_key: str | None = None,
    ) -> BatchResult:
        now = now or clock.now()
        ids, found = self._ids(key, len(items), now)
        results: list[BatchItemResult] = []
        prepared: list[tuple[int, _Prepared]] = []
        checked: list[tuple[int, EmailRequest]] = []
        for index, item in enumerate(items):
            if ids[index] in found:
                replayed = _replayed(found[ids[index]])
                results.append(BatchItemResult(index=index, id=replayed.id, status=replayed.status, published=True))
                continue
            try:
                checked.append((index, EmailRequest.model_validate(item)))
            except ValidationError as error:
                results.append(BatchItemResult(index=index, error=error_body(validation_failure(error))))
        valid: list[tuple[int, EmailRequest, TemplateRef | None]] = []
        for (index, _), expanded in zip(checked, self._expand([request for _, request in checked]), strict=True):
            if isinstance(expanded, InvalidEmail):
                results.append(BatchItemResult(index=index, error=error_body(expanded)))
            else:
                valid.append((index, *expanded))
        suppressed = self._suppressed([request for _, request, _ in valid])
        for index, request, origin in valid:
            try:
                prepared.append(
                    (index, self._prepare(request, now, suppressed, ids[index], origin, caller, idempotency_key))
                )
            except InvalidEmail as error:
                results.append(BatchItemResult(index=index, error=error_body(error)))
        outcome = self._store([item for _, item in prepared], now)
        for index, candidate in prepared:
            if candidate.email_id in outcome.withdrawn:
                failure = InvalidEmail(NOT_STORED_MESSAGE)
                failure.code = "not_stored"
                results.append(BatchItemResult(index=index, error=error_body(failure)))
            elif candidate.email_id in outcome.unsettled:
                results.append(BatchItemResult(index=index, error=error_body(_unconfirmed(candidate.email_id, key))))
        stored = [(index, item) for index, item in prepared if item.email_id in outcome.stored]
        answers = self._publish([item for _, item in stored])
        for (index, _), answer in zip(stored, answers, strict=True):
            results.append(
                BatchItemResult(
                    index=index,
                    id=answer.id,
                    status=answer.status,
                    published=answer.published,
                    skipped=answer.skipped,
                )
            )
        results.sort(key=lambda result: result.index)
        accepted = sum(1 for result in results if result.id)
        return BatchResult(accepted=accepted, rejected=len(results) - accepted, results=results)

    def _expand(self, requests: list[EmailRequest]) -> list[tuple[EmailRequest, TemplateRef | None] | InvalidEmail]:
        """Emails that name a template rendered from it (see ``mailqueue.templates``); others as they are."""
        if self.templates is None:
            return [
                InvalidEmail.on("template", "templates are not offered here") if request.template else (request, None)
                for request in requests
            ]
        return self.templates.expand(requests)

    def _ids(self, key: str | None, count: int, now: datetime) -> tuple[list[str], dict[str, StatusRecord]]:
        """Fresh ids; or, for an idempotency key, the ids bound to it (binding fresh ones the first time).
        With them, the status records of those already stored (by an earlier request with the key)."""
        ids = [new_email_id() for _ in range(count)]
        if key is None:
            return ids, {}
        claim = "idempotency#" + hashlib.sha256(key.encode()).hexdigest()
        # Longer than the replay window of the key's answer, so that no repeat finds the key unbound.
        expires_at = clock.epoch(clock.after(now, IDEMPOTENCY_BINDING_DAYS * 86400))
        bound, fresh = self.store.claim_ids(claim, ids, expires_at)
        if len(bound) != count:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with another body",
                [FieldError("Idempotency-Key", "was used with another body")],
            )
        # Ids bound only now name no email yet; a repeat's may, and those are not written again.
        return bound, {} if fresh else self.store.existing(bound)

    def _store(self, prepared: list[_Prepared], now: datetime) -> _Stored:
        """Write the emails; settle each whose write is in doubt as stored, withdrawn or unsettled.

        A write whose answer was lost may have landed. Rather than answer ``503`` for an email that
        the requeue function would then send (and the caller send again), each such email is settled
        before the answer: stored if its status record is there, else withdrawn, so that it can never
        be sent (see ``EmailStore.settle_unwritten``). Time is kept for that settling out of the budget.
        """
        ids = {item.email_id for item in prepared}
        with budget.keeping(self.store.attempt_seconds()):
            failed = self.store.put_new([(item.record, item.content) for item in prepared]) if prepared else set()
        if not failed:
            return _Stored(stored=ids)
        expires_at = clock.epoch(clock.after(now, self.settings.retention_days * 86400))
        stored, withdrawn = self.store.settle_unwritten(sorted(failed), expires_at, clock.iso(now))
        return _Stored(stored=(ids - failed) | stored, withdrawn=withdrawn, unsettled=failed - stored - withdrawn)

    def _prepare(
        self,
        request: EmailRequest,
        now: datetime,
        suppressed: dict[str, dict[str, Any]],
        email_id: str,
        origin: TemplateRef | None = None,
        caller: str = "",
        idempotency_key: str | None = None,
    ) -> _Prepared:
        sender = request.sender
        self._check_identity(sender)
        request, skipped = self._without_suppressed(request, suppressed)
        self._check_uploads(request, caller)

        send_at = request.send_at
        delay = 0.0 if send_at is None else max(0.0, (send_at - now).total_seconds())
        # Large content in S3 expires the retention period after it is written (now): an email must be
        # due within it. (Uploads it names are renewed as needed, see _keep_uploads.)
        horizon_days = min(MAX_SCHEDULE_DAYS, self.settings.retention_days)
        if delay > horizon_days * 86400:
            raise InvalidEmail.on("send_at", f"must be at most {horizon_days} days ahead")
        if delay > MAX_DELAY_SECONDS:
            status, deadline, delay_seconds = Status.SCHEDULED, send_at, 0
        else:
            delay_seconds = math.ceil(delay)
            status = Status.QUEUED
            deadline = clock.after(now, delay_seconds + self.settings.queued_grace_seconds)
        assert deadline is not None
        recipients = request.recipients()
        # What the sender needs must outlive the email's sending: counted from when it is due (not from a
        # send_at in the past), and an upload it names renewed if the lifecycle would delete it sooner.
        due = max(now, send_at) if send_at else now
        content = self._content(email_id, request, due)
        kept_until = [clock.after(due, self.settings.retention_days * 86400)]
        if "s3_key" in content:
            kept_until.append(clock.after(now, self.settings.retention_days * 86400))
        kept_until += self._keep_uploads(request, due, now)
        record = StatusRecord(
            email_id=email_id,
            status=status,
            deadline=deadline,
            priority=request.priority,
            attempts=0,
            sequence=1,
            created_at=now,
            updated_at=now,
            to=recipients[0].address,
            subject=summary_subject(request.subject or ""),
            send_at=send_at,
            history=(history_entry(status, now, f"accepted, {skipped_text(skipped)}" if skipped else "accepted"),),
            metadata=request.metadata,
            template=origin.name if origin else None,
            template_version=origin.version if origin else None,
            # Only when given (None is not written): the status events carry it.
            idempotency_key=idempotency_key,
            content_until=min(kept_until),
        )
        publication = Publication(email_id, request.priority, delay_seconds)
        return _Prepared(email_id, record, content, publication, status, skipped)

    def _keep_uploads(self, request: EmailRequest, due: datetime, now: datetime) -> list[datetime]:
        """Until when each upload the email names is kept, renewing those the lifecycle would delete
        before the email's due time and a day's retries after it."""
        until: list[datetime] = []
        needed = clock.after(due, KEEP_AFTER_DUE_SECONDS)
        for key in dict.fromkeys(a.s3_key for a in request.attachments if a.s3_key):
            written = self.blobs.written_at(key)
            if written is None:
                continue  # refused by the upload check
            expires = self.blobs.expires_after(key, written, self.settings.retention_days)
            if expires < needed:
                self.blobs.renew(key)
                expires = self.blobs.expires_after(key, now, self.settings.retention_days)
            until.append(expires)
        return until

    def _content(self, email_id: str, request: EmailRequest, due: datetime) -> dict[str, Any]:
        body = content_body(request)
        # Kept for the retention period from when the email is due; the sender extends it for an email
        # that waits longer (held by an account error, retried), see ``Sender._keep_content``.
        expires_at = clock.epoch(clock.after(due, self.settings.retention_days * 86400))
        item = {"pk": email_id, "sk": "content", "expires_at": expires_at}
        if len(json.dumps(body)) > self.settings.inline_content_limit:
            # The envelope stays in the item too: GET /emails/{id} shows it without reading the body from S3.
            envelope = {key: body[key] for key in ENVELOPE if key in body}
            return {**item, "s3_key": self.blobs.put_content(email_id, body), "envelope": envelope}
        return {**item, **pack(body)}

    def _check_identity(self, sender: Mailbox) -> None:
        identities = self.settings.sending_identities
        if sender.key() in identities or sender.domain in identities:
            return
        raise InvalidEmail.on(
            "from",
            f"{sender.address} is not a sending identity of this queue (allowed: {', '.join(identities) or 'none'})",
        )

    def _suppressed(self, requests: list[EmailRequest]) -> dict[str, dict[str, Any]]:
        addresses = {mailbox.key() for request in requests for mailbox in request.recipients()}
        return self.suppressions.find(addresses) if addresses else {}

    def _without_suppressed(
        self, request: EmailRequest, suppressed: dict[str, dict[str, Any]]
    ) -> tuple[EmailRequest, list[SkippedRecipient]]:
        """The email without its suppressed recipients (and who they were), if it may drop them; else a 422."""
        if not suppressed:
            return request, []
        hits = {
            field: [value for value in getattr(request, field) if Mailbox.parse(value).key() in suppressed]
            for field in ("to", "cc", "bcc")
        }
        found = [(field, value) for field, values in hits.items() for value in values]
        if not found:
            return request, []
        remaining = len(request.recipients()) - len(found)
        if not request.skip_suppressed or remaining == 0:
            details = [
                FieldError(
                    field,
                    f"{Mailbox.parse(value).key()} is on the suppression list "
                    f"({suppressed[Mailbox.parse(value).key()].get('reason', 'suppressed')})",
                    SUPPRESSED_RECIPIENT,
                )
                for field, value in found
            ]
            hint = "" if request.skip_suppressed else "; set skip_suppressed to send to the others"
            raise InvalidEmail(f"{', '.join(d.message for d in details)}{hint}", details)
        kept = {field: [v for v in getattr(request, field) if v not in hits[field]] for field in ("to", "cc", "bcc")}
        skipped = [
            SkippedRecipient(
                field=field,
                address=Mailbox.parse(value).key(),
                reason=str(suppressed[Mailbox.parse(value).key()].get("reason", "suppressed")),
            )
            for field, value in found
        ]
        return request.model_copy(update=kept), skipped

    def _check_uploads(self, request: EmailRequest, caller: str) -> None:
        """Each upload the email names is the caller's own and is there; all its attachments within the limit.

        The size read here cannot change afterwards: an upload's form binds its size (``upload_ticket``).
        """
        total = sum(attachment.decoded_size() for attachment in request.attachments)
        own = upload_prefix(caller)
        for index, attachment in enumerate(request.attachments):
            if attachment.s3_key is None:
                continue
            if not attachment.s3_key.startswith(own):
                raise InvalidEmail.on(
                    f"attachments[{index}].s3_key",
                    "is not an upload of this caller: name the s3_key that POST /attachments gave you",
                )
            size = self.blobs.size_of(attachment.s3_key)
            if size is None:
                raise InvalidEmail.on(f"attachments[{index}].s3_key", "no file was uploaded under this key")
            total += size
        if total > MAX_ATTACHMENT_BYTES:
            raise InvalidEmail.on(
                "attachments", f"attachments total {total} bytes; the limit is {MAX_ATTACHMENT_BYTES}"
            )

    def _publish(self, prepared: list[_Prepared]) -> list[EnqueueResult]:
        to_publish = [item.publication for item in prepared if item.status is Status.QUEUED]
        failed = self.queue.publish(to_publish) if to_publish else set()
        return [
            EnqueueResult(
                id=item.email_id,
                status=item.status.value,
                published=item.email_id not in failed,
                message="; ".join(
                    note
                    for note in (
                        f"sent {skipped_text(item.skipped)}" if item.skipped else "",
                        UNPUBLISHED_MESSAGE if item.email_id in failed else "",
                    )
                    if note
                )
                or None,
                skipped=item.skipped,
            )
            for item in prepared
        ]

    # --- reading --------------------------------------------------------------------------------------

    def get(self, email_id: str) -> EmailView:
        """The email's status and history, with its whole subject and every recipient (from its content)."""
        record = self.store.get(email_id) if is_email_id(email_id) else None
        if record is None:
            raise EmailNotFound(f"no email has the id {email_id}")
        return view(record, envelope_of(self.store.get_content(email_id, consistent=False)))

    def list(self, status: str, limit: int = 20, cursor: str | None = None) -> EmailList:
        try:
            wanted = Status(status)
        except ValueError:
            raise InvalidParameter.on("status", f"must be one of {', '.join(s.value for s in Status)}") from None
        if not 1 <= limit <= 100:
            raise InvalidParameter.on("limit", "must be between 1 and 100")
        # Scheduled and retrying emails list by deadline, the others newest first (see EmailStore.list_by_status).
        name = "due_after" if wanted.value in TIMED else "before"
        position = decode_cursor(cursor, name) if cursor is not None else None
        records, resume = self.store.list_by_status(wanted.value, limit, position)
        return EmailList(
            emails=[view(record) for record in records], cursor=encode_cursor(resume, name) if resume else None
        )

    # --- cancel and retry -----------------------------------------------------------------------------

    def cancel(self, email_id: str, now: datetime | None = None) -> EmailView:
        now = now or clock.now()
        guard = Guard(statuses={Status.SCHEDULED, Status.QUEUED, Status.RETRYING})
        change = Change(Status.CANCELLED, reason="cancelled by request")
        # A cancel sent again because its answer was lost finds the email cancelled: that is its answer.
        return self._change(email_id, guard, change, now, "cancelled", done=Status.CANCELLED)

    def retry(self, email_id: str, now: datetime | None = None) -> EmailView:
        now = now or clock.now()
        change = Change(
            Status.QUEUED,
            reason="retried by request",
            deadline=clock.after(now, self.settings.queued_grace_seconds),
            set={Attr.ATTEMPTS: 0},
            remove=(Attr.LAST_ERROR, Attr.CLAIM_TOKEN),
        )
        email = self._change(email_id, Guard(statuses={Status.FAILED}), change, now, "retried")
        self.queue.publish([Publication(email_id, email.priority)])
        return email

    def _change(
        self, email_id: str, guard: Guard, change: Change, now: datetime, action: str, done: Status | None = None
    ) -> EmailView:
        """Apply ``change`` under ``guard``; an email already in status ``done`` is answered as it is."""
        if not is_email_id(email_id):
            raise EmailNotFound(f"no email has the id {email_id}")
        try:
            return view(transition(self.store, email_id, guard, change, now))
        except ConditionFailed as failure:
            current = failure.current or self.store.get(email_id)
            if current is None:
                raise EmailNotFound(f"no email has the id {email_id}") from None
            if done is not None and current.status is done:
                return view(current)
            allowed = [status.value for status in Status if status in guard.statuses]
            raise StatusConflict(email_id, current.status.value, action, allowed) from None

    # --- suppression list ---------------------------------------------------------------------------------

    def list_suppressions(self, limit: int = 50, cursor: str | None = None) -> SuppressionPage:
        after = decode_cursor(cursor, "after") if cursor is not None else None
        items, last = self.suppressions.page(limit, after)
        return SuppressionPage(
            suppressions=[Suppression(**{k: item.get(k) for k in Suppression.model_fields}) for item in items],
            cursor=encode_cursor(last, "after") if last else None,
        )

    def lift_suppression(self, address: str) -> None:
        address = address.strip().lower()
        if not address or len(address.encode()) > MAX_KEY_BYTES:
            raise InvalidParameter.on("address", f"must be an address of 1 to {MAX_KEY_BYTES} bytes")
        if not self.suppressions.remove(address):
            raise EmailNotFound(f"{address} is not on the suppression list")

    # --- uploads --------------------------------------------------------------------------------------

    def upload_ticket(self, request: UploadRequest, now: datetime | None = None, caller: str = "") -> UploadTicket:
        """Where and how to upload one file: under the caller's own prefix (only it can attach the file),
        through a presigned POST that S3 takes only for a file of the declared size."""
        now = now or clock.now()
        from mailqueue.blobs import UPLOAD_URL_SECONDS  # noqa: PLC0415

        # The key names the size: every form ever handed out for a key binds the same size, so no later
        # ticket can put a larger file under a key that an email already names.
        if request.sha256 is None:
            key = f"{upload_prefix(caller)}{new_email_id()}/{request.size}/{request.filename}"
        else:
            # Content-addressed: the same file gets the same key (for the same caller).
            key = f"{upload_prefix(caller)}sha256-{request.sha256}/{request.size}/{request.filename}"
        url, fields = self.blobs.upload_form(key, request.content_type, request.size)
        return UploadTicket(
            s3_key=key,
            upload_url=url,
            fields=fields,
            expires_at=clock.iso(clock.after(now, UPLOAD_URL_SECONDS)),
            uploaded=request.sha256 is not None and self.blobs.size_of(key) == request.size,
        )


def upload_prefix(caller: str) -> str:
    """The key prefix of ``caller``'s uploads: ``uploads/`` and a digest of who the caller is (its IAM ARN or
    JWT subject, as the API's authorizer established it; LOCAL_CALLER where no authorizer runs).

    The sessions of an assumed role (the instances or containers of one application) are one caller: the
    role, the principal that IAM grants to.
    """
    session = _ASSUMED_ROLE_SESSION.fullmatch(caller)
    owner = session.group("role") if session else caller or LOCAL_CALLER
    digest = hashlib.sha256(owner.encode()).hexdigest()[:32]
    return f"{UPLOAD_PREFIX}{digest}/"


# arn:aws:sts::123456789012:assumed-role/RoleName/SessionName
_ASSUMED_ROLE_SESSION = re.compile(r"(?P<role>arn:aws[a-z-]*:sts::\d+:assumed-role/[^/]+)/.+")


def content_body(request: EmailRequest) -> dict[str, Any]:
    """What the sender renders: the email's addresses parsed, its fields as given, empty ones left out."""

    def boxes(values: list[str]) -> list[dict[str, str]]:
        return [Mailbox.parse(value).model_dump() for value in values]

    body: dict[str, Any] = {
        "from": request.sender.model_dump(),
        "to": boxes(request.to),
        "cc": boxes(request.cc),
        "bcc": boxes(request.bcc),
        "reply_to": boxes(request.reply_to),
        "subject": request.subject,
        "text": request.text,
        "html": request.html,
        "headers": request.headers,
        "attachments": [attachment.model_dump(exclude_none=True) for attachment in request.attachments],
        "tags": [tag.model_dump() for tag in request.tags],
    }
    return {key: value for key, value in body.items() if value not in (None, [], {})}


@dataclass
class _Stored:
    """Where each email's write ended: stored, withdrawn (never to be sent), or unsettled (unknown)."""

    stored: set[str]
    withdrawn: set[str] = field(default_factory=set)
    unsettled: set[str] = field(default_factory=set)


def _replayed(record: StatusRecord) -> EnqueueResult:
    """The answer for an email an earlier request with the same idempotency key stored."""
    return EnqueueResult(id=record.email_id, status=record.status.value, published=True)


def _unconfirmed(email_id: str, key: str | None) -> Unavailable:
    """Storage could not say whether the email was stored, nor make sure it never will be."""
    if key is not None:
        message = (
            f"mailqueue could not confirm that the email was stored (as {email_id}); send it again with the "
            "same Idempotency-Key: that never makes a second email"
        )
    else:
        message = (
            f"mailqueue could not confirm whether the email was stored: it may have been, as {email_id}. "
            f"Read GET /emails/{email_id} before sending it again; with an Idempotency-Key a repeat never "
            "makes a second email"
        )
    failure = Unavailable(message, [FieldError("id", email_id, "unconfirmed")])
    failure.code = "unconfirmed"
    return failure


@dataclass
class _Prepared:
    email_id: str
    record: StatusRecord
    content: dict[str, Any]
    publication: Publication
    status: Status
    skipped: list[SkippedRecipient]


def skipped_text(skipped: list[SkippedRecipient]) -> str:
    """``without the suppressed a@example.org (complaint), b@example.org (permanent bounce (General))``."""
    return "without the suppressed " + ", ".join(f"{item.address} ({item.reason})" for item in skipped)


def envelope_of(content: dict[str, Any] | None) -> dict[str, Any] | None:
    """Recipients and subject from a content record (None when it expired or was never written)."""
    if content is None:
        return None
    envelope = content.get("envelope")
    if not isinstance(envelope, dict):
        envelope = unpack(content)
    if "subject" not in envelope:
        return None

    def mailboxes(key: str) -> list[str]:
        boxes = envelope.get(key) or []
        return [f"{box['name']} <{box['address']}>" if box.get("name") else str(box["address"]) for box in boxes]

    return {
        "recipients": Recipients(to=mailboxes("to"), cc=mailboxes("cc"), bcc=mailboxes("bcc")),
        "subject": envelope["subject"],
        "tags": [Tag(**tag) for tag in envelope.get("tags") or []],
    }


def view(record: StatusRecord, envelope: dict[str, Any] | None = None) -> EmailView:
    """An email as the API shows it: the status record, whole when ``envelope`` (from its content) is given."""
    return EmailView(
        id=record.email_id,
        status=record.status.value,
        priority=record.priority,
        attempts=record.attempts,
        created_at=iso_or_none(record.created_at) or "",
        updated_at=iso_or_none(record.updated_at) or "",
        to=record.to,
        subject=envelope["subject"] if envelope else record.subject,
        recipients=envelope["recipients"] if envelope else None,
        summary=envelope is None,
        send_at=iso_or_none(record.send_at),
        deadline=iso_or_none(record.deadline),
        ses_message_id=record.ses_message_id,
        last_error=record.last_error,
        bounce=record.bounce,
        metadata=record.metadata,
        tags=envelope["tags"] if envelope else None,
        template=record.template,
        template_version=record.template_version,
        history=[HistoryEntry(**entry) for entry in record.history],
    )


def encode_cursor(position: str, name: str = "before") -> str:
    return base64.urlsafe_b64encode(json.dumps({name: position}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str = "before") -> str:
    if not cursor:
        raise InvalidParameter.on("cursor", "is empty: leave it out for the first page")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[name]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned") from None
    if (
        not isinstance(value, str)
        or not value
        or len(value.encode()) > MAX_KEY_BYTES
        or (name == "before" and not is_email_id(value))
        or (name == "due_after" and not _is_deadline_position(value))
    ):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned")
    return value


def _is_deadline_position(value: str) -> bool:
    """``"<deadline> <id>"``: where a list by deadline goes on from."""
    deadline, _, email_id = value.partition(" ")
    try:
        clock.parse_iso(deadline)
    except ValueError:
        return False
    return is_email_id(email_id)


def validation_failure(error: ValidationError) -> InvalidEmail:
    """A pydantic error as the API's error: one detail per field, named as the caller wrote it."""
    failure = failure_of(field_problems(error.errors(), EmailRequest), "the email")
    assert isinstance(failure, InvalidEmail)  # a body's problems are never a parameter's
    return failure


def error_body(error: MailqueueError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "details": [
            {"field": detail.field, "message": detail.message, "code": detail.code} for detail in error.details
        ],
    }
