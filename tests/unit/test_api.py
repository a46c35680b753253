"""The HTTP API, through its Lambda handler with HTTP API v2 events, against moto."""

from __future__ import annotations

import base64
import json
import random
import string
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from mailqueue import clock

from tests.conftest import ApiClient, an_email


def receive_all(stack, queue: str = "SendQueue") -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=stack.names[queue], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def table_items(stack) -> list[dict[str, Any]]:
    """The emails' records (status and content), without what binds idempotency keys to their ids."""
    items = boto3.client("dynamodb").scan(TableName=stack.names["EmailsTable"])["Items"]
    return [item for item in items if item["sk"]["S"] in {"status", "content"}]


def assert_error_shape(body: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"]
    assert all(set(detail) == {"field", "message", "code"} for detail in error["details"])
    if code:
        assert error["code"] == code
    return error


def fail_calls(api, service_attr: str, event: str, error: Exception) -> None:
    """Make every ``event`` call of one of the api module's clients raise ``error``."""

    def raise_error(**_: Any) -> None:
        raise error

    client = getattr(api.module.mailqueue, service_attr)._client
    client.meta.events.register(event, raise_error)


# --- POST /emails ------------------------------------------------------------------------------------------


def test_an_accepted_email_is_stored_then_published(api, stack):
    status, body = api.post("/emails", an_email(metadata={"order": 42}))

    assert status == 202
    assert body == {"id": body["id"], "status": "queued", "published": True, "message": None, "skipped": []}
    assert receive_all(stack) == [{"id": body["id"]}]
    status, email = api.get(f"/emails/{body['id']}")
    assert status == 200
    assert email["status"] == "queued"
    assert email["to"] == "alice@example.org"
    assert email["metadata"] == {"order": 42}
    assert email["history"][0]["status"] == "queued"
    assert email["deadline"] > email["created_at"]


def test_the_status_record_is_readable_and_small(api, stack):
    _, body = api.post("/emails", an_email(subject="A rather long subject line that goes on and on and on"))

    item = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "status"}}
    )["Item"]

    assert item["status"]["S"] == "queued"
    assert item["to"]["S"] == "alice@example.org"
    assert item["subject"]["S"] == "A rather long subject line that goes on…"
    assert len(json.dumps(item)) < 1024


def test_a_high_priority_email_goes_to_the_high_priority_queue(api, stack):
    _, body = api.post("/emails", an_email(priority="high"))

    assert receive_all(stack, "HighPrioritySendQueue") == [{"id": body["id"]}]
    assert receive_all(stack) == []


def test_an_email_far_ahead_is_scheduled_and_not_published(api, stack):
    send_at = clock.now() + timedelta(hours=2)

    _, body = api.post("/emails", an_email(send_at=send_at.isoformat()))

    assert body["status"] == "scheduled"
    assert receive_all(stack) == []
    _, email = api.get(f"/emails/{body['id']}")
    assert email["deadline"] == clock.iso(send_at)


def test_an_email_cannot_be_scheduled_past_what_s3_keeps(api, stack):
    status, body = api.post("/emails", an_email(send_at=(clock.now() + timedelta(days=8)).isoformat()))

    assert status == 422
    assert body["error"]["details"] == [
        {"field": "send_at", "message": "must be at most 7 days ahead", "code": "invalid_field"}
    ]


def test_an_email_a_few_minutes_ahead_is_published_with_a_delay(api, stack):
    send_at = clock.now() + timedelta(minutes=5)

    _, body = api.post("/emails", an_email(send_at=send_at.isoformat()))

    assert body["status"] == "queued"
    assert receive_all(stack) == []  # not visible before its delay
    _, email = api.get(f"/emails/{body['id']}")
    assert clock.parse_iso(email["deadline"]) > send_at


def test_a_failed_publish_leaves_the_email_queued_with_its_deadline(api, stack):
    fail_calls(api, "queue", "before-call.sqs.SendMessage", EndpointConnectionError(endpoint_url="https://sqs"))

    status, body = api.post("/emails", an_email())

    assert status == 202
    assert body["status"] == "queued"
    assert body["published"] is False
    assert "deadline" in body["message"]
    _, email = api.get(f"/emails/{body['id']}")
    assert email["status"] == "queued"
    assert email["deadline"]


