"""The MIME message: parsed back with the email package, as a receiving mail server would."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
from mailqueue.render import _POLICY, MAX_LINE, RenderError, _check_decoded_headers, load_content, render

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
EMAIL_ID = "01JP0000000000000000000000"


def content(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "pk": EMAIL_ID,
        "sk": "content",
        "from": {"name": "Shop", "address": "app@example.com"},
        "to": [{"name": "", "address": "alice@example.org"}],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
    }
    record.update(overrides)
    return record


def no_uploads(key: str) -> bytes:
    raise AssertionError(f"no upload expected, asked for {key}")


def text_of(part: EmailMessage | None) -> str:
    """A text part's content as the reader sees it (a 7bit part keeps the wire's CRLF when parsed)."""
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_headers_of_a_plain_email() -> None:
    rendered = render(
        EMAIL_ID,
        content(
            cc=[{"name": "Carol", "address": "carol@example.org"}],
            reply_to=[{"name": "Support", "address": "help@example.com"}],
            headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsubscribe@example.com>"},
        ),
        NOW,
        no_uploads,
    )
    message = parse(rendered.raw)

    assert message["From"] == "Shop <app@example.com>"
    assert message["To"] == "alice@example.org"
    assert message["Cc"] == "Carol <carol@example.org>"
    assert message["Reply-To"] == "Support <help@example.com>"
    assert message["Subject"] == "Your receipt"
    assert message["Message-ID"] == f"<{EMAIL_ID}@example.com>"
    assert message["Date"].datetime == NOW
    assert message["MIME-Version"] == "1.0"
    assert message["X-Campaign"] == "spring"
    assert message["List-Unsubscribe"] == "<mailto:unsubscribe@example.com>"
    assert message.get_content_type() == "text/plain"
    assert text_of(message) == "Thanks for your order.\n"
    assert rendered.from_address == "app@example.com"
    assert rendered.message_id == f"<{EMAIL_ID}@example.com>"


def test_lines_end_in_crlf() -> None:
    raw = render(EMAIL_ID, content(text="one\ntwo\r\nthree\rfour"), NOW, no_uploads).raw

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert text_of(parse(raw)) == "one\ntwo\nthree\nfour\n"


def test_bcc_receives_but_appears_in_no_header() -> None:
    rendered = render(
        EMAIL_ID,
        content(
            to=[{"name": "", "address": "alice@example.org"}],
            cc=[{"name": "", "address": "carol@example.org"}],
            bcc=[{"name": "Hidden", "address": "secret@example.org"}],
        ),
        NOW,
        no_uploads,
    )

    assert rendered.to == ["alice@example.org"]
    assert rendered.cc == ["carol@example.org"]
    assert rendered.bcc == ["secret@example.org"]
    assert rendered.recipients == ["alice@example.org", "carol@example.org", "secret@example.org"]
    assert b"secret" not in rendered.raw
    assert parse(rendered.raw)["Bcc"] is None


def test_bcc_only_email_has_no_to_header() -> None:
    rendered = render(EMAIL_ID, content(to=[], bcc=[{"name": "", "address": "secret@example.org"}]), NOW, no_uploads)

    message = parse(rendered.raw)
    assert message["To"] is None
    assert rendered.recipients == ["secret@example.org"]


def test_non_ascii_subject_names_and_bodies() -> None:
    rendered = render(
        EMAIL_ID,
        content(
            **{"from": {"name": "Boutique Zoë, Paris", "address": "app@example.com"}},
            to=[{"name": "Åsa Öberg", "address": "asa@example.org"}],
            subject="Votre reçu — 日本語の件名",
            text="Merci beaucoup ! Ça arrive bientôt. 🚚",
            html="<p>Merci beaucoup&nbsp;! Ça arrive bientôt. 🚚</p>",
            headers={"X-Note": "déjà vu"},
        ),
        NOW,
        no_uploads,
    )

    # On the wire, the message is ASCII: encoded words in headers, transfer-encoded bodies.
    rendered.raw.decode("ascii")
    message = parse(rendered.raw)
    assert message["Subject"] == "Votre reçu — 日本語の件名"
    assert message["From"].addresses[0].display_name == "Boutique Zoë, Paris"
    assert message["From"].addresses[0].addr_spec == "app@example.com"
    assert message["To"].addresses[0].display_name == "Åsa Öberg"
    assert message["X-Note"] == "déjà vu"
    plain = message.get_body(("plain",))
    assert text_of(plain) == "Merci beaucoup ! Ça arrive bientôt. 🚚\n"
    assert text_of(message.get_body(("html",))) == "<p>Merci beaucoup&nbsp;! Ça arrive bientôt. 🚚</p>\n"
    assert plain is not None
    assert plain.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"


def test_text_and_html_are_alternatives() -> None:
    message = parse(render(EMAIL_ID, content(html="<p>Thanks</p>"), NOW, no_uploads).raw)

    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]


def test_a_multipart_boundary_never_occurs_in_the_parts_it_separates(monkeypatch: pytest.MonkeyPatch) -> None:
    # The boundary is random: fix it, then put exactly that boundary line in the text part.
    monkeypatch.setattr("random.randrange", lambda _: 42)
    boundary = "=" * 15 + "0000000000000000042=="
    text = f"Above\n--{boundary}\nBelow\n--{boundary}--\n"

    raw = render(EMAIL_ID, content(text=text, html="<p>Thanks</p>"), NOW, no_uploads).raw
    message = parse(raw)

    assert message.get_boundary() == f"{boundary}.0"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert text_of(parts[0]) == text


def test_html_only_gets_a_text_alternative_made_from_it() -> None:
    html = '<p>Thanks, <b>Bob</b>.</p><p><a href="https://example.com/orders/7">Your order</a></p>'

    message = parse(render(EMAIL_ID, content(text=None, html=html), NOW, no_uploads).raw)

    assert message.get_content_type() == "multipart/alternative"
    text, rich = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert text.get_content().replace("\r\n", "\n") == "Thanks, Bob.\n\nYour order (https://example.com/orders/7)\n"
    assert rich.get_content_type() == "text/html"
    assert rich.get_content().replace("\r\n", "\n") == html + "\n"


def test_the_callers_text_part_wins_over_one_made_from_html() -> None:
    message = parse(render(EMAIL_ID, content(text="My own words.", html="<p>Other words</p>"), NOW, no_uploads).raw)

    text, _ = message.iter_parts()
    assert text.get_content().replace("\r\n", "\n") == "My own words.\n"


def test_html_without_text_stays_html_only() -> None:
    message = parse(render(EMAIL_ID, content(text=None, html='<img src="cid:logo">'), NOW, no_uploads).raw)

    assert message.get_content_type() == "text/html"


def test_attachments_inline_and_uploaded() -> None:
    pdf = b"%PDF-1.7\x00\xff binary"
    uploaded = bytes(range(256)) * 40
    wanted: list[str] = []

    def read_upload(key: str) -> bytes:
        wanted.append(key)
        return uploaded

    rendered = render(
        EMAIL_ID,
        content(
            html="<p>See attached</p>",
            attachments=[
                {
                    "filename": "receipt.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                },
                {"filename": "données été.bin", "content_type": "application/octet-stream", "s3_key": "uploads/K/f"},
            ],
        ),
        NOW,
        read_upload,
    )
    message = parse(rendered.raw)

    assert wanted == ["uploads/K/f"]
    assert message.get_content_type() == "multipart/mixed"
    assert text_of(message.get_body(("plain",))) == "Thanks for your order.\n"
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["receipt.pdf", "données été.bin"]
    assert [part.get_content_type() for part in attachments] == ["application/pdf", "application/octet-stream"]
    assert attachments[0].get_content() == pdf
    assert attachments[1].get_content() == uploaded


def test_no_line_exceeds_smtp_limit() -> None:
    long_word = "x" * 5000
    rendered = render(
        EMAIL_ID,
        content(
            subject="s" * 998,
            text=f"{long_word}\n{'é' * 3000}",
            html=f"<p>{long_word}</p>",
            headers={"X-Long": "y" * 998, "X-Words": "word " * 190},
            attachments=[
                {
                    "filename": "a" * 200 + ".txt",
                    "content_type": "text/plain",
                    "content": base64.b64encode(b"x" * 5000).decode(),
                }
            ],
        ),
        NOW,
        no_uploads,
    )

    assert max(len(line) for line in rendered.raw.split(b"\r\n")) <= MAX_LINE
    message = parse(rendered.raw)
    assert message["Subject"] == "s" * 998
    assert message["X-Long"] == "y" * 998
    assert text_of(message.get_body(("plain",))) == f"{long_word}\n{'é' * 3000}\n"


# RFC 2047 §2 and §5: an encoded word is at most 75 characters and stands apart, whitespace on each side
# (or the start or end of the value).
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


def header_as_read(raw: bytes, name: str) -> str:
    """The value of header ``name`` in ``raw`` as an RFC 2047 reader shows it, after checking the encoded
    words stand apart and fit: unfolded (RFC 5322 §2.2.3: each line break before whitespace removed), its
    encoded words decoded, and the whitespace between two encoded words dropped (RFC 2047 §6.2)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    prefix = f"\r\n{name.lower()}:"
    lines = [line for line in ("\r\n" + unfolded).split("\r\n") if f"\r\n{line.lower()}".startswith(prefix)]
    assert len(lines) == 1, lines
    value = lines[0][len(name) + 1 :].lstrip(" \t")
    for word in ENCODED_WORD.finditer(value):
        start, end = word.span()
        assert len(word.group()) <= 75, word.group()
        assert start == 0 or value[start - 1] in " \t", value[max(0, start - 10) : end]
        assert end == len(value) or value[end] in " \t", value[start : end + 10]
    return str(make_header(decode_header(value)))


