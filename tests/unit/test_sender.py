"""The sender: SQS batches through its Lambda handler, against moto, with SES faults injected through botocore."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from mailqueue import aws, clock
from mailqueue.mailer import Mailer
from mailqueue.queue import Backlog, priority_of
from mailqueue.render import Rendered
from mailqueue.sender import (
    RESERVE_SECONDS,
    THROTTLE_RETRIES,
    YIELD_SECONDS,
    NoTimeLeft,
    Pacer,
    Result,
    backoff_seconds,
    invocation_rate,
    throttle_pause,
)
from mailqueue.ses_events import SesEvents
from mailqueue.settings import Settings, get_settings
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import EmailStore, SuppressionList
from mailqueue_dev.lambda_events import LambdaContext, sqs_event
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.conftest import an_email, load_handler

SES_URL = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"

# --- fixtures and helpers ----------------------------------------------------------------------------------


class Sender:
    """The sender handler, loaded against the test's stack, with its SES calls observable."""

    def __init__(self, stack: Any, context: LambdaContext) -> None:
        self.stack = stack
        self.context = context
        self.module = load_handler("sender")
        self.module.metrics.clear_metrics()
        # Pacing runs on a clock of its own that a wait moves forward: tests never wait on the wall clock.
        self.waits: list[float] = []
        self.moment = 1000.0
        self.module.sender.pacer.monotonic = lambda: self.moment
        self.module.sender.pacer.sleep = self._sleep
        # The high-priority queue's backlog is asked again when a second of that clock has passed.
        self.module.backlog.monotonic = lambda: self.moment
        # Log lines as Powertools formats them (JSON, with the correlation id), kept apart from stdout.
        self.log = io.StringIO()
        self._log_handler = logging.StreamHandler(self.log)
        self._log_handler.setFormatter(self.module.logger.registered_formatter)
        self.module.logger.addHandler(self._log_handler)
        # The level these tests read logs at, whatever an earlier run in this process left the shared
        # logger at (Powertools configures a service's logger once per process).
        self._log_level = self.module.logger.log_level
        self.module.logger.setLevel(logging.WARNING)
        self.ses = aws.client("sesv2")
        assert self.module.sender.mailer._client is self.ses
        self.requests: list[dict[str, Any]] = []
        self.ses.meta.events.register("before-parameter-build.sesv2.SendEmail", self._remember)
        # Every DynamoDB write the sender makes, by operation.
        self.writes: list[str] = []
        dynamodb = aws.client("dynamodb")
        assert self.module.sender.store is not None
        for operation in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"):
            dynamodb.meta.events.register(f"before-call.dynamodb.{operation}", self._count_write)

    def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.moment += seconds

    def close(self) -> None:
        self.module.logger.removeHandler(self._log_handler)
        self.module.logger.setLevel(self._log_level)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line.startswith("{")]

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(params)

    def _count_write(self, model: Any, **_: Any) -> None:
        self.writes.append(model.name)

    @property
    def calls(self) -> int:
        """SendEmail calls the sender made."""
        return len(self.requests)

    def invoke(self, messages: list[dict[str, Any]], queue: str = "SendQueue") -> dict[str, Any]:
        event = sqs_event(messages, self.stack.arns[queue])
        answer: dict[str, Any] = self.module.handler(event, self.context.invocation())
        return answer

    def answer_ses(self, code: str, message: str, status: int = 400, times: int | None = None) -> None:
        """SES answers SendEmail with this error (parsed as REST-JSON), every time or the first ``times``."""
        answered: list[int] = []

        def respond(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
            if times is not None and len(answered) >= times:
                return None
            answered.append(1)
            parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
            return AWSResponse(SES_URL, status, {"x-amzn-ErrorType": code}, None), parsed

        self.ses.meta.events.register("before-call.sesv2.SendEmail", respond)

    def break_connection(self, error: Exception) -> list[int]:
        """Every HTTP attempt at SendEmail raises ``error``; returns the list the attempts are counted in."""
        attempts: list[int] = []

        def fail(**_: Any) -> None:
            attempts.append(1)
            raise error

        # First, ahead of moto's own handler: the request never reaches the emulated SES.
        self.ses.meta.events.register_first("before-send.sesv2.SendEmail", fail)
        return attempts


@pytest.fixture
def sender(stack: Any, context: LambdaContext) -> Iterator[Sender]:
    handler = Sender(stack, context)
    yield handler
    handler.close()


def enqueue(api: Any, **overrides: Any) -> str:
    status, body = api.post("/emails", an_email(**overrides))
    assert status == 202, body
    email_id: str = body["id"]
    return email_id


def receive(stack: Any, queue: str = "SendQueue") -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=stack.names[queue], MaxNumberOfMessages=10).get("Messages", []):
        messages.extend(batch)
    return messages


