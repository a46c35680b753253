"""The email as callers send it, validated; and the records the queue keeps for it.

The request models generate the API's OpenAPI schema, so their descriptions are user documentation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailqueue.headertext import ENCODED_WORD, ENCODED_WORD_REFUSAL, header_text_problem
from mailqueue.limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_BODY_CHARS,
    MAX_HEADERS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_RECIPIENTS,
    MAX_SUBJECT,
    MAX_TAGS,
)
from mailqueue.template_models import TEMPLATE_NAME_PATTERN

UPLOAD_PREFIX = "uploads/"

# Headers the queue writes itself; a caller setting them could forge or break the message.
CONTROLLED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Message-ID",
        "Date",
        "Sender",
        "Return-Path",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "MIME-Version",
        "Received",
        "DKIM-Signature",
        "In-Reply-To-Queue",
        "X-SES-CONFIGURATION-SET",
        "X-SES-MESSAGE-TAGS",
        "X-SES-SOURCE-ARN",
        "X-SES-FROM-ARN",
        "X-SES-RETURN-PATH-ARN",
    )
)
RESERVED_TAGS = frozenset({"email_id"})

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII but the colon (RFC 5322 ftext)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters no file name may hold on the systems attachments are saved to (Windows forbids all of
# these); readers also strip quotes and angle brackets around a name (Python's email package does).
_NOT_IN_FILENAMES = re.compile(r'[\x00-\x1f\x7f/\\"<>|:*?]')
# A body may hold any text but NUL (RFC 5322 forbids it) and lone surrogates (not UTF-8).
_BODY_UNSAFE = re.compile("[\x00\ud800-\udfff]")
# Attachment types that must hold MIME structure rather than a file's bytes.
_COMPOSITE_TYPES = ("multipart/", "message/")
# Amazon SES refuses messages with attachments of these extensions ("Unsupported attachment types"
# in the SES Developer Guide).
_SES_REFUSED = (
    "ade adp app asp bas bat cer chm cmd com cpl crt csh der exe fxp gadget hlp hta inf ins isp its js jse ksh "
    "lib lnk mad maf mag mam maq mar mas mat mau mav maw mda mdb mde mdt mdw mdz msc msh msh1 msh2 mshxml "
    "msh1xml msh2xml msi msp mst ops pcd pif plg prf prg reg scf scr sct shb shs sys ps1 ps1xml ps2 ps2xml "
    "psc1 psc2 tmp url vb vbe vbs vps vsmacros vss vst vsw vxd ws wsc wsf wsh xnk"
)
SES_REFUSED_EXTENSIONS = frozenset(_SES_REFUSED.split())


_MAILBOX = re.compile(r"^\s*(?P<name>.*?)\s*<(?P<address>[^<>]*)>\s*$", re.DOTALL)
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _depth(value: Any) -> int:
    """How many levels of maps and lists ``value`` nests (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _check_header_text(value: str, allow_tab: bool = False) -> str:
    problem = header_text_problem(value, allow_tab)
    if problem:
        raise ValueError(problem)
    return value


def _check_numbers(value: Any) -> None:
    """Numbers DynamoDB can store: at most 38 significant digits, magnitude within 1e-130..1e126."""
    if isinstance(value, dict):
        for item in value.values():
            _check_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(str(value))
        if len(number.as_tuple().digits) > 38 or (number != 0 and not -130 <= number.adjusted() <= 125):
            raise ValueError(f"{value} is outside the numbers DynamoDB can store (38 digits, 1e-130 to 1e125)")


class Mailbox(BaseModel):
    """One address, with its display name if it had one."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    name: str = ""
    address: str

    @classmethod
    def parse(cls, value: str) -> Mailbox:
        if "\r" in value or "\n" in value:
            raise ValueError("must not contain line breaks")
        problem = header_text_problem(value)
        if problem:
            raise ValueError(problem)
        match = _MAILBOX.match(value)
        name, address = (match.group("name"), match.group("address")) if match else ("", value)
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        # Readers show a display name with single spaces (Python 3.13's parser reads it so): keep it so.
        name = " ".join(name.split())
        problem = header_text_problem(name)
        if problem:
            raise ValueError(f"display name {problem}")
        if ENCODED_WORD.search(address):
            raise ValueError(f"address {ENCODED_WORD_REFUSAL}")
        if len(name) > 256:
            raise ValueError("display name is longer than 256 characters")
        # Imported on the first address checked: it compiles its grammar (a tenth of the API's init).
        from email_validator import EmailNotValidError, validate_email  # noqa: PLC0415

        try:
            checked = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as error:
            raise ValueError(f"{address.strip()!r} is not a valid address: {error}") from None
        # SES takes ASCII only: IDN domains in their punycode form.
        return cls(name=name, address=checked.ascii_email or checked.normalized)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1].lower()

    def key(self) -> str:
        """The normalized address, for comparisons and the suppression list."""
        return self.address.lower()


def _mailboxes(values: list[str]) -> list[Mailbox]:
    return [Mailbox.parse(value) for value in values]


HeaderValue = Annotated[str, StringConstraints(max_length=998)]


class Tag(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: str = Field(description="ASCII letters, digits, _ and -; at most 256 characters.")
    value: str = Field(description="ASCII letters, digits, _ and -; at most 256 characters.")

    @field_validator("name", "value")
    @classmethod
    def _ses_tag_rules(cls, value: str) -> str:
        if not _TAG.match(value):
            raise ValueError("use 1 to 256 ASCII letters, digits, '_' or '-'")
        return value


class Attachment(BaseModel):
    """A file, either inline (base64 ``content``) or uploaded first through ``POST /attachments`` (``s3_key``)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", description="A MIME type, e.g. application/pdf.")
    content: str | None = Field(default=None, description="The file, base64-encoded.")
    s3_key: str | None = Field(default=None, description="The key returned by POST /attachments.")

    @field_validator("filename")
    @classmethod
    def _plain_filename(cls, value: str) -> str:
        _check_header_text(value)
        if _NOT_IN_FILENAMES.search(value) or value.strip() in {"", ".", ".."}:
            raise ValueError(
                'must be a plain file name: no path separators, control characters or any of " < > | : * ?'
            )
        # Readers drop whitespace around a parameter's value: what is kept is what they show.
        name = value.strip()
        extension = name.rpartition(".")[2].lower() if "." in name else ""
        if extension in SES_REFUSED_EXTENSIONS:
            raise ValueError(f"SES refuses attachments named .{extension} (its list of unsupported attachment types)")
        return name

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        if not _CONTENT_TYPE.match(value):
            raise ValueError("must be a MIME type such as application/pdf")
        if value.lower().startswith(_COMPOSITE_TYPES):
            raise ValueError(
                f"{value.lower()} must hold MIME parts, not a file's bytes: send it as application/octet-stream"
            )
        return value.lower()

    @field_validator("s3_key")
    @classmethod
    def _upload_key(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(UPLOAD_PREFIX) or ".." in value or _CONTROL.search(value) or len(value) > 512
        ):
            raise ValueError(f"must be a key returned by POST /attachments (under {UPLOAD_PREFIX})")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.content is None) == (self.s3_key is None):
            raise ValueError("give exactly one of content (base64) or s3_key")
        if self.content is not None:
            try:
                base64.b64decode(self.content, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("content must be valid base64") from None
        return self

    def decoded_size(self) -> int:
        if self.content is None:
            return 0
        padding = self.content[-2:].count("=")
        return len(self.content) * 3 // 4 - padding


class EmailRequest(BaseModel):
    """One email to send."""

    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True)

    from_: str = Field(
        alias="from",
        description="The sender, optionally with a display name: 'Shop <app@example.com>'. "
        "It must belong to a configured sending identity.",
    )
    to: list[str] = Field(default_factory=list, description="Recipients.")
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(
        default_factory=list, description="Recipients who receive the email but appear in no header."
    )
    reply_to: list[str] = Field(default_factory=list, max_length=10)
    template: str | None = Field(
        default=None,
        pattern=TEMPLATE_NAME_PATTERN,
        description="A stored template (PUT /templates/{name}) to render subject, text and html from, with "
        "data; give it in place of subject, text and html.",
    )
    template_version: int | None = Field(
        default=None, ge=1, description="The template's version; the latest when left out."
    )
    data: dict[str, Any] | None = Field(default=None, description="The template's variables.")
    subject: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBJECT,
        validate_default=True,
        description="Required unless the email is rendered from a template.",
    )
    text: str | None = Field(default=None, max_length=MAX_BODY_CHARS, description="Plain-text body.")
    html: str | None = Field(default=None, max_length=MAX_BODY_CHARS, description="HTML body.")
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=MAX_HEADERS)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    priority: Literal["high", "normal"] = "normal"
    send_at: AwareDatetime | None = Field(
        default=None,
        description="ISO 8601 with an offset. In the past means now; more than 15 minutes ahead is scheduled.",
    )
    skip_suppressed: bool = Field(
        default=False,
        description="Drop recipients on the suppression list instead of refusing the email (when others remain).",
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=f"Your own reference data, returned on reads; at most {MAX_METADATA_BYTES} bytes as JSON, "
        f"nested at most {MAX_METADATA_DEPTH} levels deep.",
    )

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        Mailbox.parse(value)
        return value

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for index, value in enumerate(values):
            try:
                Mailbox.parse(value)
            except ValueError as error:
                raise ValueError(f"item {index}: {error}") from None
        return values

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        # Readers drop whitespace around a header's value: what is kept is what they show.
        subject = _check_header_text(value).strip()
        if not subject:
            raise ValueError("must not be blank")
        return subject

    @field_validator("text", "html")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        unsafe = _BODY_UNSAFE.search(value or "")
        if unsafe:
            raise ValueError(f"must not contain U+{ord(unsafe.group()):04X} (NUL or an unpaired surrogate)")
        return value

    @field_validator("subject", mode="wrap")
    @classmethod
    def _subject_unless_template(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> str | None:
        """A subject is required, unless a template gives it (it is then checked once rendered).

        Keep this the last ``subject`` validator of the class: it wraps those defined before it, so
        that none of them ever sees the None of a templated email.
        """
        if value is None:
            if info.data.get("template") is None:
                raise PydanticCustomError("missing", "Field required")
            return None
        checked: str = handler(value)
        return checked

    @field_validator("headers")
    @classmethod
    def _headers(cls, values: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, value in values.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in CONTROLLED_HEADERS:
                raise ValueError(f"{name} is set by mailqueue and cannot be given")
            if name.lower() in seen:
                raise ValueError(f"{name} is given twice")
            seen.add(name.lower())
            problem = header_text_problem(value, allow_tab=True)
            if problem:
                raise ValueError(f"the value of {name} {problem}")
        # Readers drop whitespace around a header's value: what is kept is what they show.
        return {name: value.strip() for name, value in values.items()}

    @field_validator("tags")
    @classmethod
    def _tags(cls, values: list[Tag]) -> list[Tag]:
        names = [tag.name for tag in values]
        if len(set(names)) != len(names):
            raise ValueError("tag names must be unique")
        if RESERVED_TAGS.intersection(names):
            raise ValueError("the tag email_id is set by mailqueue")
        return values

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        try:
            encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise ValueError("numbers must be finite") from None
        if len(encoded) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        if _depth(value) > MAX_METADATA_DEPTH:
            raise ValueError(f"must nest objects and arrays at most {MAX_METADATA_DEPTH} levels deep")
        _check_numbers(value)
        return value

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the years 1 to 9999 in UTC") from None

    @model_validator(mode="after")
    def _whole_email(self) -> EmailRequest:
        recipients = [*self.to, *self.cc, *self.bcc]
        if not recipients:
            raise ValueError("give at least one recipient in to, cc or bcc")
        if len(recipients) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together; got {len(recipients)}")
        keys = [Mailbox.parse(value).key() for value in recipients]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"each recipient may appear once; repeated: {', '.join(duplicates)}")
        if self.template is not None:
            given = [name for name in ("subject", "text", "html") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"give either a template (with data) or {', '.join(given)}, not both")
        elif self.template_version is not None or self.data is not None:
            raise ValueError("template_version and data go with a template")
        elif self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        inline_bytes = sum(attachment.decoded_size() for attachment in self.attachments)
        if inline_bytes > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"attachments total {inline_bytes} bytes; the limit is {MAX_ATTACHMENT_BYTES}")
        return self

    # Parsed views, for the service and the renderer.
    @property
    def sender(self) -> Mailbox:
        return Mailbox.parse(self.from_)

    def recipients(self) -> list[Mailbox]:
        return _mailboxes([*self.to, *self.cc, *self.bcc])