# Values that the email package folds wrong on its own, under Python 3.11 and 3.13.0 alike: next to an
# encoded word at a line break, the space before it is lost or doubled, or two encoded words are written
# with nothing between them.
FOLDED_AT_AN_ENCODED_WORD = [
    '"0\xa000\xa00000000:00000000[AAAAAAAAAAAAAAA_ \xa1',
    "A" * 56 + " \xa1",
    "A" * 55 + "  \xa1 and more words after it",
    "x" * 90 + " \xe9t\xe9 " + "y" * 90,
    "Caf\xe9 " * 30,
]


@pytest.mark.parametrize("value", FOLDED_AT_AN_ENCODED_WORD)
def test_a_folded_subject_or_header_reads_exactly_as_given(value: str) -> None:
    raw = render(
        EMAIL_ID, content(subject=value, headers={"X-Note": value, "X-Tab": value + "\t\xa1"}), NOW, no_uploads
    ).raw

    message = message_from_bytes(raw, policy=policy.strict)
    assert message["Subject"] == value
    assert message["X-Note"] == value
    assert message["X-Tab"] == value + "\t\xa1"
    assert header_as_read(raw, "Subject") == value
    assert header_as_read(raw, "X-Note") == value
    assert header_as_read(raw, "X-Tab") == value + "\t\xa1"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize("value", ["0", "Caf\xe9", "", "a b"])