def message(body: Any, message_id: str = "m-foreign") -> dict[str, Any]:
    """An SQS message as ReceiveMessage returns it, for bodies the queue never carried."""
    return {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": body}


def outbox() -> list[Any]:
    sent: list[Any] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return sent


def parse(raw: str | bytes) -> EmailMessage:
    parsed = message_from_bytes(raw.encode() if isinstance(raw, str) else raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(part: EmailMessage | None) -> str:
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def aws_store() -> EmailStore:
    return EmailStore(get_settings(), aws.client("dynamodb"))


def record(stack: Any, email_id: str) -> dict[str, Any]:
    """The status record as stored (a consistent read)."""
    item = aws_store().get(email_id)
    assert item is not None
    return item.to_item()


def history(email: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(entry["status"], entry.get("reason")) for entry in email["history"]]


def emitted_metrics(output: str) -> dict[str, float]:
    """Metric totals from the EMF blobs Powertools printed."""
    totals: dict[str, float] = {}
    for line in output.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                    value if isinstance(value, list) else [value]
                )
    return totals


def between(value: str, earliest: datetime, latest: datetime) -> bool:
    return earliest <= clock.parse_iso(value) <= latest + timedelta(milliseconds=1)


# --- a successful send -------------------------------------------------------------------------------------


def test_a_queued_email_is_sent_once_with_its_headers_and_attachments(api, stack, sender, capsys):
    upload = api.post("/attachments", {"filename": "terms.txt", "content_type": "text/plain", "size": 11})[1]
    boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=upload["s3_key"], Body=b"terms apply")
    pdf = b"%PDF-1.7 \x00\x01\x02 receipt"
    email_id = enqueue(
        api,
        to=["Alice <alice@example.org>"],
        cc=["carol@example.org"],
        bcc=["Auditor <audit@example.org>"],
        reply_to=["Support <help@example.com>"],
        html="<p>Thanks for your order.</p>",
        headers={"X-Order": "42"},
        tags=[{"name": "campaign", "value": "receipts"}],
        attachments=[
            {"filename": "receipt.pdf", "content_type": "application/pdf", "content": base64.b64encode(pdf).decode()},
            {"filename": "terms.txt", "content_type": "text/plain", "s3_key": upload["s3_key"]},
        ],
    )
    messages = receive(stack)

    answer = sender.invoke(messages)

    assert answer == {"batchItemFailures": []}
    assert len(outbox()) == 1
    sent = outbox()[0]
    # Moto adds the header recipients to the destination; Bcc can only come from the call.
    assert "audit@example.org" in sent.destinations
    raw = parse(sent.raw_data)
    assert raw["From"] == "Shop <app@example.com>"
    assert raw["To"] == "Alice <alice@example.org>"
    assert raw["Cc"] == "carol@example.org"
    assert raw["Reply-To"] == "Support <help@example.com>"
    assert raw["Subject"] == "Your receipt"
    assert raw["Message-ID"] == f"<{email_id}@example.com>"
    assert raw["X-Order"] == "42"
    assert raw["Bcc"] is None
    assert "audit@example.org" not in sent.raw_data
    assert text_of(raw.get_body(("plain",))) == "Thanks for your order.\n"
    assert text_of(raw.get_body(("html",))) == "<p>Thanks for your order.</p>\n"
    attachments = {part.get_filename(): part.get_content() for part in raw.iter_attachments()}
    assert attachments == {"receipt.pdf": pdf, "terms.txt": "terms apply"}
    assert max(len(line) for line in sent.raw_data.encode().split(b"\r\n")) <= 998

    (request,) = sender.requests
    assert sender.calls == 1
    assert request["FromEmailAddress"] == "app@example.com"
    assert request["Destination"] == {
        "ToAddresses": ["alice@example.org"],
        "CcAddresses": ["carol@example.org"],
        "BccAddresses": ["audit@example.org"],
    }
    assert request["EmailTags"] == [
        {"Name": "email_id", "Value": email_id},
        {"Name": "campaign", "Value": "receipts"},
    ]
    # The stack's own configuration set, which publishes SES's events for the email.
    assert request["ConfigurationSetName"] == sender.module.settings.configuration_set

    email = record(stack, email_id)
    assert email["status"] == "sent"
    assert email["ses_message_id"] == sent.id
    assert email["attempts"] == 1
    assert "deadline" not in email
    assert "claim_token" not in email
    assert email["expires_at"] > 0
    assert history(email) == [("queued", "accepted"), ("sending", "claimed by the sender"), ("sent", "accepted by SES")]
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == 1
    assert "SesLatency" in metrics


