"""What the API does: accept emails, show them, cancel and retry them, hand out upload URLs.

Handlers call these functions with validated models; nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailqueue import clock
from mailqueue.blobs import BlobStore
from mailqueue.errors import (
    SUPPRESSED_RECIPIENT,
    EmailNotFound,
    FieldError,
    InvalidEmail,
    InvalidParameter,
    StatusConflict,
    Unavailable,
)
from mailqueue.ids import is_email_id, new_email_id
from mailqueue.models import (
    MAX_ATTACHMENT_BYTES,
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
    UploadRequest,
    UploadTicket,
    summary_subject,
)
from mailqueue.packing import pack, unpack
from mailqueue.problems import failure_of, field_problems
from mailqueue.queue import MAX_DELAY_SECONDS, Publication, SendQueue
from mailqueue.settings import Settings
from mailqueue.statemachine import Change, Guard, Status, history_entry, transition
from mailqueue.store import CONTENT, ConditionFailed, EmailStore, SuppressionList

if TYPE_CHECKING:
    from mailqueue.templates import TemplateLibrary, TemplateRef

MAX_SCHEDULE_DAYS = 7
# What GET /emails/{id} shows of an email's content: its recipients and whole subject.
ENVELOPE = ("to", "cc", "bcc", "subject")
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

    def enqueue(self, request: EmailRequest, now: datetime | None = None) -> EnqueueResult:
        now = now or clock.now()
        expanded = self._expand([request])[0]
        if isinstance(expanded, InvalidEmail):
            raise expanded
        request, origin = expanded
        prepared = self._prepare(request, now, self._suppressed([request]), origin)
        if self.store.put_new([(prepared.record, prepared.content)]):
            raise Unavailable("the email could not be stored; nothing was accepted, send it again")
        return self._publish([prepared])[0]

    def enqueue_batch(self, items: list[dict[str, Any]], now: datetime | None = None) -> BatchResult:
        now = now or clock.now()
        results: list[BatchItemResult] = []
        prepared: list[tuple[int, _Prepared]] = []
        checked: list[tuple[int, EmailRequest]] = []
        for index, item in enumerate(items):
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
                prepared.append((index, self._prepare(request, now, suppressed, origin)))
            except InvalidEmail as error:
                results.append(BatchItemResult(index=index, error=error_body(error)))
        not_stored = self.store.put_new([(p.record, p.content) for _, p in prepared])
        for index, candidate in prepared:
            if candidate.email_id in not_stored:
                failure = InvalidEmail("the email could not be stored; send it again")
                failure.code = "not_stored"
                results.append(BatchItemResult(index=index, error=error_body(failure)))
        stored = [(index, item) for index, item in prepared if item.email_id not in not_stored]
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

    def _prepare(
        self,
        request: EmailRequest,
        now: datetime,
        suppressed: dict[str, dict[str, Any]],
        origin: TemplateRef | None = None,
    ) -> _Prepared:
        sender = request.sender
        self._check_identity(sender)
        request, skipped = self._without_suppressed(request, suppressed)
        self._check_uploads(request)

        email_id = new_email_id()
        send_at = request.send_at
        delay = 0.0 if send_at is None else max(0.0, (send_at - now).total_seconds())
        # Uploaded attachments and large content in S3 expire (uploads after 7 days, content after
        # the retention period): an email must be sent while what it needs is still there.
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
        record: dict[str, Any] = {
            "pk": email_id,
            "sk": "status",
            "status": status.value,
            "status_shard": self.store.status_shard(email_id, status),
            "shard": self.store.deadline_shard(email_id),
            "deadline": clock.iso(deadline),
            "priority": request.priority,
            "attempts": 0,
            "created_at": clock.iso(now),
            "updated_at": clock.iso(now),
            "to": recipients[0].address,
            "subject": summary_subject(request.subject or ""),
            "send_at": clock.iso(send_at) if send_at else None,
            "history": [history_entry(status, now, f"accepted, {skipped_text(skipped)}" if skipped else "accepted")],
            "metadata": request.metadata,
            "template": origin.name if origin else None,
            "template_version": origin.version if origin else None,
        }
        content = self._content(email_id, request, now)
        publication = Publication(email_id, request.priority, delay_seconds)
        return _Prepared(email_id, record, content, publication, status, skipped)

    def _content(self, email_id: str, request: EmailRequest, now: datetime) -> dict[str, Any]:
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
        body = {key: value for key, value in body.items() if value not in (None, [], {})}
        # Content outlives the status record's retention only as long as the email can still be sent.
        expires_at = clock.epoch(clock.after(request.send_at or now, self.settings.retention_days * 86400))
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

    def _check_uploads(self, request: EmailRequest) -> None:
        total = sum(attachment.decoded_size() for attachment in request.attachments)
        for index, attachment in enumerate(request.attachments):
            if attachment.s3_key is None:
                continue
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
        return view(record, envelope_of(self.store.get(email_id, CONTENT, consistent=False)))

    def list(self, status: str, limit: int = 20, cursor: str | None = None) -> EmailList:
        try:
            wanted = Status(status)
        except ValueError:
            raise InvalidParameter.on("status", f"must be one of {', '.join(s.value for s in Status)}") from None
        if not 1 <= limit <= 100:
            raise InvalidParameter.on("limit", "must be between 1 and 100")
        before = decode_cursor(cursor) if cursor else None
        records = self.store.list_by_status(wanted.value, limit + 1, before)
        page = records[:limit]
        next_cursor = encode_cursor(page[-1]["pk"]) if len(records) > limit else None
        return EmailList(emails=[view(record) for record in page], cursor=next_cursor)

    # --- cancel and retry -----------------------------------------------------------------------------

    def cancel(self, email_id: str, now: datetime | None = None) -> EmailView:
        now = now or clock.now()
        guard = Guard(statuses={Status.SCHEDULED, Status.QUEUED, Status.RETRYING})
        return self._change(email_id, guard, Change(Status.CANCELLED, reason="cancelled by request"), now, "cancelled")

    def retry(self, email_id: str, now: datetime | None = None) -> EmailView:
        now = now or clock.now()
        change = Change(
            Status.QUEUED,
            reason="retried by request",
            deadline=clock.after(now, self.settings.queued_grace_seconds),
            set={"attempts": 0},
            remove=("last_error", "claim_token"),
        )
        email = self._change(email_id, Guard(statuses={Status.FAILED}), change, now, "retried")
        self.queue.publish([Publication(email_id, email.priority)])
        return email

    def _change(self, email_id: str, guard: Guard, change: Change, now: datetime, action: str) -> EmailView:
        if not is_email_id(email_id):
            raise EmailNotFound(f"no email has the id {email_id}")
        try:
            return view(transition(self.store, email_id, guard, change, now))
        except ConditionFailed as failure:
            current = failure.current or self.store.get(email_id)
            if current is None:
                raise EmailNotFound(f"no email has the id {email_id}") from None
            allowed = [status.value for status in Status if status in guard.statuses]
            raise StatusConflict(email_id, current.get("status"), action, allowed) from None

    # --- suppression list ---------------------------------------------------------------------------------

    def list_suppressions(self, limit: int = 50, cursor: str | None = None) -> SuppressionPage:
        after = decode_cursor(cursor, "after") if cursor else None
        items, last = self.suppressions.page(limit, after)
        return SuppressionPage(
            suppressions=[Suppression(**{k: item.get(k) for k in Suppression.model_fields}) for item in items],
            cursor=encode_cursor(last, "after") if last else None,
        )

    def lift_suppression(self, address: str) -> None:
        if not self.suppressions.remove(address.strip().lower()):
            raise EmailNotFound(f"{address} is not on the suppression list")

    # --- uploads --------------------------------------------------------------------------------------

    def upload_ticket(self, request: UploadRequest, now: datetime | None = None) -> UploadTicket:
        now = now or clock.now()
        from mailqueue.blobs import UPLOAD_URL_SECONDS  # noqa: PLC0415

        headers = {"Content-Type": request.content_type}
        if request.sha256 is None:
            key = f"{UPLOAD_PREFIX}{new_email_id()}/{request.filename}"
            checksum = None
        else:
            # Content-addressed: the same file gets the same key, and S3 checks the upload against the hash.
            key = f"{UPLOAD_PREFIX}sha256-{request.sha256}/{request.filename}"
            checksum = base64.b64encode(bytes.fromhex(request.sha256)).decode()
            headers["x-amz-checksum-sha256"] = checksum
        return UploadTicket(
            s3_key=key,
            upload_url=self.blobs.upload_url(key, request.content_type, checksum),
            headers=headers,
            expires_at=clock.iso(clock.after(now, UPLOAD_URL_SECONDS)),
            uploaded=request.sha256 is not None and self.blobs.size_of(key) == request.size,
        )


@dataclass
class _Prepared:
    email_id: str
    record: dict[str, Any]
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
    }


def view(record: dict[str, Any], envelope: dict[str, Any] | None = None) -> EmailView:
    """An email as the API shows it: the status record, whole when ``envelope`` (from its content) is given."""
    return EmailView(
        id=record["pk"],
        status=record["status"],
        priority=record.get("priority", "normal"),
        attempts=int(record.get("attempts", 0)),
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        to=record.get("to"),
        subject=envelope["subject"] if envelope else record.get("subject"),
        recipients=envelope["recipients"] if envelope else None,
        summary=envelope is None,
        send_at=record.get("send_at"),
        deadline=record.get("deadline"),
        ses_message_id=record.get("ses_message_id"),
        last_error=record.get("last_error"),
        bounce=record.get("bounce"),
        metadata=record.get("metadata"),
        template=record.get("template"),
        template_version=record.get("template_version"),
        history=[HistoryEntry(**entry) for entry in record.get("history", [])],
    )


def encode_cursor(position: str, name: str = "before") -> str:
    return base64.urlsafe_b64encode(json.dumps({name: position}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str = "before") -> str:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[name]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned") from None
    if not isinstance(value, str) or (name == "before" and not is_email_id(value)):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned")
    return value


def validation_failure(error: ValidationError) -> InvalidEmail:
    """A pydantic error as the API's error: one detail per field, named as the caller wrote it."""
    failure = failure_of(field_problems(error.errors(), EmailRequest), "the email")
    assert isinstance(failure, InvalidEmail)  # a body's problems are never a parameter's
    return failure


def error_body(error: InvalidEmail) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "details": [
            {"field": detail.field, "message": detail.message, "code": detail.code} for detail in error.details
        ],
    }