def test_a_value_after_the_longest_header_name_reads_exactly_as_given(value: str) -> None:
    name = "X-" + "b" * 74  # the longest name the API takes: the email package folds its value onto a line of its own
    raw = render(EMAIL_ID, content(headers={name: value}), NOW, no_uploads).raw

    assert message_from_bytes(raw, policy=policy.strict)[name] == value
    assert header_as_read(raw, name) == value
    assert max(len(line) for line in raw.split(b"\r\n")) <= MAX_LINE


def test_ascii_words_are_folded_as_they_are() -> None:
    subject = "Your order of " + "many small things " * 10 + "has shipped"
    raw = render(EMAIL_ID, content(subject=subject), NOW, no_uploads).raw

    assert b"=?" not in raw
    assert header_as_read(raw, "Subject") == subject
    assert message_from_bytes(raw, policy=policy.strict)["Subject"] == subject


def test_tags_are_carried() -> None:
    rendered = render(EMAIL_ID, content(tags=[{"name": "campaign", "value": "spring"}]), NOW, no_uploads)

    assert rendered.tags == [{"name": "campaign", "value": "spring"}]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"to": []}, "no recipient"),
        ({"text": None}, "neither a text nor an html body"),
        ({"attachments": [{"filename": "x", "content": "not base64!"}]}, "not valid base64"),
        ({"attachments": [{"filename": "x"}]}, "has no content"),
        ({"headers": {"X-Bad": "one\r\ntwo"}}, "X-Bad must not contain line breaks"),
        ({"subject": None, "from": {"address": "nobody"}}, "not an address"),
    ],
)
def test_content_that_cannot_form_a_message(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(RenderError, match=problem):
        render(EMAIL_ID, content(**overrides), NOW, no_uploads)


class FakeBlobs:
    def __init__(self, stored: dict[str, dict[str, Any]]) -> None:
        self.stored = stored

    def get_content(self, key: str) -> dict[str, Any]:
        return self.stored[key]


def test_large_content_is_read_from_s3() -> None:
    body = content()
    item = {"pk": EMAIL_ID, "sk": "content", "s3_key": f"content/{EMAIL_ID}.json"}

    assert load_content(item, FakeBlobs({f"content/{EMAIL_ID}.json": body})) == body  # type: ignore[arg-type]
    assert load_content(body, FakeBlobs({})) == body  # type: ignore[arg-type]


def test_header_classes_are_reused_but_only_for_a_bounded_number_of_names():
    from mailqueue.render import _POLICY

    registry = _POLICY.header_factory
    for batch in range(3):
        headers = {f"X-Ref-{batch}-{index}": str(index) for index in range(20)}
        raw = parse(render(EMAIL_ID, content(headers=headers), NOW, no_uploads).raw)
        assert raw[f"X-Ref-{batch}-19"] == "19"

    assert registry["Subject"] is registry["subject"]
    assert len(registry._classes) <= registry._KEEP


# Stored content that slipped past validation (written before it refused encoded words, or by hand):
# the renderer refuses to write it rather than let the email package decode it into the message.
ATTACK_FILENAME = "=?utf-8?q?invoice.pdf=0D=0AContent-Type:_text=2Fhtml=0D=0A=0D=0A<h1>Pay_here<=2Fh1>?="
ATTACK_BCC = "=?utf-8?q?x=0D=0ABcc:_victim@example.net?="


@pytest.mark.parametrize(
    "overrides",
    [
        {"attachments": [{"filename": ATTACK_FILENAME, "content_type": "application/pdf", "content": "eA=="}]},
        {"subject": ATTACK_BCC},
        {"headers": {"X-Campaign": ATTACK_BCC}},
        {"to": [{"name": ATTACK_BCC, "address": "alice@example.org"}]},
        {"from": {"name": ATTACK_BCC, "address": "app@example.com"}},
        {"cc": [{"name": "", "address": "=?utf-8?q?a=0D=0ABcc:_v@example.net?=@example.org"}]},
        {"reply_to": [{"name": ATTACK_BCC, "address": "help@example.com"}]},
        {"subject": "Hello\u2028Bcc: victim@example.net"},
        {"headers": {"X-Campaign": "spring\x85Bcc: victim@example.net"}},
    ],
    ids=["filename", "subject", "header", "to-name", "from-name", "cc-address", "reply-to-name", "u2028", "u0085"],
)
def test_encoded_words_and_line_separators_in_stored_content_are_never_written(overrides: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match="must not contain"):
        render(EMAIL_ID, content(**overrides), NOW, no_uploads)


@pytest.mark.parametrize("value", ["=?utf-8?q?a=0Ab?=", "=?utf-8?q?Bcc=3A_x=0D=0A?="])
def test_a_header_that_decodes_into_a_line_break_is_refused(value: str) -> None:
    # Defence in depth behind the checks of each value: whatever header the email package holds, decoded as
    # it writes it, carries no line break. The stored text cannot get here (encoded words are refused first).
    part = EmailMessage(policy=_POLICY)
    part["X-Note"] = value

    with pytest.raises(RenderError, match="X-Note header would carry a line break"):
        _check_decoded_headers(part)