def test_non_ascii_subject_names_and_body_arrive_intact(api, stack, sender):
    enqueue(
        api,
        **{"from": "Boutique Zoë <app@example.com>"},
        to=["Åsa Öberg <asa@example.org>"],
        subject="Votre reçu — 注文確認",
        text="Merci ! Ça arrive bientôt. 🚚\n" + "long line " * 200,
    )

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    raw_data = outbox()[0].raw_data
    raw_data.encode("ascii")  # the wire form is ASCII: encoded words and transfer encodings
    raw = parse(raw_data)
    assert raw["Subject"] == "Votre reçu — 注文確認"
    assert raw["From"].addresses[0].display_name == "Boutique Zoë"
    assert raw["To"].addresses[0].display_name == "Åsa Öberg"
    assert text_of(raw.get_body(("plain",))) == "Merci ! Ça arrive bientôt. 🚚\n" + "long line " * 200 + "\n"
    assert max(len(line) for line in raw_data.encode().split(b"\r\n")) <= 998


def test_content_too_large_for_the_table_is_read_from_s3(api, stack, sender):
    text = "A long letter.\n" * 25_000
    email_id = enqueue(api, text=text)
    content = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": email_id}, "sk": {"S": "content"}}
    )["Item"]
    assert "s3_key" in content

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert text_of(parse(outbox()[0].raw_data).get_body(("plain",))) == text
    assert record(stack, email_id)["status"] == "sent"


def test_the_configuration_set_is_named_when_configured():
    mailer = Mailer(Settings(configuration_set="mailqueue-events"), client=None)
    rendered = Rendered(raw=b"raw", from_address="app@example.com", bcc=["secret@example.org"])

    params = mailer.request("01JP0000000000000000000000", rendered)

    assert params["ConfigurationSetName"] == "mailqueue-events"
    assert params["Destination"] == {"BccAddresses": ["secret@example.org"]}
    assert params["Content"] == {"Raw": {"Data": b"raw"}}


def test_high_priority_messages_are_sent_too(api, stack, sender):
    email_id = enqueue(api, priority="high")

    assert sender.invoke(receive(stack, "HighPrioritySendQueue"), "HighPrioritySendQueue") == {"batchItemFailures": []}

    assert record(stack, email_id)["status"] == "sent"


# --- at most one SES call per claim ------------------------------------------------------------------------


def test_a_sent_email_logs_no_line_at_info_only_its_metric(api, stack, sender, capsys):
    # Given the function's default level (LogLevel INFO): an email's progress is in its record and the metrics
    sender.module.logger.setLevel("INFO")
    try:
        email_id = enqueue(api)
        capsys.readouterr()

        assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    finally:
        sender.module.logger.setLevel("WARNING")

    assert record(stack, email_id)["status"] == "sent"
    assert sender.log_lines() == []
    output = capsys.readouterr().out
    assert emitted_metrics(output)["EmailsSent"] == 1
    assert [line for line in output.splitlines() if line.strip() and '"_aws"' not in line] == []


def test_a_duplicate_delivery_sends_once(api, stack, sender, capsys):
    email_id = enqueue(api)
    messages = receive(stack)

    assert sender.invoke(messages) == {"batchItemFailures": []}
    assert sender.invoke(messages) == {"batchItemFailures": []}

    assert len(outbox()) == 1
    assert sender.calls == 1
    email = record(stack, email_id)
    assert email["status"] == "sent"
    assert email["attempts"] == 1
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == 1
    assert metrics["SkippedDuplicates"] == 1