def test_a_storage_outage_is_a_503_and_nothing_is_published(api, stack):
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "Batch")
    fail_calls(api, "store", "before-call.dynamodb.BatchWriteItem", throttled)

    status, body = api.post("/emails", an_email())

    assert status == 503
    assert_error_shape(body, "unavailable")
    assert receive_all(stack) == []


def test_a_from_outside_the_sending_identities_is_refused(api, stack):
    status, body = api.post("/emails", an_email(**{"from": "ceo@elsewhere.example"}))

    assert status == 422
    error = assert_error_shape(body, "invalid_field")
    assert error["details"] == [{"field": "from", "message": error["details"][0]["message"], "code": "invalid_field"}]
    assert "ceo@elsewhere.example" in error["message"]
    assert table_items(stack) == []
    assert receive_all(stack) == []


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.net"}, "subject", "invalid_field"),
        ({"to": [f"user{index}@example.org" for index in range(51)]}, "body", "invalid_field"),
        ({"unknown": 1}, "unknown", "unknown_field"),
        ({"headers": {"From": "boss@example.com"}}, "headers", "invalid_field"),
        ({"attachments": [{"filename": "../x", "content": "eA=="}]}, "attachments[0].filename", "invalid_field"),
        ({"text": "y" * 2_000_000}, "text", "invalid_field"),
    ],
)
def test_invalid_emails_get_a_422_naming_the_field_and_store_nothing(api, stack, overrides, field, code):
    status, body = api.post("/emails", an_email(**overrides))

    assert status == 422
    error = assert_error_shape(body, code)
    assert field in [detail["field"] for detail in error["details"]], error
    assert table_items(stack) == []


def test_an_s3_attachment_must_have_been_uploaded(api, stack):
    status, body = api.post("/emails", an_email(attachments=[{"filename": "a.pdf", "s3_key": "uploads/01J/a.pdf"}]))

    assert status == 422
    assert assert_error_shape(body)["details"][0]["field"] == "attachments[0].s3_key"


def test_an_uploaded_attachment_is_accepted(api, stack):
    status, ticket = api.post("/attachments", {"filename": "big.pdf", "content_type": "application/pdf", "size": 5})
    assert status == 201
    assert ticket["s3_key"].startswith("uploads/") and ticket["s3_key"].endswith("/big.pdf")
    assert ticket["upload_url"].startswith("https://")
    boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=ticket["s3_key"], Body=b"%PDF-")

    status, body = api.post("/emails", an_email(attachments=[{"filename": "big.pdf", "s3_key": ticket["s3_key"]}]))

    assert status == 202, body


def test_large_content_is_kept_in_s3_and_the_item_keeps_a_reference(api, stack):
    _, body = api.post("/emails", an_email(text="z" * 600_000))

    item = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert item["s3_key"]["S"] == f"content/{body['id']}.json"
    assert "text" not in item
    stored = boto3.client("s3").get_object(Bucket=stack.names["AttachmentsBucket"], Key=item["s3_key"]["S"])
    assert json.loads(stored["Body"].read())["text"] == "z" * 600_000


# --- malformed requests ------------------------------------------------------------------------------------


def test_malformed_json_is_a_400_that_says_where(api, stack):
    status, body = api.post("/emails", raw='{"from": "app@example.com", ')

    assert status == 400
    assert "not valid JSON" in assert_error_shape(body, "bad_request")["message"]


def test_deeply_nested_json_is_a_400(api, stack):
    status, body = api.post("/emails", raw="[" * 100_000 + "]" * 100_000)

    assert status in (400, 422)
    assert_error_shape(body)


def test_a_body_that_is_not_json_is_a_415(api, stack):
    status, body = api.post("/emails", raw="from=app@example.com", headers={"content-type": "text/plain"})

    assert status == 415
    assert_error_shape(body, "unsupported_media_type")


def test_form_encoded_bodies_are_refused_too(api, stack):
    status, body = api.post(
        "/emails", raw="from=app@example.com", headers={"content-type": "application/x-www-form-urlencoded"}
    )

    assert status == 415
    assert_error_shape(body)


def test_an_oversize_body_is_a_413(api, stack):
    status, body = api.post("/emails", raw='{"text": "' + "x" * (10 * 1024 * 1024) + '"}')

    assert status == 413
    assert_error_shape(body, "payload_too_large")


