"""The MIME message SES receives: one complete message per email, built with the standard library.

Every email is sent as SES v2 ``Raw`` content, so there is one path for all of them and the local
outbox holds byte for byte what SES got. The message is built with ``EmailMessage`` under the SMTP
policy: CRLF line endings, headers folded to 78 characters, non-ASCII subjects, display names and
custom header values as RFC 2047 encoded words (a subject or custom header that needs any is written
as encoded words whole, see ``_set_text``), non-ASCII attachment names as RFC 2231 parameters,
and bodies quoted-printable or base64 whenever they are not short-lined ASCII, so no line of the
message is ever longer than SMTP's 998 characters.

Bcc recipients are listed in the send call's destination, never in a header. An email given only
HTML gets a plain-text alternative made from it (:mod:`mailqueue.html_text`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.charset import Charset
from email.generator import BytesGenerator
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from io import BytesIO
from typing import Any

from mailqueue.blobs import BlobStore
from mailqueue.headertext import ENCODED_WORD_REFUSAL, header_text_problem
from mailqueue.html_text import html_to_text
from mailqueue.packing import unpack

# Lines longer than this break SMTP (RFC 5321 §4.5.3.1.6: 998 characters plus CRLF).
MAX_LINE = 998
# Header lines are folded at this length (RFC 5322 §2.1.1), and no encoded word is longer than 75 (RFC 2047 §2).
HEADER_LINE = 78
ENCODED_WORD_MAX = 75
_UTF8 = Charset("utf-8")
# Unfolding (RFC 5322 §2.2.3): each line break followed by whitespace is removed.
_UNFOLD = re.compile(r"\r\n(?=[ \t])")


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, keeping the class it makes for each header name.

    The standard one makes a new class each time a header is set or read, which was a third of the
    CPU time of rendering a message; the classes it makes for one name are all alike. Caller-given
    header names are many, so only the first few hundred names are kept.
    """

    _KEEP = 512

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = super().__getitem__(name)
            if len(self._classes) < self._KEEP:
                self._classes[key] = made
        return made


# The SMTP policy (CRLF, folding at 78), with the registry above. Address headers are written
# already folded (see ``_mailboxes``) and kept as written.
_HEADERS = _HeaderClasses()
_POLICY = policy.SMTP.clone(header_factory=_HEADERS, refold_source="none")


class RenderError(Exception):
    """The email's content cannot be made into a message: a fault of the email, not of the moment."""

    code = "RenderError"


@dataclass(frozen=True)
class Rendered:
    """One email, ready for SES: the raw message and who receives it."""

    raw: bytes
    from_address: str
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    message_id: str = ""

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