def test_two_concurrent_claims_one_wins(api, stack, sender):
    """A second delivery of the same message claims the email while the first one's claim is in flight."""
    email_id = enqueue(api)
    messages = receive(stack)
    dynamodb = aws.client("dynamodb")
    reports = []

    def race(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", {}).get("pk", {}).get("S") == email_id and not reports:
            reports.append("racing")
            reports.append(sender.module.sender.handle_message(messages[0]["Body"]))

    dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", race)
    first = sender.module.sender.handle_message(messages[0]["Body"])
    dynamodb.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", race)

    second = reports[1]
    assert second.result is Result.SENT
    assert first.result is Result.SKIPPED
    assert first.detail == "already sent"
    assert len(outbox()) == 1
    assert sender.calls == 1
    assert record(stack, email_id)["attempts"] == 1


def test_an_email_sending_under_a_live_claim_is_left_alone(api, stack, sender):
    email_id = enqueue(api)
    now = clock.now()
    transition(
        aws_store(),
        email_id,
        Guard(statuses={Status.QUEUED}),
        Change(Status.SENDING, deadline=clock.after(now, 180), attempts_delta=1, set={"claim_token": "theirs"}),
        now,
    )

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert sender.calls == 0
    email = record(stack, email_id)
    assert email["status"] == "sending"
    assert email["claim_token"] == "theirs"
    assert email["attempts"] == 1


def test_a_sender_whose_claim_was_taken_over_cannot_write_its_outcome(api, stack, sender):
    """While SES takes its call, the claim expires and another sender claims the email: the first one's
    outcome write, guarded by its own claim token, changes nothing."""
    email_id = enqueue(api)
    messages = receive(stack)
    store = aws_store()

    def taken_over(**_: Any) -> None:
        now = clock.now()
        released = Change(Status.QUEUED, deadline=clock.after(now, 60), remove=("claim_token",))
        transition(store, email_id, Guard(statuses={Status.SENDING}), released, now)
        theirs = Change(Status.SENDING, deadline=clock.after(now, 180), attempts_delta=1, set={"claim_token": "theirs"})
        transition(store, email_id, Guard(statuses={Status.QUEUED}), theirs, now)

    sender.ses.meta.events.register("before-call.sesv2.SendEmail", taken_over, unique_id="taken-over")
    try:
        report = sender.module.sender.handle_message(messages[0]["Body"])
    finally:
        sender.ses.meta.events.unregister("before-call.sesv2.SendEmail", unique_id="taken-over")

    assert report.result is Result.CLAIM_LOST
    email = record(stack, email_id)
    assert email["status"] == "sending"
    assert email["claim_token"] == "theirs"
    assert email["attempts"] == 2


def test_a_cancelled_email_is_not_sent(api, stack, sender, capsys):
    email_id = enqueue(api)
    assert api.delete(f"/emails/{email_id}")[0] == 200

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert sender.calls == 0
    assert record(stack, email_id)["status"] == "cancelled"
    assert emitted_metrics(capsys.readouterr().out)["SkippedDuplicates"] == 1


# --- the outcome of each SES error --------------------------------------------------------------------------


def test_a_throttled_send_is_tried_again_under_its_claim_and_costs_no_write(api, stack, sender, capsys):
    email_id = enqueue(api)
    sender.module.sender.draw = lambda: 0.5
    sender.answer_ses("TooManyRequestsException", "Maximum sending rate exceeded.", 429, times=2)
    writes_before = len(sender.writes)

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert sender.calls == 3  # throttled twice, then accepted
    assert len(outbox()) == 1
    email = record(stack, email_id)
    assert email["status"] == "sent"
    assert email["attempts"] == 1  # the claim's one attempt: the throttles spent none
    assert [status for status, _ in history(email)] == ["queued", "sending", "sent"]
    # The claim and the `sent` write, as for an email SES took at once: a throttle writes nothing.
    assert sender.writes[writes_before:] == ["UpdateItem", "UpdateItem"]
    # Each throttle paused the sends (full jitter under 1 s, then 2 s: 0.5 and 1.0 with this draw).
    assert sender.waits[:2] == [pytest.approx(0.5, abs=0.01), pytest.approx(1.0, abs=0.01)]
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["SendsThrottled"] == 2
    assert metrics["EmailsSent"] == 1


def test_a_throttle_is_retried_with_backoff_without_spending_an_attempt(api, stack, sender, capsys):
    """A throttle that outlasts its tries under the claim releases the claim, its attempt given back."""
    email_id = enqueue(api)
    sender.module.sender.draw = lambda: 0.5
    sender.answer_ses("TooManyRequestsException", "Maximum sending rate exceeded.", 429)
    before = clock.now()
    writes_before = len(sender.writes)

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    after = clock.now()
    assert sender.calls == 1 + THROTTLE_RETRIES
    assert sender.writes[writes_before:] == ["UpdateItem", "UpdateItem"]  # the claim, and its release
    assert outbox() == []
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    assert email["attempts"] == 0  # a throttle slows the queue; it never uses up an email's attempts
    assert "claim_token" not in email
    assert email["last_error"] == {"code": "TooManyRequestsException", "message": "Maximum sending rate exceeded."}
    settings = sender.module.settings
    assert between(email["deadline"], before, after + timedelta(seconds=settings.backoff_base_seconds))
    assert history(email)[-1][0] == "retrying"
    assert history(email)[-1][1].startswith("TooManyRequestsException: throttled by SES, attempt not counted, next in ")
    assert emitted_metrics(capsys.readouterr().out)["EmailsRetried"] == 1


def test_a_refused_connection_sent_nothing_and_is_retried(api, stack, sender):
    email_id = enqueue(api)
    attempts = sender.break_connection(ConnectTimeoutError(endpoint_url=SES_URL))

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert attempts == [1]
    assert outbox() == []
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    assert email["last_error"]["code"] == "ConnectTimeoutError"
    assert history(email)[-1][1].startswith("ConnectTimeoutError: attempt 1 of 5")


def test_a_rejected_email_fails_with_the_reason(api, stack, sender, capsys):
    email_id = enqueue(api)
    sender.answer_ses("MessageRejected", "Illegal address")

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    email = record(stack, email_id)
    assert email["status"] == "failed"
    assert email["last_error"] == {"code": "MessageRejected", "message": "Illegal address"}
    assert "deadline" not in email
    assert "claim_token" not in email
    assert history(email)[-1] == ("failed", "failed: MessageRejected")
    output = capsys.readouterr().out
    assert emitted_metrics(output)["EmailsFailed"] == 1
    assert emitted_metrics(output)["EmailsFailedByReason"] == 1
    assert '"reason":"MessageRejected"' in output


def test_a_read_timeout_waits_for_the_send_event(api, stack, sender, capsys):
    email_id = enqueue(api)
    attempts = sender.break_connection(ReadTimeoutError(endpoint_url=SES_URL))
    before = clock.now()

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    after = clock.now()
    assert attempts == [1]  # botocore never resent it: SES may have it
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    assert email["attempts"] == 1
    wait = sender.module.settings.unknown_outcome_seconds
    assert between(email["deadline"], before + timedelta(seconds=wait), after + timedelta(seconds=wait))
    assert history(email)[-1] == (
        "retrying",
        "outcome unknown (ReadTimeoutError): waiting for SES's Send event before sending again",
    )
    assert email["last_error"]["code"] == "ReadTimeoutError"
    assert emitted_metrics(capsys.readouterr().out)["UnknownOutcomes"] == 1


def test_an_email_settled_by_ses_s_event_first_is_reported_sent_without_an_error(api, stack, sender, capsys):
    # Given SES's Send event reaches the events function before the sender records the send
    email_id = enqueue(api)
    settings = get_settings()
    events = SesEvents(aws_store(), SuppressionList(settings, aws.client("dynamodb")))
    send_event = json.loads((Path(__file__).resolve().parents[2] / "events" / "events" / "send.json").read_text())
    send_event["detail"]["mail"]["tags"]["email_id"] = [email_id]

    def event_first(parsed: dict[str, Any], **_: Any) -> None:
        send_event["detail"]["mail"]["messageId"] = parsed["MessageId"]
        events.handle(send_event)

    sender.ses.meta.events.register("after-call.sesv2.SendEmail", event_first)

    # When the sender records the outcome
    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    # Then the email was sent once, and the sender counts it sent with no error logged
    assert len(outbox()) == 1
    email = record(stack, email_id)
    assert email["status"] == "sent"
    assert [entry["status"] for entry in email["history"]] == ["queued", "sending", "sent"]
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == 1
    assert "ClaimsLost" not in metrics
    assert [line for line in sender.log_lines() if line["level"] == "ERROR"] == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccountSendingPausedException", "Sending is paused for this account."),
        ("SendingPausedException", "Sending is paused for this account."),
        ("MailFromDomainNotVerifiedException", "The MAIL FROM domain is not verified."),
        (
            "MessageRejected",
            "Email address is not verified. The following identities failed the check: app@example.com",
        ),
    ],
)
def test_an_account_error_holds_the_email_without_spending_an_attempt(api, stack, sender, capsys, code, message):
    email_id = enqueue(api)
    sender.answer_ses(code, message)
    before = clock.now()

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    after = clock.now()
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    assert email["attempts"] == 0
    wait = sender.module.settings.account_error_seconds
    assert between(email["deadline"], before + timedelta(seconds=wait), after + timedelta(seconds=wait))
    assert history(email)[-1] == (
        "retrying",
        f"held: {code} is an account or configuration error; attempt not counted",
    )
    output = capsys.readouterr().out
    assert emitted_metrics(output)["AccountErrors"] == 1
    errors = [line for line in sender.log_lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["correlation_id"] == email_id
    assert errors[0]["code"] == code


def test_the_last_attempt_ends_in_failed(api, stack, sender):
    email_id = enqueue(api)
    sender.answer_ses("InternalFailure", "SES had a problem.", 500)
    limit = sender.module.settings.max_attempts
    store = aws_store()

    for attempt in range(1, limit + 1):
        if attempt > 1:
            # What the requeue function does when the backoff has passed.
            now = clock.now()
            due = store.get(email_id)
            transition(
                store,
                email_id,
                Guard(statuses={Status.RETRYING}, deadline=due.deadline),
                Change(Status.QUEUED, reason="backoff passed", deadline=clock.after(now, 900)),
                now,
            )
        assert sender.invoke([message(json.dumps({"id": email_id}), f"m{attempt}")]) == {"batchItemFailures": []}

    assert sender.calls == limit
    email = record(stack, email_id)
    assert email["status"] == "failed"
    assert email["attempts"] == limit
    assert email["last_error"]["code"] == "InternalFailure"
    assert history(email)[-1] == (
        "failed",
        f"failed: InternalFailure at the last attempt ({limit} of {limit})",
    )
    assert len(email["history"]) <= 8


def test_a_queued_email_with_no_attempts_left_is_failed_unsent(api, stack, sender):
    email_id = enqueue(api)
    limit = sender.module.settings.max_attempts
    boto3.client("dynamodb").update_item(
        TableName=stack.names["EmailsTable"],
        Key={"pk": {"S": email_id}, "sk": {"S": "status"}},
        UpdateExpression="SET attempts = :limit",
        ExpressionAttributeValues={":limit": {"N": str(limit)}},
    )

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert sender.calls == 0
    email = record(stack, email_id)
    assert email["status"] == "failed"
    assert email["attempts"] == limit
    assert email["last_error"]["code"] == "AttemptsExhausted"
    assert history(email) == [("queued", "accepted"), ("failed", "attempts exhausted")]
    assert "claim_token" not in email


def test_an_attachment_gone_from_s3_fails_the_email(api, stack, sender):
    upload = api.post("/attachments", {"filename": "terms.txt", "size": 5})[1]
    s3 = boto3.client("s3")
    s3.put_object(Bucket=stack.names["AttachmentsBucket"], Key=upload["s3_key"], Body=b"terms")
    email_id = enqueue(api, attachments=[{"filename": "terms.txt", "s3_key": upload["s3_key"]}])
    s3.delete_object(Bucket=stack.names["AttachmentsBucket"], Key=upload["s3_key"])

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert sender.calls == 0
    email = record(stack, email_id)
    assert email["status"] == "failed"
    assert email["last_error"]["code"] == "RenderError"
    assert upload["s3_key"] in email["last_error"]["message"]


# --- one bad message does not sink the batch ----------------------------------------------------------------


def test_a_poisoned_message_is_the_only_failure_of_its_batch(api, stack, sender):
    ids = [enqueue(api, to=[f"user{index}@example.org"]) for index in range(3)]
    messages = receive(stack)
    poisoned = ids[1]
    poisoned_message = next(m for m in messages if json.loads(m["Body"])["id"] == poisoned)

    def storage_down(params: dict[str, Any], **_: Any) -> None:
        if params["Key"]["pk"]["S"] == poisoned:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "storage down"}}, "UpdateItem")

    aws.client("dynamodb").meta.events.register("before-parameter-build.dynamodb.UpdateItem", storage_down)
    foreign = [message("not json", "m-not-json"), message(json.dumps({"id": "01JP0000000000000000000000"}), "m-gone")]

    answer = sender.invoke([*messages, *foreign])

    assert answer == {"batchItemFailures": [{"itemIdentifier": poisoned_message["MessageId"]}]}
    assert sorted(request["EmailTags"][0]["Value"] for request in sender.requests) == sorted([ids[0], ids[2]])
    assert record(stack, ids[0])["status"] == "sent"
    assert record(stack, ids[2])["status"] == "sent"
    assert record(stack, poisoned)["status"] == "queued"


