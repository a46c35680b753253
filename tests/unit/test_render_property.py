"""Round trip: whatever the API accepts, the message SES gets says exactly that and nothing more.

For any email the request model accepts (generated over every field that reaches a header or a MIME
parameter: encoded-word syntax, line and paragraph separators, quotes, backslashes, semicolons,
very long words, IDN domains), the rendered message is parsed back twice, with the standard
library's strict policy and with mail-parser (its own decoding of headers, addresses and parts),
and must hold exactly the declared From, To, Cc, Reply-To, Subject, custom headers, bodies and
attachments: no Bcc header, no header or part that was not declared. The Subject and custom headers
are also read as an RFC 2047 reader does (``header_as_read``).

Runs under Python 3.11 and, through ``make test``, under 3.13, where the functions run.
"""

from __future__ import annotations

import base64
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import mailparser
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mailqueue.html_text import html_to_text
from mailqueue.models import EmailRequest, Mailbox
from mailqueue.render import render
from mailqueue.service import content_body
from pydantic import ValidationError

from tests.unit.test_render import header_as_read

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
EMAIL_ID = "01JP0000000000000000000000"
# The headers mailqueue writes itself; any other header must be one the caller declared.
OWN_HEADERS = {
    "date",
    "message-id",
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition"}

# Honest but awkward text: what a caller may well send, and what must come out exactly as sent.
AWKWARD = [
    '"',
    "\\",
    ";",
    ",",
    ":",
    "<",
    ">",
    "@",
    "(",
    ")",
    "'",
    "%0D%0A",
    "*=utf-8''x",
    "?=",
    "a=b?c",
    "\t",
    "Bcc: victim@example.net",
    "Content-Type: text/html",
    "é",
    "Ünïcödé",
    "日本語",
    "😀",
    " ",
    "  ",
    "x" * 120,
    "word" * 40,
]
# Hostile pieces: encoded-word syntax (RFC 2047), separators that str.splitlines() honours, NUL.
HOSTILE = [
    "=?utf-8?q?",
    "=?utf-8?q?a=0D=0ABcc:_victim@example.net?=",
    "=?utf-8?b?DQpCY2M6IHZAZXhhbXBsZS5uZXQ=?=",
    "=?",
    "\u2028",
    "\u2029",
    "\x85",
    "\x0b",
    "\x0c",
    "\x1c",
    "\r\n",
    "\n",
    "\x00",
]
SAFE_WORDS = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC.-_", min_size=1, max_size=20),
)


@st.composite
def phrase(draw: st.DrawFn, max_words: int = 8) -> str:
    """Mostly honest text; now and then one hostile piece in it (which the model must refuse)."""
    words = draw(st.lists(SAFE_WORDS, max_size=max_words))
    if draw(st.sampled_from(range(40))) == 39:
        words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(HOSTILE)))
    return "".join(words)


DOMAINS = st.sampled_from(
    ["example.org", "example.net", "münchen.example", "xn--mnchen-3ya.example", "mail.example.co.uk", "日本.example"]
)
LOCAL_PARTS = st.from_regex(r"[a-z0-9][a-z0-9+_'=?-]{0,20}", fullmatch=True)


@st.composite
def mailboxes(draw: st.DrawFn, domain: st.SearchStrategy[str] = DOMAINS) -> str:
    address = f"{draw(LOCAL_PARTS)}@{draw(domain)}"
    name = draw(st.one_of(st.just(""), phrase(4)))
    if not name:
        return address
    quoted = draw(st.booleans())
    if quoted:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'
    return f"{name} <{address}>"