def load_content(item: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    """The content record's body: in the item itself (plain or compressed), or in S3 when too large for one."""
    if "s3_key" in item and "from" not in item:
        return blobs.get_content(str(item["s3_key"]))
    return unpack(item)


def render(
    email_id: str,
    content: dict[str, Any],
    now: datetime,
    attachment_bytes: Callable[[str], bytes],
) -> Rendered:
    """Build the message for ``content`` (a content record written at enqueue, see ``service``).

    ``attachment_bytes`` reads an attachment uploaded ahead of the email (``s3_key``). Raises
    :class:`RenderError` when the content cannot form a message.
    """
    try:
        return _render(email_id, content, now, attachment_bytes)
    except RenderError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as error:
        # ValueError covers the email package refusing a header value, and bad base64.
        raise RenderError(f"the email cannot be rendered: {type(error).__name__}: {error}") from None


def _render(
    email_id: str, content: dict[str, Any], now: datetime, attachment_bytes: Callable[[str], bytes]
) -> Rendered:
    sender = _address(content["from"])
    to = [_address(box) for box in content.get("to", [])]
    cc = [_address(box) for box in content.get("cc", [])]
    bcc = [_address(box) for box in content.get("bcc", [])]
    reply_to = [_address(box) for box in content.get("reply_to", [])]
    if not (to or cc or bcc):
        raise RenderError("the email has no recipient")

    message = EmailMessage(policy=_POLICY)
    # A stable Message-ID: if an attempt with an unknown outcome is sent again, receivers can
    # recognise the second copy as the same message.
    message_id = f"<{email_id}@{sender.domain}>"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message.set_raw("From", _mailboxes([sender]))
    if to:
        message.set_raw("To", _mailboxes(to))
    if cc:
        message.set_raw("Cc", _mailboxes(cc))
    if reply_to:
        message.set_raw("Reply-To", _mailboxes(reply_to))
    _set_text(message, "Subject", _header_text("the subject", content["subject"]))
    for name, value in (content.get("headers") or {}).items():
        _set_text(message, name, _header_text(f"the header {name}", value, allow_tab=True))

    text, html = content.get("text"), content.get("html")
    if text is None and html is not None:
        # HTML alone scores worse with spam filters: add the text alternative made from it.
        text = html_to_text(html) or None
    if text is not None:
        message.set_content(_lines(text), cte=_transfer_encoding(text))
        if html is not None:
            message.add_alternative(_lines(html), subtype="html", cte=_transfer_encoding(html))
    elif html is not None:
        message.set_content(_lines(html), subtype="html", cte=_transfer_encoding(html))
    else:
        raise RenderError("the email has neither a text nor an html body")

    for attachment in content.get("attachments", []):
        data = _attachment_data(attachment, attachment_bytes)
        maintype, _, subtype = str(attachment.get("content_type", "application/octet-stream")).partition("/")
        message.add_attachment(
            data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=_header_text("an attachment's filename", attachment["filename"]),
        )

    for part in message.walk():
        if part is not message:
            # The email package stamps every part it builds; only the top-level header means anything.
            del part["MIME-Version"]
        _check_decoded_headers(part)

    buffer = BytesIO()
    _Generator(buffer, mangle_from_=False, policy=_POLICY).flatten(message)
    raw = buffer.getvalue()
    longest = max(len(line) for line in raw.split(b"\r\n"))
    if longest > MAX_LINE:
        raise RenderError(f"the rendered message has a line of {longest} characters (SMTP allows {MAX_LINE})")
    return Rendered(
        raw=raw,
        from_address=sender.addr_spec,
        to=[box.addr_spec for box in to],
        cc=[box.addr_spec for box in cc],
        bcc=[box.addr_spec for box in bcc],
        tags=[{"name": str(tag["name"]), "value": str(tag["value"])} for tag in content.get("tags", [])],
        message_id=message_id,
    )


class _Generator(BytesGenerator):
    """``as_bytes``' generator, choosing each multipart boundary without compiling a regular expression.

    The standard generator makes sure a random boundary does not occur as a line of the parts it
    separates by compiling a new pattern for it (it is random, so the ``re`` cache never helps): that
    was about 15% of the CPU time of rendering the bench email. A plain substring test is stricter (a
    boundary absent from the text cannot make up a line of it) and costs next to nothing.
    """

    @classmethod
    def _make_boundary(cls, text: bytes | None = None) -> str:
        # The standard random boundary (typeshed does not declare this private classmethod).
        boundary = str(super()._make_boundary())  # type: ignore[misc]
        if text is None:
            return boundary
        candidate, counter = boundary, 0
        # The parts' text is bytes here (BytesGenerator); a boundary is ASCII.
        while b"--" + candidate.encode("ascii") in text:
            candidate, counter = f"{boundary}.{counter}", counter + 1
        return candidate


def _address(box: dict[str, str]) -> Address:
    local, _, domain = box["address"].rpartition("@")
    if not local or not domain:
        raise RenderError(f"{box['address']!r} is not an address")
    _header_text("an address", box["address"])
    return Address(display_name=_header_text("a display name", box.get("name", "")), username=local, domain=domain)


def _header_text(what: str, value: Any, allow_tab: bool = False) -> str:
    """``value`` if it can stand in a header as it is: no line break or control character, and no
    encoded-word syntax that a reader (or the email package itself) would decode into something else."""
    text = str(value)
    problem = header_text_problem(text, allow_tab=allow_tab)
    if problem:
        raise RenderError(f"{what} {problem}")
    return text


def _set_text(message: EmailMessage, name: str, text: str) -> None:
    """Set header ``name`` to ``text`` (checked by ``_header_text``) so that readers show exactly ``text``.

    Folded by the email package when its folding only puts line breaks before whitespace (unfolding then
    gives ``text`` back). Otherwise its folding can change what readers show: when it needs encoded words
    (non-ASCII text, or a word too long for a line), the space before an encoded word at a line break is
    lost or doubled, or two encoded words are written with nothing between them; after a header name of
    76 characters, the value starts on the next line and reads with a leading space (Python 3.11 and 3.13
    alike). Such a value is written as encoded words only, from its first character to its last, one a
    line: every space is inside a word, and the line breaks between words are dropped by every RFC 2047
    reader (§6.2). Structured headers (addresses, dates) are left to the package's own rules.
    """
    if not issubclass(_HEADERS[name], UnstructuredHeader):
        message[name] = text
        return
    if text.isascii():  # non-ASCII text always needs encoded words (and the package's folding of them is slow)
        header = _HEADERS(name, text)
        folded = header.fold(policy=_POLICY)
        # The value must start on the header's own line: Python's parser reads the break before it as a space.
        value_line = folded.startswith(f"{name}: ")
        if value_line and _UNFOLD.sub("", folded.removesuffix(_POLICY.linesep)) == f"{name}: {text}":
            message[name] = header  # the email package keeps a header object given for its own name
            return
    message.set_raw(name, "\n ".join(_encoded_words(len(name) + 2, text)))


def _encoded_words(taken: int, text: str) -> list[str]:
    """``text`` as UTF-8 encoded words, the first fitting after ``taken`` characters of its line, the others
    each on a line of its own (after one space): never a multi-byte character split between two words."""
    # A long header name leaves little room on the first line: it then runs past 78 characters (a SHOULD
    # of RFC 5322), far below SMTP's 998.
    first = max(min(HEADER_LINE - taken, ENCODED_WORD_MAX), ENCODED_WORD_MAX // 2)
    rest = min(HEADER_LINE - 1, ENCODED_WORD_MAX)
    words = _UTF8.header_encode_lines(text, itertools.chain([first], itertools.repeat(rest)))
    # None stands for a first line with no room for a word: the first word is then written on it all the same.
    return [word for word in words if word is not None]


def _mailboxes(boxes: list[Address]) -> str:
    """An address header's value, one mailbox a line, each display name whole.

    The email package folds a display name that does not fit on a line by breaking its quoting (a
    quoted name then reads as part of the address) or by splitting it into encoded words, between
    which readers disagree about spaces (Python's own parser keeps one, RFC 2047 drops it). So
    each name is written as one quoted string, or one encoded word when it is not ASCII, and the
    header is folded between mailboxes only; every line stays far below SMTP's limit (a name is at
    most 256 characters).
    """
    return ",\n ".join(formataddr((box.display_name, box.addr_spec), charset="utf-8") for box in boxes)


def _check_decoded_headers(part: EmailMessage) -> None:
    """No header the email package holds (decoded, as it writes it) carries a line break or a control
    character: whatever decoding happened on the way in, nothing it produced can shape the message."""
    # As stored, not parsed again: a header object is a str too, so only the type tells a value written raw.
    for name, value in part.raw_items():
        if type(value) is str:
            continue  # written raw (_mailboxes, _set_text), from values checked before
        if header_text_problem(str(value).replace("\t", " "), allow_tab=True) not in (None, ENCODED_WORD_REFUSAL):
            raise RenderError(f"the {name} header would carry a line break or a control character")


def _lines(body: str) -> str:
    # One line ending convention in, so the SMTP policy writes CRLF everywhere.
    return body.replace("\r\n", "\n").replace("\r", "\n")


def _transfer_encoding(body: str) -> str | None:
    """ASCII keeps the package's choice (7bit, or quoted-printable for long lines); anything else is
    transfer-encoded, since 8bit bodies need an 8BITMIME path all the way to the recipient."""
    if body.isascii():
        return None
    non_ascii = sum(1 for char in body if not char.isascii())
    # Mostly-Latin text stays readable as quoted-printable; other scripts are shorter in base64.
    return "quoted-printable" if non_ascii * 3 < len(body) else "base64"


def _attachment_data(attachment: dict[str, Any], attachment_bytes: Callable[[str], bytes]) -> bytes:
    if attachment.get("content") is not None:
        try:
            return base64.b64decode(attachment["content"], validate=True)
        except binascii.Error:
            raise RenderError(f"attachment {attachment.get('filename')!r} is not valid base64") from None
    if attachment.get("s3_key"):
        return attachment_bytes(str(attachment["s3_key"]))
    raise RenderError(f"attachment {attachment.get('filename')!r} has no content")