def test_a_content_read_failure_releases_the_claim(api, stack, sender):
    email_id = enqueue(api, text="x" * 400_000)
    messages = receive(stack)

    def s3_down(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "slow down"}}, "GetObject")

    aws.client("s3").meta.events.register("before-call.s3.GetObject", s3_down)

    answer = sender.invoke(messages)

    assert answer == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert sender.calls == 0
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    assert email["last_error"] == {"code": "ServiceUnavailable", "message": "the content could not be read"}
    assert "claim_token" not in email


def test_foreign_and_unknown_messages_are_acknowledged(stack, sender, capsys):
    answer = sender.invoke(
        [
            message("hello", "m1"),
            message(json.dumps({"id": 42}), "m2"),
            message(json.dumps({"id": "../etc"}), "m3"),
            message(json.dumps({"id": "01JP0000000000000000000000"}), "m4"),
        ]
    )

    assert answer == {"batchItemFailures": []}
    assert sender.calls == 0
    assert emitted_metrics(capsys.readouterr().out)["IgnoredMessages"] == 4


# --- pacing and time -----------------------------------------------------------------------------------------


def test_a_batch_is_paced_to_the_invocation_rate(api, stack, sender):
    for index in range(4):
        enqueue(api, to=[f"user{index}@example.org"])

    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    assert len(outbox()) == 4
    interval = 1 / invocation_rate(sender.module.settings)
    # The first send goes at once; each later one waits for its slot.
    assert sender.waits == [pytest.approx(interval)] * 3