def test_unknown_routes_are_404_and_unknown_methods_405_in_the_error_shape(api, stack):
    status, body = api.request("GET", "/nope")
    assert status == 404
    assert_error_shape(body, "not_found")
    for method, path, allowed in [("PUT", "/emails", "GET or POST"), ("PATCH", "/emails/01J", "DELETE or GET")]:
        status, body = api.request(method, path)
        assert status == 405
        error = assert_error_shape(body, "method_not_allowed")
        assert error["message"] == f"{method} is not allowed on {path}: use {allowed}"


def test_an_unknown_email_is_a_404(api, stack):
    for path in ["/emails/01JAAAAAAAAAAAAAAAAAAAAAAA", "/emails/not-an-id"]:
        status, body = api.get(path)
        assert status == 404
        assert_error_shape(body, "not_found")


# --- idempotency ---------------------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replay_the_first_answer(api, stack):
    first = api.post("/emails", an_email(), headers={"Idempotency-Key": "order-42"})
    second = api.post("/emails", an_email(), headers={"Idempotency-Key": "order-42"})

    assert first[0] == second[0] == 202
    assert first[1] == second[1]
    assert len(receive_all(stack)) == 1
    assert len(table_items(stack)) == 2  # one email: its status and content records


def test_the_same_idempotency_key_with_another_body_is_a_409(api, stack):
    api.post("/emails", an_email(), headers={"Idempotency-Key": "order-43"})

    status, body = api.post("/emails", an_email(subject="Other"), headers={"Idempotency-Key": "order-43"})

    assert status == 409
    assert assert_error_shape(body, "idempotency_conflict")["details"][0]["field"] == "Idempotency-Key"


def test_idempotent_batches_replay_too(api, stack):
    batch = {"emails": [an_email(), an_email(to=["bob@example.org"])]}
    first = api.post("/emails/batch", batch, headers={"Idempotency-Key": "batch-1"})
    second = api.post("/emails/batch", batch, headers={"Idempotency-Key": "batch-1"})

    assert first == second
    assert len(table_items(stack)) == 4


# --- batch ---------------------------------------------------------------------------------------------------


def test_a_batch_accepts_the_good_emails_and_explains_the_bad(api, stack):
    emails = [
        an_email(),
        an_email(subject="bad\nsubject"),
        an_email(**{"from": "x@not-ours.example"}),
        an_email(priority="high"),
        {"nonsense": True},
    ]

    status, body = api.post("/emails/batch", {"emails": emails})

    assert status == 202
    assert body["accepted"] == 2
    assert body["rejected"] == 3
    results = body["results"]
    assert [result["index"] for result in results] == [0, 1, 2, 3, 4]
    assert results[0]["status"] == "queued" and results[0]["published"] is True
    assert results[1]["error"]["details"][0]["field"] == "subject"
    assert results[2]["error"]["details"][0]["field"] == "from"
    assert results[4]["error"]["code"] == "missing_field"  # {"nonsense": true} has no from, first of all
    assert receive_all(stack) == [{"id": results[0]["id"]}]
    assert receive_all(stack, "HighPrioritySendQueue") == [{"id": results[3]["id"]}]


def test_a_batch_of_one_hundred_uses_batch_calls(api, stack):
    calls: list[str] = []
    for client in (api.module.mailqueue.store._client, api.module.mailqueue.queue._client):
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))

    status, body = api.post("/emails/batch", {"emails": [an_email(to=[f"u{i}@example.org"]) for i in range(100)]})

    assert status == 202
    assert body["accepted"] == 100
    assert calls.count("BatchWriteItem") == 8  # 200 items, 25 a call
    assert calls.count("SendMessageBatch") == 10
    assert "PutItem" not in calls and "SendMessage" not in calls


def test_a_batch_over_one_hundred_is_refused(api, stack):
    status, body = api.post("/emails/batch", {"emails": [an_email()] * 101})

    assert status == 422
    assert assert_error_shape(body)["details"][0]["field"] == "emails"


# --- listing -------------------------------------------------------------------------------------------------


