"""Enqueue under storage faults: a 503 never hides an email that will be sent, one idempotency key never
makes two emails, and the API answers inside API Gateway's 30 seconds whatever AWS does."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from mailqueue import budget
from mailqueue_dev.lambda_events import http_api_event
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.conftest import an_email
from tests.unit.test_api import assert_error_shape, receive_all
from tests.unit.test_sender import Sender

DYNAMODB_URL = "https://dynamodb.us-east-1.amazonaws.com"


def statuses(stack: Any) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=stack.names["EmailsTable"])["Items"]
    return [item for item in items if item["sk"]["S"] == "status"]


def content_of(stack: Any, email_id: str) -> dict[str, Any]:
    key = {"pk": {"S": email_id}, "sk": {"S": "content"}}
    item: dict[str, Any] = boto3.client("dynamodb").get_item(TableName=stack.names["EmailsTable"], Key=key)["Item"]
    return item


def ses_sends() -> int:
    return len(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def lose_answers(api: Any, writes: str = "status") -> list[str]:
    """Every BatchWriteItem of ``writes`` records lands in the table, but its answer is lost."""
    lost: list[str] = []
    writing: list[str] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        items = next(iter(params["RequestItems"].values()))
        writing[:] = [items[0]["PutRequest"]["Item"]["sk"]["S"], items[0]["PutRequest"]["Item"]["pk"]["S"]]

    def answer_lost(**_: Any) -> None:
        if writing and writing[0] == writes:
            lost.append(writing[1])
            raise ReadTimeoutError(endpoint_url=DYNAMODB_URL)

    events = api.module.mailqueue.store._client.meta.events
    events.register("before-parameter-build.dynamodb.BatchWriteItem", remember)
    events.register("after-call.dynamodb.BatchWriteItem", answer_lost)
    return lost


# --- a write that landed, its answer lost --------------------------------------------------------------------


def test_a_status_write_that_landed_with_its_answer_lost_is_accepted_once(api, stack):
    lost = lose_answers(api)

    status, body = api.post("/emails", an_email())

    # The write is settled before the answer: it landed, so the email is accepted, and only once.
    assert lost, "the fault never fired"
    assert status == 202, body
    assert [item["pk"]["S"] for item in statuses(stack)] == [body["id"]]
    assert receive_all(stack) == [{"id": body["id"]}]


def test_a_cancel_sent_again_after_its_answer_was_lost_succeeds(api, stack):
    _, body = api.post("/emails", an_email())
    lost: list[int] = []

    def answer_lost(**_: Any) -> None:
        if not lost:
            lost.append(1)
            raise ReadTimeoutError(endpoint_url=DYNAMODB_URL)

    events = api.module.mailqueue.store._client.meta.events
    events.register("after-call.dynamodb.UpdateItem", answer_lost)

    first, _ = api.delete(f"/emails/{body['id']}")
    status, email = api.delete(f"/emails/{body['id']}")

    # The first cancel landed, its answer lost; the caller, told to try again, is told it is done.
    assert lost, "the fault never fired"
    assert first == 503
    assert status == 200, email
    assert email["status"] == "cancelled"


def test_a_batch_settles_each_write_whose_answer_was_lost(api, stack):
    lost = lose_answers(api)

    status, body = api.post("/emails/batch", {"emails": [an_email(), an_email(to=["bob@example.org"])]})

    assert lost
    assert status == 202
    assert body["accepted"] == 2
    assert sorted(item["pk"]["S"] for item in statuses(stack)) == sorted(result["id"] for result in body["results"])


def test_a_503_means_the_email_is_never_sent_even_if_its_write_lands_later(api, stack, context):
    # Given a status write that does not reach DynamoDB while the API settles it (it is still on its way)
    held: list[dict[str, Any]] = []

    def delayed(params: dict[str, Any], **_: Any) -> None:
        items = next(iter(params["RequestItems"].values()))
        if items[0]["PutRequest"]["Item"]["sk"]["S"] == "status":
            held.append(params)
            raise ReadTimeoutError(endpoint_url=DYNAMODB_URL)

    client = api.module.mailqueue.store._client
    client.meta.events.register_first("before-parameter-build.dynamodb.BatchWriteItem", delayed)

    status, body = api.post("/emails", an_email())

    # When it lands after the API answered 503
    assert status == 503, body
    assert assert_error_shape(body, "unavailable")["message"].startswith("the email could not be stored")
    client.meta.events.unregister("before-parameter-build.dynamodb.BatchWriteItem", delayed)
    boto3.client("dynamodb").batch_write_item(RequestItems=held[0]["RequestItems"])
    email_id = statuses(stack)[0]["pk"]["S"]
    assert "withdrawn_at" in content_of(stack, email_id)

    # Then the sender fails it unsent, with the reason
    sender = Sender(stack, context)
    try:
        sender.module.sender.send(email_id)
    finally:
        sender.close()
    assert ses_sends() == 0
    status, email = api.get(f"/emails/{email_id}")
    assert email["status"] == "failed"
    assert email["last_error"]["code"] == "NotAccepted"


def test_when_storage_cannot_even_settle_the_write_the_503_names_the_email(api, stack):
    lose_answers(api)

    def unreachable(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=DYNAMODB_URL)

    api.module.mailqueue.store._client.meta.events.register("before-call.dynamodb.TransactWriteItems", unreachable)

    status, body = api.post("/emails", an_email())

    assert status == 503
    error = assert_error_shape(body, "unconfirmed")
    assert error["details"] == [{"field": "id", "message": statuses(stack)[0]["pk"]["S"], "code": "unconfirmed"}]


# --- idempotency keys ----------------------------------------------------------------------------------------


def fail_idempotency_calls(api: Any, operation: str) -> list[int]:
    """The idempotency table's ``operation`` calls fail (DynamoDB answers 500); returns the calls counted."""
    calls: list[int] = []
    table = api.module.settings.idempotency_table_name

    def fail(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == table:
            calls.append(1)
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "down"}}, operation)

    api.module.idempotent().store.client.meta.events.register(
        f"before-parameter-build.dynamodb.{operation}", fail, unique_id="failing-idempotency-table"
    )
    return calls