def test_no_email_is_claimed_without_time_to_send_it(api, stack, sender):
    email_id = enqueue(api)
    messages = receive(stack)
    sender.context = LambdaContext(timeout_seconds=5)

    answer = sender.invoke(messages)

    assert answer == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert sender.calls == 0
    assert record(stack, email_id)["status"] == "queued"
    with pytest.raises(NoTimeLeft):
        sender.module.sender.send(email_id, time_left=lambda: 1.0)


def test_the_invocations_of_one_queue_share_the_whole_send_rate():
    settings = Settings(send_rate=14, sender_concurrency=4)

    # Four invocations of whichever queue has mail: together they use the whole rate, not half of it.
    assert invocation_rate(settings) * settings.sender_concurrency == 14


def test_a_throttle_halves_the_pace_which_grows_back_by_a_tenth_of_the_share_a_second():
    moment = [0.0]
    pacer = Pacer(rate=10.0, monotonic=lambda: moment[0], sleep=lambda seconds: None)

    assert pacer.pace() == 10.0  # it starts at its share
    pacer.throttled(pause=0.0)
    assert pacer.pace() == 5.0
    pacer.throttled(pause=0.0)
    assert pacer.pace() == 2.5
    moment[0] = 1.0
    assert pacer.pace() == pytest.approx(3.5)  # + rate / RECOVERY_SECONDS a second
    moment[0] = 100.0
    assert pacer.pace() == 10.0  # never above the share
    for _ in range(20):
        pacer.throttled(pause=0.0)
    assert pacer.pace() == pytest.approx(0.5)  # never below FLOOR of the share