def test_listing_pages_newest_first_with_an_opaque_cursor(api, stack):
    ids = [api.post("/emails", an_email(subject=f"n{index}"))[1]["id"] for index in range(5)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "status=queued&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = api.get("/emails", query=query)
        assert status == 200
        seen += [email["id"] for email in page["emails"]]
        pages += 1
        cursor = page.get("cursor")
        if not cursor:
            break

    assert seen == sorted(ids, reverse=True)
    assert pages == 3


def list_all(api: ApiClient, status: str, limit: int) -> tuple[list[str], int]:
    """Every id a list of ``status`` shows, page after page, and how many pages it took."""
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"status={status}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        answer, page = api.get("/emails", query=query)
        assert answer == 200, page
        seen += [email["id"] for email in page["emails"]]
        pages += 1
        cursor = page.get("cursor")
        if not cursor:
            return seen, pages


def test_a_list_that_scans_goes_on_from_where_its_scan_stopped(api, stack, monkeypatch):
    # Queued emails are found by scanning every email newest first, a bounded number per call: among
    # many emails of other statuses, a page may come back short, or empty, with a cursor to go on.
    monkeypatch.setattr("mailqueue.store._LIST_SCAN_LIMIT", 2)
    queued: list[str] = []
    for index in range(30):
        email_id = api.post("/emails", an_email(subject=f"n{index}"))[1]["id"]
        if index % 3:
            assert api.request("DELETE", f"/emails/{email_id}")[0] == 200
        else:
            queued.append(email_id)

    seen, pages = list_all(api, "queued", limit=2)

    assert seen == sorted(queued, reverse=True)
    # More pages than 10 emails take 2 at a time: some pages stopped short of the limit, with a cursor.
    assert pages > 5


def test_scheduled_emails_list_the_next_due_first(api, stack):
    now = clock.now()
    due = {
        api.post("/emails", an_email(send_at=clock.iso(clock.after(now, 3600 * hours))))[1]["id"]: hours
        for hours in (5, 2, 9, 1, 7)
    }

    seen, pages = list_all(api, "scheduled", limit=2)

    assert seen == sorted(due, key=due.__getitem__)
    assert pages == 3


def test_cancelled_emails_list_newest_first_from_their_index(api, stack):
    ids = [api.post("/emails", an_email())[1]["id"] for _ in range(3)]
    for email_id in ids:
        assert api.request("DELETE", f"/emails/{email_id}")[0] == 200

    seen, _ = list_all(api, "cancelled", limit=2)

    assert seen == sorted(ids, reverse=True)


@pytest.mark.parametrize("query", ["status=bogus", "status=queued&limit=0", "status=queued&cursor=%21%21", ""])
def test_bad_list_queries_are_4xx_in_the_error_shape(api, stack, query):
    status, body = api.get("/emails", query=query)

    assert status == 400
    error = assert_error_shape(body, "invalid_parameter")
    if "limit=0" in query:
        assert error["details"][0]["field"] == "limit"


@pytest.mark.parametrize("limit", [0, 101])
def test_the_service_itself_refuses_a_limit_out_of_range_naming_it(api, stack, limit):
    # The API's query model refuses it first; the service says the same to its other callers (the CLI).
    from mailqueue.errors import InvalidParameter

    with pytest.raises(InvalidParameter) as refused:
        api.module.mailqueue.list("queued", limit=limit)
    assert refused.value.details[0].field == "limit"
    assert refused.value.details[0].message == "must be between 1 and 100"


# --- cancel and retry ----------------------------------------------------------------------------------------


def test_cancel_a_queued_email_then_a_second_cancel_answers_it_as_it_is(api, stack):
    _, body = api.post("/emails", an_email())

    status, email = api.delete(f"/emails/{body['id']}")
    assert status == 200
    assert email["status"] == "cancelled"
    assert email["deadline"] is None

    # A cancel sent again (its first answer lost) finds the email cancelled: that is its answer.
    status, again = api.delete(f"/emails/{body['id']}")
    assert status == 200
    assert again["status"] == "cancelled"
    assert [entry["status"] for entry in again["history"]] == ["queued", "cancelled"]


def test_cancelling_an_email_that_is_past_cancelling_conflicts(api, stack):
    from mailqueue.statemachine import Change, Guard, Status, transition

    _, body = api.post("/emails", an_email())
    now = clock.now()
    transition(
        api.module.mailqueue.store, body["id"], Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now
    )

    status, conflict = api.delete(f"/emails/{body['id']}")

    assert status == 409
    assert "sending" in assert_error_shape(conflict, "status_conflict")["message"]


def test_retry_is_only_for_failed_emails(api, stack):
    _, body = api.post("/emails", an_email())

    status, conflict = api.post(f"/emails/{body['id']}/retry")

    assert status == 409
    assert "queued" in assert_error_shape(conflict)["message"]


@pytest.mark.parametrize(("priority", "queue"), [("normal", "SendQueue"), ("high", "HighPrioritySendQueue")])
def test_retry_puts_a_failed_email_back_in_the_queue_of_its_priority(api, stack, priority, queue):
    from mailqueue.statemachine import Change, Guard, Status, transition

    _, body = api.post("/emails", an_email(priority=priority))
    store = api.module.mailqueue.store
    now = clock.now()
    transition(store, body["id"], Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now)
    transition(store, body["id"], Guard({Status.SENDING}), Change(Status.FAILED, reason="rejected"), now)
    receive_all(stack, queue)

    status, email = api.post(f"/emails/{body['id']}/retry")

    assert status == 202
    assert email["status"] == "queued"
    assert email["attempts"] == 0
    assert [entry["status"] for entry in email["history"]] == ["queued", "sending", "failed", "queued"]
    assert receive_all(stack, queue) == [{"id": body["id"]}]


def test_cancel_of_an_unknown_email_is_a_404(api, stack):
    status, body = api.delete("/emails/01JAAAAAAAAAAAAAAAAAAAAAAA")

    assert status == 404
    assert_error_shape(body)


# --- OpenAPI -------------------------------------------------------------------------------------------------


def test_the_openapi_document_describes_the_routes(api, stack):
    status, document = api.get("/openapi.json")

    assert status == 200
    assert document["openapi"].startswith("3.")
    assert {"/emails", "/emails/batch", "/emails/{email_id}", "/emails/{email_id}/retry", "/attachments"} <= set(
        document["paths"]
    )
    schemas = document["components"]["schemas"]
    assert "from" in schemas["EmailRequest"]["properties"]
    assert schemas["EmailRequest"].get("additionalProperties") is False


def test_base64_bodies_from_api_gateway_are_understood(api, stack):
    from mailqueue_dev.lambda_events import http_api_event

    event = http_api_event("POST", "/emails", json.dumps(an_email()), {"content-type": "application/json"})
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True

    answer = api.module.handler(event, api._context.invocation())

    assert answer["statusCode"] == 202, answer


# --- input that reached storage unchecked ---------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        # UTC is a year before the first one datetime can hold.
        ({"send_at": "0001-01-01T00:00:00+01:00"}, "send_at"),
        ({"send_at": "9999-12-31T23:59:59-01:00"}, "send_at"),
        # DynamoDB stores maps nested 32 levels deep at most (moto stores deeper ones).
        ({"metadata": nested(40)}, "metadata"),
    ],
)
def test_input_that_storage_cannot_hold_is_a_422_naming_the_field(api, stack, overrides, field):
    status, body = api.post("/emails", an_email(**overrides))

    assert status == 422, body
    assert assert_error_shape(body)["details"][0]["field"] == field
    assert table_items(stack) == []