def heal_idempotency_calls(api: Any, operation: str) -> None:
    api.module.idempotent().store.client.meta.events.unregister(
        f"before-parameter-build.dynamodb.{operation}", unique_id="failing-idempotency-table"
    )


def expire_in_progress_records(stack: Any) -> None:
    """As when the in-progress record's expiry (the function's timeout) has passed."""
    dynamodb = boto3.client("dynamodb")
    table = stack.names["IdempotencyTable"]
    for item in dynamodb.scan(TableName=table)["Items"]:
        dynamodb.update_item(
            TableName=table,
            Key={"id": item["id"]},
            UpdateExpression="SET in_progress_expiration = :past",
            ExpressionAttributeValues={":past": {"N": "1"}},
        )


def test_a_lost_idempotency_record_is_a_503_and_a_repeat_finds_the_same_email(api, stack):
    # Given the email is stored and published, but its idempotency record cannot be completed
    calls = fail_idempotency_calls(api, "UpdateItem")
    first, body = api.post("/emails", an_email(), headers={"Idempotency-Key": "order-7"})
    assert calls
    assert first == 503, body
    assert assert_error_shape(body, "unavailable")["details"][0]["field"] == "Idempotency-Key"
    stored = [item["pk"]["S"] for item in statuses(stack)]
    assert len(stored) == 1

    # When the caller sends it again with the same key, once the in-progress record has expired
    heal_idempotency_calls(api, "UpdateItem")
    expire_in_progress_records(stack)
    again, replay = api.post("/emails", an_email(), headers={"Idempotency-Key": "order-7"})

    # Then it is the same email: one key never makes two
    assert again == 202, replay
    assert replay["id"] == stored[0]
    assert [item["pk"]["S"] for item in statuses(stack)] == stored