def test_after_a_throttle_no_send_starts_before_the_pause_and_sends_are_spaced_at_the_slower_pace():
    moment = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        moment[0] += seconds

    pacer = Pacer(rate=4.0, monotonic=lambda: moment[0], sleep=sleep)
    pacer.wait()  # at 0: at once, the next slot at 0.25
    pacer.throttled(pause=1.0)  # at 0: the pace halves to 2 a second, nothing before 1.0
    assert pacer.delay() == 1.0
    pacer.wait()
    pacer.wait()

    assert slept == [pytest.approx(1.0), pytest.approx(1 / pacer.pace(1.0), rel=0.05)]


def test_a_send_that_starts_late_keeps_the_schedule_by_up_to_half_a_slot_and_idle_starts_a_new_one():
    moment = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        moment[0] += seconds

    pacer = Pacer(rate=2.0, monotonic=lambda: moment[0], sleep=sleep)
    pacer.wait()  # at 0: the next slot at 0.5
    moment[0] = 0.7  # the work overran the slot by 0.2
    pacer.wait()  # goes at once; the next slot at 1.0, as scheduled, not at 1.2
    assert pacer.delay() == pytest.approx(0.3)
    moment[0] = 1.3  # late by more than half a slot: half a slot of credit
    pacer.wait()
    assert pacer.delay() == pytest.approx(0.25)
    moment[0] = 10.0  # back from idle: a new schedule
    pacer.wait()
    assert pacer.delay() == pytest.approx(0.5)
    assert slept == []


def test_throttle_pauses_have_full_jitter_under_a_doubling_ceiling():
    assert [throttle_pause(retry, lambda: 0.999999) for retry in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert throttle_pause(3, lambda: 0.0) == 0.0
    assert throttle_pause(1, lambda: 0.5) == 1.0


class FakeSqs:
    def __init__(self, visible: int = 0, in_flight: int = 0, fails: bool = False) -> None:
        self.visible, self.in_flight, self.fails = visible, in_flight, fails
        self.calls: list[dict[str, Any]] = []

    def get_queue_attributes(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.fails:
            raise ConnectTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com")
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(self.visible),
                "ApproximateNumberOfMessagesNotVisible": str(self.in_flight),
            }
        }


def test_a_backlog_counts_waiting_and_in_flight_mail_and_asks_sqs_at_most_once_a_second():
    moment = [0.0]
    sqs = FakeSqs()
    backlog = Backlog(lambda: sqs, "https://sqs/q/high", monotonic=lambda: moment[0])

    assert backlog.has_mail() is False
    sqs.in_flight = 3  # a sender holds them: they are being sent now
    moment[0] = 0.9
    assert backlog.has_mail() is False  # the answer of 0.0, kept
    moment[0] = 1.0
    assert backlog.has_mail() is True
    sqs.in_flight, sqs.visible = 0, 2
    moment[0] = 2.5
    assert backlog.has_mail() is True
    assert len(sqs.calls) == 3
    assert sqs.calls[0]["QueueUrl"] == "https://sqs/q/high"


def test_a_backlog_asked_from_many_threads_at_once_answers_each_with_sqs_s_count():
    # The requeue function's threads ask at once: one asks SQS; the others must wait for that answer,
    # not take the count of a question still in flight (zero).
    asked, answer = threading.Event(), threading.Event()

    class SlowSqs(FakeSqs):
        def get_queue_attributes(self, **params: Any) -> dict[str, Any]:
            asked.set()
            answer.wait(5)
            return super().get_queue_attributes(**params)

    sqs = SlowSqs(visible=40)
    backlog = Backlog(lambda: sqs, "https://sqs/q/normal", ttl=10.0)
    counts: list[int] = []
    first = threading.Thread(target=lambda: counts.append(backlog.messages()))
    first.start()
    assert asked.wait(5)
    second = threading.Thread(target=lambda: counts.append(backlog.messages()))
    second.start()
    second.join(0.2)
    answer.set()
    first.join(5)
    second.join(5)

    assert counts == [40, 40]
    assert len(sqs.calls) == 1


def test_a_backlog_sqs_cannot_tell_is_taken_as_empty():
    sqs = FakeSqs(visible=5, fails=True)
    backlog = Backlog(lambda: sqs, "https://sqs/q/high", monotonic=lambda: 0.0)

    assert backlog.has_mail() is False
    assert backlog.failures == 1


def test_a_record_s_priority_is_its_queue_s():
    settings = Settings(
        send_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/mailqueue-SendQueue",
        high_priority_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/mailqueue-HighPrioritySendQueue",
    )

    assert priority_of("arn:aws:sqs:us-east-1:123456789012:mailqueue-HighPrioritySendQueue", settings) == "high"
    assert priority_of("arn:aws:sqs:us-east-1:123456789012:mailqueue-SendQueue", settings) == "normal"