def test_a_send_at_out_of_range_fails_its_batch_item_only(api, stack):
    status, body = api.post("/emails/batch", {"emails": [an_email(send_at="0001-01-01T00:00:00+01:00"), an_email()]})

    assert status == 202, body
    assert body["accepted"] == 1
    assert body["results"][0]["error"]["details"][0]["field"] == "send_at"
    assert body["results"][1]["id"]


def test_metadata_within_the_nesting_limit_is_kept(api, stack):
    status, body = api.post("/emails", an_email(metadata=nested(16)))

    assert status == 202
    assert api.get(f"/emails/{body['id']}")[1]["metadata"] == nested(16)


def cursor_of(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/emails", "status=queued&cursor="),
        ("/suppressions", "cursor="),
        ("/suppressions", f"cursor={cursor_of({'after': ''})}"),
        ("/suppressions", f"cursor={cursor_of({'after': 'a' * 1100})}"),
    ],
)
def test_an_empty_or_oversize_cursor_is_a_400_naming_it(api, stack, path, query):
    status, body = api.get(path, query=query)

    assert status == 400, body
    assert assert_error_shape(body, "invalid_parameter")["details"][0]["field"] == "cursor"


def test_lifting_an_address_longer_than_storage_keys_is_a_400_naming_it(api, stack):
    status, body = api.delete(f"/suppressions/{'a' * 1100}%40example.org")

    assert status == 400, body
    assert assert_error_shape(body, "invalid_parameter")["details"][0]["field"] == "address"