def test_a_batch_repeat_after_a_lost_idempotency_record_makes_no_second_email(api, stack):
    batch = {"emails": [an_email(), an_email(to=["bob@example.org"])]}
    fail_idempotency_calls(api, "UpdateItem")
    assert api.post("/emails/batch", batch, headers={"Idempotency-Key": "b-7"})[0] == 503
    heal_idempotency_calls(api, "UpdateItem")
    expire_in_progress_records(stack)

    status, body = api.post("/emails/batch", batch, headers={"Idempotency-Key": "b-7"})

    assert status == 202
    assert body["accepted"] == 2
    assert sorted(item["pk"]["S"] for item in statuses(stack)) == sorted(r["id"] for r in body["results"])


def test_an_idempotency_record_that_cannot_be_started_is_a_503_and_nothing_is_stored(api, stack):
    fail_idempotency_calls(api, "PutItem")

    status, body = api.post("/emails", an_email(), headers={"Idempotency-Key": "order-8"})

    assert status == 503, body
    assert_error_shape(body, "unavailable")
    assert statuses(stack) == []
    assert receive_all(stack) == []


def test_the_same_key_from_two_callers_makes_two_emails(api, stack, context):
    def post_as(user_arn: str) -> tuple[int, dict[str, Any]]:
        headers = {"content-type": "application/json", "idempotency-key": "shared"}
        event = http_api_event("POST", "/emails", json.dumps(an_email()), headers)
        event["requestContext"]["authorizer"] = {"iam": {"userArn": user_arn, "accountId": "123456789012"}}
        answer = api.module.handler(event, context.invocation())
        return answer["statusCode"], json.loads(answer["body"])

    first = post_as("arn:aws:iam::123456789012:user/a")
    second = post_as("arn:aws:iam::123456789012:user/b")
    repeat = post_as("arn:aws:iam::123456789012:user/a")

    assert first[0] == second[0] == repeat[0] == 202
    assert first[1]["id"] != second[1]["id"]
    assert repeat[1]["id"] == first[1]["id"]


# --- the answer's time -----------------------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when a (simulated) AWS attempt or retry sleep takes it forward."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("route", ["/emails", "/emails/batch"])
@pytest.mark.parametrize("failing", ["BatchWriteItem", ""])
def test_the_api_answers_inside_api_gateway_s_limit_however_storage_times_out(api, stack, monkeypatch, route, failing):
    # Given DynamoDB that takes each attempt's full timeouts and then fails, and botocore's retry sleeps
    # at their longest, all on a clock of the test's own
    fake = FakeClock()
    monkeypatch.setattr(budget, "clock", fake)
    # botocore's retry sleeps and the store's own: time.sleep, shared by every module.
    monkeypatch.setattr("time.sleep", fake.sleep)
    client = api.module.mailqueue.store._client
    attempts: list[str] = []

    def times_out(request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]
        if operation.endswith(failing):  # "" ends every name: every DynamoDB call times out
            attempts.append(operation)
            fake.now += budget.attempt_seconds(client.meta.config)
            raise ReadTimeoutError(endpoint_url=DYNAMODB_URL)

    client.meta.events.register_first("before-send.dynamodb", times_out)
    body = an_email() if route == "/emails" else {"emails": [an_email()]}

    status, answer = api.post(route, body)

    # Then the API answers before API Gateway's limit (503, or per item in a batch), after as many
    # attempts as fitted
    assert status == 503 or (route == "/emails/batch" and status == 202 and answer["accepted"] == 0), answer
    assert attempts, "no attempt was made"
    # (at most the store's own last sleep between retries, 0.4 s, past the budget)
    assert fake.now <= budget.ANSWER_SECONDS + 0.4 < budget.API_GATEWAY_SECONDS
    print(f"answered {status} after {fake.now:.1f} simulated seconds and {len(attempts)} attempts")
    # Without the budget one write alone could take longer than API Gateway waits.
    assert budget.call_seconds(client.meta.config) * 2 > budget.API_GATEWAY_SECONDS