class BatchRequest(BaseModel):
    """Up to 100 emails; each is validated on its own, so one bad email does not sink the others."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    emails: list[dict[str, Any]] = Field(min_length=1, max_length=100, description="Each item is an EmailRequest.")


class UploadRequest(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = "application/octet-stream"
    size: int = Field(gt=0, le=MAX_ATTACHMENT_BYTES, description="The file's size in bytes.")
    sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="The file's SHA-256, in hex. The key is then made from it: the same file gets the same key, so "
        "an email sent again with the same Idempotency-Key is the same email, and a file already uploaded "
        "(uploaded: true) need not be uploaded again.",
    )

    @field_validator("filename")
    @classmethod
    def _plain_filename(cls, value: str) -> str:
        return Attachment._plain_filename(value)

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        return Attachment._mime_type(value)


# --- What the API answers -------------------------------------------------------------------------------


class SkippedRecipient(BaseModel):
    model_config = ConfigDict(defer_build=True)

    field: str = Field(description="to, cc or bcc.")
    address: str
    reason: str = Field(description="Why the address is on the suppression list.")


class EnqueueResult(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    status: str = Field(description="queued (sent as soon as the send rate allows) or scheduled (send_at later).")
    published: bool = Field(
        default=True,
        description="Whether the email's id reached the send queue. False when the queue could not be reached: the "
        "email is stored all the same, and the requeue function publishes it when its deadline passes (nothing "
        "to do but wait). True for a scheduled email: the requeue function publishes it at its send_at.",
    )
    message: str | None = Field(
        default=None,
        description="Anything worth knowing about the email that its status does not say: the suppressed "
        "recipients it goes without, or why it is not published yet. Null when there is nothing to add.",
    )
    skipped: list[SkippedRecipient] = Field(
        default_factory=list,
        description="With skip_suppressed: each recipient dropped because it is on the suppression list, and why.",
    )


class BatchItemResult(BaseModel):
    model_config = ConfigDict(defer_build=True)

    index: int
    id: str | None = None
    status: str | None = None
    published: bool | None = None
    skipped: list[SkippedRecipient] = Field(default_factory=list)
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    model_config = ConfigDict(defer_build=True)

    accepted: int
    rejected: int
    results: list[BatchItemResult]


class HistoryEntry(BaseModel):
    model_config = ConfigDict(defer_build=True)

    status: str
    at: str
    reason: str | None = None


class Recipients(BaseModel):
    model_config = ConfigDict(defer_build=True)

    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)


class EmailView(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    status: str
    priority: str
    attempts: int
    created_at: str
    updated_at: str
    to: str | None = Field(
        default=None, description="The first recipient: a summary. `recipients` has them all (GET /emails/{id})."
    )
    subject: str | None = Field(
        default=None,
        description="The whole subject from GET /emails/{id}; in list pages (summary true) cut at 40 characters, "
        "ending in '…'.",
    )
    recipients: Recipients | None = Field(
        default=None,
        description="Every recipient, as given (bcc included). From GET /emails/{id}; null in list pages.",
    )
    summary: bool = Field(
        default=True,
        description="True when `to` and `subject` are the status record's summary (list pages, or after the "
        "email's content expired); false when the email is shown whole.",
    )
    send_at: str | None = None
    deadline: str | None = None
    ses_message_id: str | None = None
    last_error: dict[str, str] | None = None
    bounce: dict[str, Any] | None = Field(
        default=None, description="For a bounced email: SES's bounce type and, per recipient, status and diagnostic."
    )
    metadata: dict[str, Any] | None = None
    tags: list[Tag] | None = Field(
        default=None, description="The email's tags, as given (GET /emails/{id}; not in list pages)."
    )
    template: str | None = Field(default=None, description="The template the email was rendered from, if any.")
    template_version: int | None = Field(default=None, description="That template's version.")
    history: list[HistoryEntry] = Field(default_factory=list)


class EmailList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    emails: list[EmailView]
    cursor: str | None = Field(default=None, description="Pass it back to get the next page; absent on the last.")


class UploadTicket(BaseModel):
    model_config = ConfigDict(defer_build=True)

    s3_key: str = Field(description="Name it in an email's attachments; only the caller that asked for it can.")
    upload_url: str
    method: str = "POST"
    fields: dict[str, str] = Field(
        description="Send a multipart/form-data POST to upload_url with these form fields, as they are, and the "
        "file last, in a field named file. S3 refuses a file of another size than declared (EntityTooLarge, "
        "EntityTooSmall), and any upload after expires_at."
    )
    expires_at: str
    uploaded: bool = Field(
        default=False,
        description="True when this file (the same sha256 and size) is already uploaded under s3_key: the email may "
        "name it without uploading it again.",
    )


class Suppression(BaseModel):
    model_config = ConfigDict(defer_build=True)

    address: str
    reason: str
    added_at: str
    email_id: str | None = Field(default=None, description="The email whose bounce or complaint added it.")


class SuppressionPage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    suppressions: list[Suppression]
    cursor: str | None = None


class DeadLetterCount(BaseModel):
    model_config = ConfigDict(defer_build=True)

    queue: str = Field(description="send, high_priority (the two send queues' dead-letter queues) or events.")
    messages: int = Field(description="Messages in it (SQS's approximate count), those being read included.")


class HeldEmail(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    to: str | None = Field(default=None, description="The first recipient.")
    code: str | None = Field(default=None, description="SES's error that holds it (its last_error's code).")


class HeldEmails(BaseModel):
    model_config = ConfigDict(defer_build=True)

    count: int = Field(description="Held emails among those read.")
    read: int = Field(description="The retrying emails read to find them, newest first.")
    capped: bool = Field(description="True when more retrying emails exist than were read: count is a lower bound.")
    by_code: dict[str, int] = Field(description="The held emails by SES's error code, most first.")
    emails: list[HeldEmail] = Field(description="Each held email found, newest first.")


class QueueStats(BaseModel):
    model_config = ConfigDict(defer_build=True)

    at: str = Field(description="When these figures were read (ISO 8601, UTC).")
    send_rate: float = Field(description="The stack's SendRate: the most emails a second the sender sends.")
    dead_letters: int = Field(description="Messages in all the dead-letter queues.")
    dead_letter_queues: list[DeadLetterCount]
    held: HeldEmails = Field(
        description="Emails held by an error of the SES account or configuration (sending paused, an identity not "
        "verified): retrying without spending attempts until the account is fixed."
    )


ERROR_CODES = (
    "bad_request, invalid_parameter, not_found, method_not_allowed, status_conflict, idempotency_conflict, "
    "payload_too_large, unsupported_media_type, invalid_field, unknown_field, missing_field, suppressed_recipient, "
    "unavailable"
)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(defer_build=True)

    field: str = Field(description="The field or parameter, as the request wrote it: attachments[0].filename.")
    message: str = Field(description="What is wrong with it, and a hint where one helps (did you mean reply_to?).")
    code: str = Field(default="invalid_field", description=f"The kind of mistake: one of {ERROR_CODES}.")


class ErrorBody(BaseModel):
    model_config = ConfigDict(defer_build=True)

    code: str = Field(description=f"The kind of mistake (that of the first detail, if any): one of {ERROR_CODES}.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    error: ErrorBody


def summary_subject(subject: str, limit: int = 40) -> str:
    return subject if len(subject) <= limit else subject[: limit - 1] + "…"