def test_get_shows_every_recipient_of_an_email_whose_content_is_compressed(api, stack):
    # A long, repetitive body is stored zlib-compressed: the recipients are read back from it
    email = an_email(to=["Alice <alice@example.org>"], cc=["bob@example.org"], text="Thanks for your order. " * 500)
    status, body = api.post("/emails", email)
    assert status == 202, body
    content = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert "body_zlib" in content

    status, shown = api.get(f"/emails/{body['id']}")

    assert status == 200
    assert shown["recipients"] == {"to": ["Alice <alice@example.org>"], "cc": ["bob@example.org"], "bcc": []}
    assert (shown["subject"], shown["summary"]) == (email["subject"], False)


@pytest.mark.parametrize("in_s3", [False, True], ids=["inline content", "content in S3"])
def test_get_shows_the_email_s_tags_and_a_list_page_leaves_them_out(api, stack, in_s3):
    tags = [{"name": "campaign", "value": "welcome"}, {"name": "tenant", "value": "t-42"}]
    # Text that does not compress, too large for the table: the content goes to S3 and its envelope stays.
    text = "".join(random.Random(1).choices(string.ascii_letters, k=500_000)) if in_s3 else "Thanks."
    _, body = api.post("/emails", an_email(text=text, tags=tags))
    content = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert ("s3_key" in content) == in_s3

    status, shown = api.get(f"/emails/{body['id']}")
    _, page = api.get("/emails", query="status=queued")

    assert status == 200
    assert shown["tags"] == tags
    assert [email["tags"] for email in page["emails"] if email["id"] == body["id"]] == [None]


def test_the_suppression_list_pages_through_every_address(api, stack):
    suppressions = api.module.mailqueue.suppressions
    addresses = [f"gone{n}@example.org" for n in range(5)]
    for address in addresses:
        suppressions.add(address, "permanent bounce (General)", clock.iso(clock.now()))

    listed: list[str] = []
    cursor: str | None = None
    for _ in range(len(addresses)):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = api.get("/suppressions", query=query)
        assert status == 200
        assert len(page["suppressions"]) <= 2
        listed += [suppression["address"] for suppression in page["suppressions"]]
        cursor = page["cursor"]
        if cursor is None:
            break

    assert sorted(listed) == addresses


@pytest.mark.parametrize("unread_calls", [1, 5])
def test_the_suppression_check_reads_what_dynamodb_left_unprocessed_or_refuses(api, stack, unread_calls):
    api.module.mailqueue.suppressions.add("gone@example.org", "complaint", clock.iso(clock.now()))
    calls = {"n": 0}

    def leave_unprocessed(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        # DynamoDB may answer a BatchGetItem with some keys unread (throttled): the first calls read none.
        calls["n"] += 1
        if calls["n"] <= unread_calls and model.name == "BatchGetItem":
            table = stack.names["EmailsTable"]
            keys = [{"pk": {"S": "suppression"}, "sk": {"S": "gone@example.org"}}]
            parsed["UnprocessedKeys"] = {table: {"Keys": keys}}
            parsed["Responses"] = {table: []}

    client = api.module.mailqueue.suppressions._client
    client.meta.events.register("after-call.dynamodb.BatchGetItem", leave_unprocessed)
    try:
        status, body = api.post("/emails", an_email(to=["gone@example.org"]))
    finally:
        client.meta.events.unregister("after-call.dynamodb.BatchGetItem", leave_unprocessed)

    if unread_calls < 5:
        assert status == 422
        assert assert_error_shape(body, "suppressed_recipient")
    else:  # never read: refused as unavailable, nothing stored
        assert status == 503
        assert assert_error_shape(body, "unavailable")
        assert table_items(stack) == []
