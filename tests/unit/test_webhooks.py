"""Signed webhooks: the signature, the retry schedule and what the courier does with each answer."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from mailqueue.webhooks import (
    DEFAULT_SCHEDULE,
    EVENT_ID_HEADER,
    MAX_VISIBILITY_SECONDS,
    SIGNATURE_HEADER,
    Courier,
    DeliveryFailed,
    InvalidSignature,
    RetrySchedule,
    WebhookSettings,
    deliver,
    encode,
    in_sequence_order,
    sign,
    verify,
)
from moto import mock_aws

SECRET = "whsec-test"
BODY = b'{"event_id":"01J-3","email_id":"01J","sequence":3,"status":"delivered"}'
NOW = 1_790_000_000


# --- sign and verify ----------------------------------------------------------------------------------------


def test_the_signature_is_an_hmac_sha256_of_the_timestamp_a_dot_and_the_raw_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


def test_a_good_signature_verifies_and_gives_its_timestamp() -> None:
    assert verify(SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW + 10) == NOW


def test_a_tampered_body_is_rejected() -> None:
    header = sign(SECRET, BODY, NOW)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, header, BODY.replace(b"delivered", b"bounced"), now=NOW)


def test_another_secret_is_rejected() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify("another secret", sign(SECRET, BODY, NOW), BODY, now=NOW)


def test_a_signature_for_another_timestamp_is_rejected() -> None:
    # The timestamp is signed: moving it forward to get past the replay window breaks the signature.
    signature = sign(SECRET, BODY, NOW).split("v1=")[1]
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, f"t={NOW + 1000},v1={signature}", BODY, now=NOW + 1000)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_a_signature_more_than_five_minutes_from_now_is_a_replay(age: int) -> None:
    with pytest.raises(InvalidSignature, match="300s"):
        verify(SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW + age)


@pytest.mark.parametrize("age", [0, 300, -300])
def test_a_signature_within_five_minutes_is_accepted(age: int) -> None:
    assert verify(SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW + age) == NOW


def test_one_matching_v1_among_several_is_enough() -> None:
    # (a receiver may be sent one per secret while a secret is rotated)
    good = sign(SECRET, BODY, NOW).split("v1=")[1]
    assert verify(SECRET, f"t={NOW},v1={'0' * 64},v1={good}", BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"t={NOW}",
        "v1=" + "a" * 64,
        f"t=abc,v1={'a' * 64}",
        f"t=-{NOW},v1={'a' * 64}",
        f"t={NOW},v1=abc",
        f"t={NOW},v1={'A' * 64}",
        f"t={NOW},v1={'g' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t=１２３,v1={'a' * 64}",
        f"t={'9' * 40},v1={'a' * 64}",
    ],
)
def test_a_malformed_header_is_rejected(header: str | None) -> None:
    # as malformed, before any comparison
    with pytest.raises(InvalidSignature, match=r"malformed|needs t= and v1=|no signature"):
        verify(SECRET, header, BODY, now=NOW)


# --- one delivery -------------------------------------------------------------------------------------------


class Receiver:
    """A stand-in for the HTTP POST: records each request and answers with the next status (or raises)."""

    def __init__(self, *answers: int | BaseException) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        self.requests.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


DETAIL = {"event_id": "01J-3", "email_id": "01J", "sequence": 3, "status": "delivered", "note": "é"}


def test_a_delivery_posts_the_detail_signed_with_its_event_id() -> None:
    receiver = Receiver(204)
    outcome = deliver("https://hooks.example/x", DETAIL, SECRET, now=NOW, send=receiver)
    assert outcome.delivered
    [(url, body, headers)] = receiver.requests
    assert url == "https://hooks.example/x"
    assert json.loads(body) == DETAIL
    assert body == encode(DETAIL)
    assert headers["Content-Type"] == "application/json"
    assert headers[EVENT_ID_HEADER] == "01J-3"
    assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=NOW) == NOW


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (200, "delivered"),
        (202, "delivered"),
        (299, "delivered"),
        (301, "retry"),
        (400, "refused"),
        (401, "refused"),
        (404, "refused"),
        (410, "refused"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (TimeoutError("timed out"), "retry"),
        (ConnectionRefusedError("refused"), "retry"),
        (OSError("no route"), "retry"),
    ],
)
def test_what_each_answer_means(answer: int | BaseException, verdict: str) -> None:
    assert deliver("https://hooks.example/x", DETAIL, SECRET, now=NOW, send=Receiver(answer)).verdict == verdict


# --- the retry schedule ---------------------------------------------------------------------------------------


def test_the_default_schedule_retries_for_at_least_24_hours_and_not_much_more() -> None:
    schedule = DEFAULT_SCHEDULE
    assert schedule.least_span() >= 24 * 3600
    # one attempt fewer would give up before 24 hours: no attempt is spent beyond what is needed
    assert RetrySchedule(schedule.base_seconds, schedule.cap_seconds, schedule.attempts - 1).least_span() < 24 * 3600
    assert schedule.least_span() == 86_610  # 24 h 3 min 30 s, as docs/webhooks.md says


def test_the_delays_double_from_the_base_up_to_the_cap() -> None:
    delays = [DEFAULT_SCHEDULE.least_delay(n) for n in range(1, 11)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


@pytest.mark.parametrize("attempt", [1, 5, 8, 30])
def test_jitter_adds_up_to_a_quarter_and_never_shortens(attempt: int) -> None:
    least = DEFAULT_SCHEDULE.least_delay(attempt)
    assert DEFAULT_SCHEDULE.delay(attempt, rand=lambda: 0.0) == least
    highest = DEFAULT_SCHEDULE.delay(attempt, rand=lambda: 0.999999)
    assert least < highest <= least * 5 // 4 + 1
    assert highest <= MAX_VISIBILITY_SECONDS


def test_the_delivery_is_given_up_after_the_last_attempt_only() -> None:
    assert not DEFAULT_SCHEDULE.gives_up(30)
    assert DEFAULT_SCHEDULE.gives_up(31)


def test_a_schedule_sqs_cannot_keep_is_refused() -> None:
    with pytest.raises(ValueError, match="SQS"):
        RetrySchedule(base_seconds=30, cap_seconds=43_200, attempts=5)


def test_the_schedule_can_be_shortened_from_the_environment() -> None:
    settings = WebhookSettings.from_env(
        {"WEBHOOK_BACKOFF_BASE_SECONDS": "1", "WEBHOOK_BACKOFF_MAX_SECONDS": "2", "WEBHOOK_ATTEMPTS": "4"}
    )
    assert settings.schedule == RetrySchedule(1, 2, 4)
    assert WebhookSettings.from_env({}).schedule == DEFAULT_SCHEDULE


def test_webhook_urls_keep_their_case_and_must_be_http() -> None:
    settings = WebhookSettings.from_env({"WEBHOOK_URLS": "https://A.example/Hook, http://127.0.0.1:9/X"})
    assert settings.urls == ("https://A.example/Hook", "http://127.0.0.1:9/X")
    with pytest.raises(ValueError, match="http"):
        WebhookSettings.from_env({"WEBHOOK_URLS": "ftp://a.example/"})


# --- the courier: each message of the webhook queue ------------------------------------------------------


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


class Queues:
    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName="webhooks", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        self.dead = sqs.create_queue(QueueName="webhooks-dlq")["QueueUrl"]

    def put(self, body: dict[str, Any]) -> tuple[str, str, int]:
        """Send and receive a message: its body, receipt handle and receive count."""
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(body))
        [message] = self.sqs.receive_message(QueueUrl=self.url, AttributeNames=["All"])["Messages"]
        return message["Body"], message["ReceiptHandle"], int(message["Attributes"]["ApproximateReceiveCount"])

    def bodies(self, url: str, attributes: bool = False) -> list[Any]:
        messages = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
        ).get("Messages", [])
        if attributes:
            return [(json.loads(m["Body"]), m.get("MessageAttributes", {})) for m in messages]
        return [json.loads(m["Body"]) for m in messages]


def courier(queues: Queues, receiver: Receiver, *urls: str, schedule: RetrySchedule = DEFAULT_SCHEDULE) -> Courier:
    settings = WebhookSettings(
        urls=urls or ("https://a.example/hook",),
        queue_url=queues.url,
        dead_letter_queue_url=queues.dead,
        schedule=schedule,
    )
    return Courier(settings, queues.sqs, secret=lambda: SECRET, clock=lambda: NOW, send=receiver, rand=lambda: 0.0)


BUS_MESSAGE = {"version": "0", "source": "mailqueue", "detail-type": "Email Status Changed", "detail": DETAIL}


def test_a_delivered_event_is_done_with(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(200)
    courier(queues, receiver).handle(*queues.put(BUS_MESSAGE))
    assert len(receiver.requests) == 1
    assert queues.bodies(queues.dead) == []


def test_a_failed_delivery_comes_back_after_the_schedules_delay(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(500)
    body, receipt, count = queues.put(BUS_MESSAGE)
    with pytest.raises(DeliveryFailed, match="answered 500"):
        courier(queues, receiver).handle(body, receipt, count)
    # the message is hidden for the first delay (30 s): not visible to a receive right now
    assert sqs.receive_message(QueueUrl=queues.url, WaitTimeSeconds=0).get("Messages", []) == []
    assert queues.bodies(queues.dead) == []


def test_the_visibility_set_is_the_schedules_delay_for_that_attempt(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(503)
    body, receipt, _ = queues.put(BUS_MESSAGE)
    changes: list[dict[str, Any]] = []
    event = "before-parameter-build.sqs.ChangeMessageVisibility"
    sqs.meta.events.register(event, lambda params, **_: changes.append(params))
    with pytest.raises(DeliveryFailed):
        courier(queues, receiver).handle(body, receipt, 7)
    assert [change["VisibilityTimeout"] for change in changes] == [DEFAULT_SCHEDULE.least_delay(7)] == [1920]


def test_a_refusal_goes_to_the_dead_letter_queue_at_once(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(404)
    courier(queues, receiver).handle(*queues.put(BUS_MESSAGE))  # done with: not retried
    [(body, attributes)] = queues.bodies(queues.dead, attributes=True)
    assert body == {"url": "https://a.example/hook", "detail": DETAIL}
    assert "refused" in attributes["reason"]["StringValue"]
    assert "404" in attributes["reason"]["StringValue"]


def test_the_last_attempt_failed_goes_to_the_dead_letter_queue(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(500)
    body, receipt, _ = queues.put(BUS_MESSAGE)
    courier(queues, receiver).handle(body, receipt, DEFAULT_SCHEDULE.attempts)
    [(dead, attributes)] = queues.bodies(queues.dead, attributes=True)
    assert dead["detail"] == DETAIL
    assert attributes["attempts"]["StringValue"] == "31"


def test_the_attempt_before_the_last_is_still_retried(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(TimeoutError("slow"))
    body, receipt, _ = queues.put(BUS_MESSAGE)
    with pytest.raises(DeliveryFailed, match="timed out"):
        courier(queues, receiver).handle(body, receipt, DEFAULT_SCHEDULE.attempts - 1)
    assert queues.bodies(queues.dead) == []


def test_with_several_urls_each_gets_a_message_of_its_own(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(500)
    urls = ("https://a.example/hook", "https://b.example/Hook")
    courier(queues, receiver, *urls).handle(*queues.put(BUS_MESSAGE))
    # no delivery yet: the event was split into one message per URL, each retried on its own
    assert receiver.requests == []
    fanned = queues.bodies(queues.url)
    assert sorted(message["url"] for message in fanned) == sorted(urls)
    assert all(message["detail"] == DETAIL for message in fanned)


def test_a_failing_url_does_not_repeat_the_event_to_a_good_one(sqs: Any) -> None:
    queues = Queues(sqs)
    answers = {"https://good.example/": 200, "https://bad.example/": 500}
    sent: list[str] = []

    def receiver(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        sent.append(url)
        return answers[url]

    settings = WebhookSettings(urls=tuple(answers), queue_url=queues.url, dead_letter_queue_url=queues.dead)
    courier_ = Courier(settings, sqs, secret=lambda: SECRET, clock=lambda: NOW, send=receiver)
    courier_.handle(*queues.put(BUS_MESSAGE))
    for _ in range(3):  # three rounds of whatever is on the queue
        for message in sqs.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        ):
            try:
                courier_.handle(message["Body"], message["ReceiptHandle"], 1)
                sqs.delete_message(QueueUrl=queues.url, ReceiptHandle=message["ReceiptHandle"])
            except DeliveryFailed:
                sqs.change_message_visibility(
                    QueueUrl=queues.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
    assert sent.count("https://good.example/") == 1
    assert sent.count("https://bad.example/") == 3


def test_a_url_no_longer_configured_gets_nothing_more(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(200)
    courier(queues, receiver, "https://a.example/hook").handle(
        *queues.put({"url": "https://removed.example/", "detail": DETAIL})
    )
    assert receiver.requests == []


def test_an_unreadable_message_is_dead_lettered(sqs: Any) -> None:
    queues, receiver = Queues(sqs), Receiver(200)
    courier(queues, receiver).handle(*queues.put({"detail": "not an object"}))
    assert receiver.requests == []
    [(_, attributes)] = queues.bodies(queues.dead, attributes=True)
    assert "unreadable" in attributes["reason"]["StringValue"]


def test_a_batch_is_delivered_in_sequence_order() -> None:
    records = [{"body": json.dumps({"detail": {"sequence": n}})} for n in (4, 2, 3)]
    ordered = in_sequence_order(records, lambda record: record["body"])
    assert [json.loads(r["body"])["detail"]["sequence"] for r in ordered] == [2, 3, 4]