HEADER_NAMES = st.one_of(
    st.sampled_from(["X-Campaign", "List-Unsubscribe", "X-Entity-Ref-ID", "X-Priority", "Keywords", "X-A;b"]),
    st.text(alphabet="ABCXYZabcxyz0123456789-_!#$%&'*+.^`|~;", min_size=1, max_size=40).map(lambda s: "X-" + s),
)
CONTENT_TYPES = st.sampled_from(
    ["application/pdf", "application/octet-stream", "text/plain", "text/html", "image/png"] * 4
    + ["multipart/mixed", "multipart/alternative", "message/rfc822", "message/partial"]
)
FILENAMES = st.one_of(
    phrase(5),
    st.tuples(
        phrase(3), st.sampled_from([".pdf", ".txt", ".tar.gz", ".csv", ".png", ".jpeg", "", ".exe", ".JS", ".bat "])
    ).map("".join),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {
        "from": draw(mailboxes(st.just("example.com"))),
        "to": draw(st.lists(mailboxes(), min_size=1, max_size=3)),
        "cc": draw(st.lists(mailboxes(), max_size=2)),
        "bcc": draw(st.lists(mailboxes(), max_size=2)),
        "reply_to": draw(st.lists(mailboxes(), max_size=2)),
        "subject": draw(phrase(12).filter(str.strip)),
        "headers": draw(st.dictionaries(HEADER_NAMES, phrase(6), max_size=3)),
        "attachments": [
            {"filename": filename, "content_type": content_type, "content": base64.b64encode(data).decode()}
            for filename, content_type, data in draw(
                st.lists(st.tuples(FILENAMES, CONTENT_TYPES, st.binary(max_size=300)), max_size=3)
            )
        ],
    }
    text, html = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    if text:
        request["text"] = draw(phrase(20))
    if html:
        request["html"] = "<p>" + draw(phrase(20)) + "</p>"
    return request


def accepted(request: dict[str, Any]) -> EmailRequest | None:
    try:
        email = EmailRequest.model_validate(request)
    except ValidationError as error:
        event(f"refused: {error.errors()[0]['loc'][:1]}")
        return None
    event("accepted")
    return email


def declared_boxes(values: list[str]) -> list[tuple[str, str]]:
    return [(box.name, box.address) for box in (Mailbox.parse(value) for value in values)]


def plain_text(email: EmailRequest) -> str | None:
    """The text part the message carries: the caller's, or the one made from HTML given alone."""
    if email.text is not None or email.html is None:
        return email.text
    return html_to_text(email.html) or None


def body_text(value: str) -> str:
    """A body as a reader gets it: one line-ending convention, ending in a line break."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n")
    return lines if lines.endswith("\n") else lines + "\n"


def check_stdlib(raw: bytes, email: EmailRequest) -> None:
    message = message_from_bytes(raw, policy=policy.strict)
    assert isinstance(message, EmailMessage)

    def boxes(name: str) -> list[tuple[str, str]]:
        header = message[name]
        return [] if header is None else [(box.display_name, box.addr_spec) for box in header.addresses]

    assert boxes("From") == declared_boxes([email.from_])
    assert boxes("To") == declared_boxes(email.to)
    assert boxes("Cc") == declared_boxes(email.cc)
    assert boxes("Reply-To") == declared_boxes(email.reply_to)
    assert message["Subject"] == email.subject
    assert header_as_read(raw, "Subject") == email.subject
    assert message["Bcc"] is None
    names = [name.lower() for name in message]
    assert len(names) == len(set(names)), names
    assert set(names) <= OWN_HEADERS | {name.lower() for name in email.headers}, names
    for name, value in email.headers.items():
        assert message[name] == value
        assert header_as_read(raw, name) == value

    parts = [part for part in message.walk() if not part.is_multipart()]
    text = plain_text(email)
    expected = (1 if text is not None else 0) + (1 if email.html is not None else 0) + len(email.attachments)
    assert len(parts) == expected
    for part in message.walk():
        if part is not message:
            assert {name.lower() for name in part} <= PART_HEADERS, part.keys()
    bodies = [part for part in parts if part.get_content_disposition() != "attachment"]
    texts = {part.get_content_subtype(): part.get_content().replace("\r\n", "\n") for part in bodies}
    wanted = {
        subtype: body_text(value) for subtype, value in (("plain", text), ("html", email.html)) if value is not None
    }
    assert texts == wanted
    attachments = [part for part in parts if part.get_content_disposition() == "attachment"]
    assert [part.get_filename() for part in attachments] == [item.filename for item in email.attachments]
    assert [part.get_content_type() for part in attachments] == [item.content_type for item in email.attachments]
    assert [part.get_payload(decode=True) for part in attachments] == [
        base64.b64decode(item.content or "") for item in email.attachments
    ]


def words(value: str) -> str:
    """A header's text without its whitespace.

    mail-parser leaves unfolding to its caller and decodes with the compat32 ``decode_header``,
    which drops the space between an encoded word and plain text, and it returns text in Unicode
    normal form C (U+F900 reads as U+8C48): its headers are compared without whitespace, in form C
    (the standard library's strict parse above is compared exactly).
    """
    return unicodedata.normalize("NFC", "".join(value.split()))


def check_mail_parser(raw: bytes, email: EmailRequest) -> None:
    parsed = mailparser.parse_from_bytes(raw)

    assert parsed.from_ == declared_boxes([email.from_])
    assert parsed.to == declared_boxes(email.to)
    assert parsed.cc == declared_boxes(email.cc)
    assert parsed.reply_to == declared_boxes(email.reply_to)
    assert words(parsed.subject) == words(email.subject)
    headers = {name.lower(): value for name, value in parsed.headers.items()}
    assert "bcc" not in headers
    assert set(headers) <= OWN_HEADERS | {name.lower() for name in email.headers}, set(headers)
    for name, value in email.headers.items():
        assert words(headers[name.lower()]) == words(value)
    assert [unicodedata.normalize("NFC", item["filename"]) for item in parsed.attachments] == [
        unicodedata.normalize("NFC", item.filename) for item in email.attachments
    ]
    assert [base64.b64decode(item["payload"]) for item in parsed.attachments] == [
        base64.b64decode(item.content or "") for item in email.attachments
    ]
    assert [text.replace("\r\n", "\n") for text in parsed.text_plain] == (
        [] if plain_text(email) is None else [body_text(plain_text(email) or "")]
    )


def round_trip(request: dict[str, Any]) -> None:
    email = accepted(request)
    if email is None:
        return
    raw = render(EMAIL_ID, content_body(email), NOW, lambda key: b"").raw
    check_stdlib(raw, email)
    check_mail_parser(raw, email)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
# Found by this property: the email package's folding lost the space before the last encoded word.
@example(
    {
        "from": "app@example.com",
        "to": ["alice@example.org"],
        "subject": '"0\xa000\xa00000000:00000000[AAAAAAAAAAAAAAA_ \xa1',
        "text": "Hi",
    }
)
def test_what_is_accepted_renders_as_declared_and_nothing_more(request: dict[str, Any]) -> None:
    round_trip(request)


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": 'Quotes " and \\ backslashes; semicolons, commas: <brackets> (comments)'},
        {"from": '"Shop \\"Deals\\"; Inc." <app@example.com>', "reply_to": ['"Help; desk" <help@example.com>']},
        {"to": ["Jürgen <jurgen@münchen.example>", "Ünïcode Ñame <u@日本.example>"]},
        {"subject": "word " * 199, "headers": {"X-Long": "y" * 998}},
        {"headers": {"X-Ref": 'a;b=c; d="e\\f"'}},
        {
            "attachments": [
                {"filename": "invoice; name=x (1).pdf", "content_type": "application/pdf", "content": "eA=="}
            ]
        },
        {"attachments": [{"filename": "données été 日本.pdf", "content_type": "application/pdf", "content": "eA=="}]},
        {"attachments": [{"filename": "a%0D%0Ab.pdf", "content_type": "application/pdf", "content": "eA=="}]},
    ],
    ids=["subject", "names", "idn", "long", "header", "filename", "non-ascii-filename", "percent-filename"],
)
def test_awkward_but_honest_values_are_accepted_and_kept(overrides: dict[str, Any]) -> None:
    request = {"from": "Shop <app@example.com>", "to": ["alice@example.org"], "subject": "Hello", "text": "Hi"}
    request.update(overrides)

    email = EmailRequest.model_validate(request)
    raw = render(EMAIL_ID, content_body(email), NOW, lambda key: b"").raw
    check_stdlib(raw, email)
    check_mail_parser(raw, email)