# --- priority ----------------------------------------------------------------------------------------------


def test_normal_priority_mail_waits_unclaimed_while_the_high_priority_queue_has_mail(api, stack, sender):
    urgent = enqueue(api, priority="high", to=["urgent@example.org"])
    email_id = enqueue(api)
    messages = receive(stack)
    sender.context = LambdaContext(timeout_seconds=30.5)

    answer = sender.invoke(messages)

    # It waited a second at a time for as long as the invocation allowed, then left the message to SQS.
    assert answer == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert sender.calls == 0
    assert record(stack, email_id)["status"] == "queued"
    assert record(stack, email_id)["attempts"] == 0
    assert sender.waits == [YIELD_SECONDS] * (math.floor(30.5 - RESERVE_SECONDS - YIELD_SECONDS) + 1)
    assert sender.module.backlog.calls == len(sender.waits) + 1  # once a second, not once a message

    # The high-priority email goes first; once its message is done, the normal one follows.
    urgent_messages = receive(stack, "HighPrioritySendQueue")
    assert sender.invoke(urgent_messages, "HighPrioritySendQueue") == {"batchItemFailures": []}
    high_queue = stack.names["HighPrioritySendQueue"]
    boto3.client("sqs").delete_message(QueueUrl=high_queue, ReceiptHandle=urgent_messages[0]["ReceiptHandle"])
    sender.moment += YIELD_SECONDS

    assert sender.invoke(messages) == {"batchItemFailures": []}
    assert [record(stack, urgent)["status"], record(stack, email_id)["status"]] == ["sent", "sent"]
    assert [request["Destination"]["ToAddresses"] for request in sender.requests] == [
        ["urgent@example.org"],
        ["alice@example.org"],
    ]


def test_high_priority_mail_never_waits_for_the_other_queue(api, stack, sender):
    enqueue(api)  # normal mail waiting
    first = enqueue(api, priority="high", to=["a@example.org"])
    second = enqueue(api, priority="high", to=["b@example.org"])

    assert sender.invoke(receive(stack, "HighPrioritySendQueue"), "HighPrioritySendQueue") == {"batchItemFailures": []}

    assert [record(stack, first)["status"], record(stack, second)["status"]] == ["sent", "sent"]
    assert sender.module.backlog.calls == 0
    assert sender.waits == [pytest.approx(1 / invocation_rate(sender.module.settings))]


def test_pacer_spaces_sends():
    moments = iter([0.0, 0.0, 0.1, 0.1, 5.0])
    slept: list[float] = []
    pacer = Pacer(rate=2.0, monotonic=lambda: next(moments), sleep=slept.append)

    pacer.wait()  # at 0.0: goes at once, next slot 0.5
    assert pacer.delay() == 0.5  # asked at 0.0
    pacer.wait()  # at 0.1: waits 0.4, next slot 1.0
    assert pacer.delay() == 0.9  # asked at 0.1
    pacer.wait()  # at 5.0: the slot passed long ago

    assert slept == [pytest.approx(0.4)]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (20, 3600)])
def test_backoff_has_full_jitter_under_an_exponential_ceiling(attempt, ceiling):
    settings = Settings(backoff_base_seconds=30, backoff_max_seconds=3600)

    assert backoff_seconds(attempt, settings, lambda: 0.0) == 0
    assert backoff_seconds(attempt, settings, lambda: 0.5) == ceiling / 2
    assert backoff_seconds(attempt, settings, lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_the_sample_event_is_a_batch_the_handler_takes(stack, sender, capsys):
    """events/sender/sqs-batch.json (for sam local invoke) names emails this stack does not have."""
    event = json.loads((Path(__file__).parents[2] / "events" / "sender" / "sqs-batch.json").read_text())

    answer = sender.module.handler(event, sender.context.invocation())

    assert answer == {"batchItemFailures": []}
    assert emitted_metrics(capsys.readouterr().out)["IgnoredMessages"] == len(event["Records"])


def test_a_malformed_message_is_logged_as_malformed_with_its_body(stack, sender, capsys, caplog):
    # A bare id, as a hand-written `aws sqs send-message` would carry: not {"id": "<email id>"}
    answer = sender.invoke([message("01JP0000000000000000000000", "m-bare")])

    assert answer == {"batchItemFailures": []}  # retrying it cannot help
    assert sender.calls == 0
    malformed = [record for record in caplog.records if "malformed" in record.getMessage()]
    assert len(malformed) == 1, caplog.records
    assert malformed[0].levelname == "ERROR"
    assert (malformed[0].sqs_message_id, malformed[0].body) == ("m-bare", "01JP0000000000000000000000")
    assert emitted_metrics(capsys.readouterr().out)["MalformedMessages"] == 1
