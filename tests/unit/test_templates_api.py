"""Stored templates and templated emails, through the API's Lambda handler against moto."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from mailqueue.packing import PACKED_BODY, unpack

from tests.conftest import an_email
from tests.unit.test_api import assert_error_shape, receive_all

WELCOME = {
    "subject": "Welcome, {{ name }}",
    "text": "Hello {{ name }},\nyour code is {{ code }}.\n",
    "html": "<p>Hello <b>{{ name }}</b>, your code is {{ code }}.</p>",
}


def templated(**overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "from": "Shop <app@example.com>",
        "to": ["alice@example.org"],
        "template": "welcome",
        "data": {"name": "Alice", "code": "A1"},
    }
    email.update(overrides)
    return email


def content_of(stack, email_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": email_id}, "sk": {"S": "content"}}
    )["Item"]
    if PACKED_BODY in item:
        return unpack({PACKED_BODY: item[PACKED_BODY]["B"]})
    return {key: value.get("S") for key, value in item.items()}


def count_template_reads(api) -> list[str]:
    """Record each DynamoDB read of a template partition by the api function."""
    reads: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        key = params.get("Key", {}).get("pk", {}).get("S") or params.get("ExpressionAttributeValues", {}).get(
            ":pk", {}
        ).get("S")
        if key and key.startswith("template#"):
            reads.append(key)

    client = api.module.mailqueue.templates.store._client
    client.meta.events.register("provide-client-params.dynamodb.GetItem", record)
    client.meta.events.register("provide-client-params.dynamodb.Query", record)
    return reads


# --- saving, reading, listing, deleting --------------------------------------------------------------------------


def test_each_save_is_a_new_version_and_every_version_stays_readable(api):
    status, first = api.request("PUT", "/templates/welcome", WELCOME)
    assert status == 201, first
    assert (first["name"], first["version"], first["subject"]) == ("welcome", 1, "Welcome, {{ name }}")

    status, second = api.request("PUT", "/templates/welcome", {**WELCOME, "subject": "Hi {{ name }}"})
    assert status == 201
    assert second["version"] == 2

    assert api.get("/templates/welcome")[1]["subject"] == "Hi {{ name }}"
    status, old = api.get("/templates/welcome", query="version=1")
    assert status == 200
    assert (old["version"], old["subject"], old["html"]) == (1, "Welcome, {{ name }}", WELCOME["html"])
    status, missing = api.get("/templates/welcome", query="version=3")
    assert status == 404
    assert_error_shape(missing, "not_found")


def test_templates_are_listed_by_name_page_by_page(api):
    for name in ("receipt", "welcome", "password-reset"):
        api.request("PUT", f"/templates/{name}", WELCOME)
    api.request("PUT", "/templates/welcome", WELCOME)

    status, page = api.get("/templates", query="limit=2")
    assert status == 200
    assert [(t["name"], t["latest_version"]) for t in page["templates"]] == [("password-reset", 1), ("receipt", 1)]
    status, rest = api.get("/templates", query=f"limit=2&cursor={page['cursor']}")
    assert [(t["name"], t["latest_version"]) for t in rest["templates"]] == [("welcome", 2)]
    assert rest["cursor"] is None


def test_a_deleted_template_is_gone_and_a_new_one_of_its_name_goes_on_numbering(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)
    api.request("PUT", "/templates/welcome", WELCOME)

    status, _ = api.delete("/templates/welcome")
    assert status == 204

    assert api.get("/templates/welcome")[0] == 404
    assert api.get("/templates/welcome", query="version=1")[0] == 404
    assert api.get("/templates")[1]["templates"] == []
    assert api.delete("/templates/welcome")[0] == 404
    items = boto3.client("dynamodb").query(
        TableName=stack.names["EmailsTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "template#welcome"}},
    )["Items"]
    assert items == []
    # A name and a version always mean one content: the next save is version 3, not 1 again.
    assert api.request("PUT", "/templates/welcome", WELCOME)[1]["version"] == 3


def test_a_template_is_readable_in_the_console(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)

    item = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": "template#welcome"}, "sk": {"S": "v#0000000001"}}
    )["Item"]

    assert item["subject"]["S"] == WELCOME["subject"]
    assert item["html"]["S"] == WELCOME["html"]
    assert item["version"]["N"] == "1"


@pytest.mark.parametrize(
    ("name", "body", "field", "status", "code"),
    [
        # the name is a path parameter: a 400, as every parameter's mistake is
        ("Welcome", WELCOME, "name", 400, "invalid_parameter"),
        ("-welcome", WELCOME, "name", 400, "invalid_parameter"),
        ("w" * 65, WELCOME, "name", 400, "invalid_parameter"),
        ("welcome", {"subject": "Hi"}, "body", 422, "invalid_field"),
        ("welcome", {**WELCOME, "subject": ""}, "subject", 422, "invalid_field"),
        ("welcome", {**WELCOME, "extra": 1}, "extra", 422, "unknown_field"),
    ],
)
def test_a_bad_name_or_template_is_refused(api, name, body, field, status, code):
    answered, answer = api.request("PUT", f"/templates/{name}", body)

    assert answered == status, answer
    error = assert_error_shape(answer, code)
    assert field in [detail["field"] for detail in error["details"]], error


def test_a_template_that_does_not_compile_is_refused_with_the_part_and_line(api):
    status, answer = api.request("PUT", "/templates/welcome", {**WELCOME, "html": "<p>\n{% if name %}\n<b>{{ name }"})

    assert status == 422
    error = assert_error_shape(answer, "invalid_template")
    assert error["details"][0]["field"] == "html"
    assert error["details"][0]["message"].startswith("line 3: ")
    assert api.get("/templates/welcome")[0] == 404


# --- sending with a template -------------------------------------------------------------------------------------


def test_a_templated_email_is_rendered_at_enqueue_and_records_its_template(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)
    api.request("PUT", "/templates/welcome", {**WELCOME, "subject": "Welcome aboard, {{ name }}"})

    status, accepted = api.post("/emails", templated(data={"name": "<Bob & Co>", "code": "B2"}))
    assert status == 202, accepted

    status, email = api.get(f"/emails/{accepted['id']}")
    assert (email["template"], email["template_version"]) == ("welcome", 2)
    assert email["subject"] == "Welcome aboard, <Bob & Co>"
    content = content_of(stack, accepted["id"])
    assert content["subject"] == "Welcome aboard, <Bob & Co>"
    assert content["text"] == "Hello <Bob & Co>,\nyour code is B2.\n"
    assert content["html"] == "<p>Hello <b>&lt;Bob &amp; Co&gt;</b>, your code is B2.</p>"
    assert receive_all(stack) == [{"id": accepted["id"]}]


def test_a_templated_email_can_name_an_older_version(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)
    api.request("PUT", "/templates/welcome", {**WELCOME, "subject": "Version two"})

    _, accepted = api.post("/emails", templated(template_version=1))

    assert api.get(f"/emails/{accepted['id']}")[1]["template_version"] == 1
    assert content_of(stack, accepted["id"])["subject"] == "Welcome, Alice"


def test_a_missing_variable_is_a_422_naming_it_and_nothing_is_stored(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)

    status, answer = api.post("/emails", templated(data={"name": "Alice"}))

    assert status == 422
    error = assert_error_shape(answer, "invalid_field")
    assert error["details"][0]["field"] == "data.code"
    assert "code" in error["message"]
    assert receive_all(stack) == []
    assert [item for item in boto3.client("dynamodb").scan(TableName=stack.names["EmailsTable"])["Items"]
            if item["sk"]["S"] in {"status", "content"}] == []  # fmt: skip


def test_a_missing_nested_variable_is_named_by_its_path(api):
    api.request("PUT", "/templates/account", {"subject": "Hi {{ user.name }}", "text": "x"})

    status, answer = api.post("/emails", templated(template="account", data={"user": {"id": 7}}))

    assert status == 422
    assert assert_error_shape(answer)["details"][0]["field"] == "data.user.name"


@pytest.mark.parametrize(
    ("overrides", "field_or_text"),
    [
        ({"subject": "Hand-written"}, "not both"),
        ({"text": "Hand-written"}, "not both"),
        ({"template": "Not A Slug"}, "template"),
        ({"template_version": 0}, "template_version"),
    ],
)
def test_a_template_with_a_subject_or_body_or_bad_fields_is_refused(api, overrides, field_or_text):
    api.request("PUT", "/templates/welcome", WELCOME)

    status, answer = api.post("/emails", templated(**overrides))

    assert status == 422, answer
    error = assert_error_shape(answer)
    assert field_or_text in error["message"] or field_or_text in [d["field"] for d in error["details"]], error


def test_data_without_a_template_is_refused(api):
    status, answer = api.post("/emails", an_email(data={"name": "Alice"}))

    assert status == 422
    assert "template" in assert_error_shape(answer)["message"]


def test_a_hand_written_email_still_needs_a_subject(api):
    email = an_email()
    del email["subject"]

    status, answer = api.post("/emails", email)

    assert status == 422
    assert [d["field"] for d in assert_error_shape(answer)["details"]] == ["subject"]


def test_an_unknown_template_is_a_422_on_the_template_field(api):
    status, answer = api.post("/emails", templated(template="nothing-here"))

    assert status == 422
    assert assert_error_shape(answer)["details"][0]["field"] == "template"


def test_a_rendered_email_passes_the_checks_a_hand_written_one_does(api):
    # The subject is one line in the template, but the data puts a line break into it.
    api.request("PUT", "/templates/welcome", WELCOME)

    status, answer = api.post("/emails", templated(data={"name": "Alice\r\nBcc: victim@example.net", "code": "1"}))

    assert status == 422
    error = assert_error_shape(answer)
    assert error["details"][0]["field"] == "subject"
    assert "line breaks" in error["details"][0]["message"]


def test_a_batch_renders_one_template_for_a_hundred_recipients_reading_it_once(api, stack):
    api.request("PUT", "/templates/welcome", WELCOME)
    reads = count_template_reads(api)
    emails = [
        templated(to=[f"reader{i}@example.org"], data={"name": f"Reader <{i}>", "code": f"C{i}"}) for i in range(100)
    ]
    emails[7]["data"] = {"name": "No code"}

    status, answer = api.post("/emails/batch", {"emails": emails})

    assert status == 202
    assert (answer["accepted"], answer["rejected"]) == (99, 1)
    assert answer["results"][7]["error"]["details"][0]["field"] == "data.code"
    assert reads == ["template#welcome"]
    for index in (0, 42, 99):
        email_id = answer["results"][index]["id"]
        content = content_of(stack, email_id)
        assert content["subject"] == f"Welcome, Reader <{index}>"
        assert f"<b>Reader &lt;{index}&gt;</b>" in content["html"]
        assert api.get(f"/emails/{email_id}")[1]["template"] == "welcome"


def test_a_batch_mixes_templated_and_hand_written_emails(api):
    api.request("PUT", "/templates/welcome", WELCOME)

    status, answer = api.post("/emails/batch", {"emails": [templated(), an_email(), templated(template="nope")]})

    assert status == 202
    assert [bool(result["id"]) for result in answer["results"]] == [True, True, False]


# --- preview ------------------------------------------------------------------------------------------------------


def test_a_preview_renders_without_sending_or_storing(api, stack):
    api.request("PUT", "/templates/reset", {"subject": "Reset", "html": '<p>Go to <a href="{{ url }}">reset</a></p>'})

    status, preview = api.post("/templates/reset/preview", {"data": {"url": "https://example.com/r?a=1&b=2"}})

    assert status == 200, preview
    assert preview == {
        "template": "reset",
        "template_version": 1,
        "subject": "Reset",
        "html": '<p>Go to <a href="https://example.com/r?a=1&amp;b=2">reset</a></p>',
        "text": "Go to reset (https://example.com/r?a=1&b=2)\n",
    }
    assert receive_all(stack) == []
    items = boto3.client("dynamodb").scan(TableName=stack.names["EmailsTable"])["Items"]
    assert {item["sk"]["S"] for item in items} == {"reset", "v#0000000001"}


def test_a_preview_names_a_missing_variable(api):
    api.request("PUT", "/templates/welcome", WELCOME)

    status, answer = api.post("/templates/welcome/preview", {"data": {"code": "1"}})

    assert status == 422
    assert assert_error_shape(answer)["details"][0]["field"] == "data.name"


def test_the_openapi_document_describes_the_template_routes(api):
    _, schema = api.get("/openapi.json")

    assert {"put", "get", "delete"} <= set(schema["paths"]["/templates/{name}"])
    assert "post" in schema["paths"]["/templates/{name}/preview"]
    assert "get" in schema["paths"]["/templates"]
    email = schema["components"]["schemas"]["EmailRequest"]["properties"]
    assert {"template", "template_version", "data"} <= set(email)


def test_css_can_be_inlined_when_saving(api):
    html = (
        "<html><head><style>p.note { color: #555 } @media (max-width: 600px) { p { font-size: 18px } }</style>"
        '<link rel="stylesheet" href="https://example.invalid/remote.css"></head>'
        '<body><p class="note">Hi {{ name }}</p><a href="{{ url }}">go</a></body></html>'
    )

    status, saved = api.request("PUT", "/templates/styled", {"subject": "Hi", "html": html, "inline_css": True})

    assert status == 201, saved
    assert '<p class="note" style="color: #555;">Hi {{ name }}</p>' in saved["html"]
    assert '<a href="{{ url }}">go</a>' in saved["html"]
    # The <style> block stays, for the clients that read it and for what no attribute holds.
    assert "@media (max-width: 600px)" in saved["html"]
    assert "remote.css" not in saved["html"]
    assert api.request("PUT", "/templates/plain", {"subject": "Hi", "html": html})[1]["html"] == html


def test_a_call_renders_at_most_what_a_request_could_carry(api, monkeypatch):
    from mailqueue import templates

    monkeypatch.setattr(templates, "MAX_RENDERED_PER_CALL", 2_500)
    api.request("PUT", "/templates/long", {"subject": "Long", "text": "{{ 'x' * 1000 }}"})
    emails = [templated(template="long", to=[f"r{i}@example.org"], data={}) for i in range(5)]

    status, answer = api.post("/emails/batch", {"emails": [*emails, an_email()]})

    assert status == 202
    # Three renders pass the budget (the third crosses it); what follows is refused, hand-written mail is not.
    assert [bool(result["id"]) for result in answer["results"]] == [True, True, True, False, False, True]
    assert "fewer per call" in answer["results"][3]["error"]["message"]


def racing_saves(api, times: int) -> list[int]:
    """Before each of the API's next ``times`` save transactions, another save of welcome lands first."""
    store = api.module.templates.store
    raced: list[int] = []
    saving: list[bool] = []

    def concurrent_save(**_: Any) -> None:
        if len(raced) < times and not saving:
            saving.append(True)  # the other save's own transaction passes this hook untouched
            raced.append(
                store.save("welcome", {"subject": "Other", "text": "x"}, "2030-01-01T00:00:00.000Z")["version"]
            )
            saving.pop()

    store._client.meta.events.register("before-call.dynamodb.TransactWriteItems", concurrent_save)
    return raced


def test_two_saves_at_once_make_two_versions(api):
    api.request("PUT", "/templates/welcome", WELCOME)
    raced = racing_saves(api, times=1)

    status, saved = api.request("PUT", "/templates/welcome", WELCOME)

    assert status == 201
    assert (raced, saved["version"]) == ([2], 3)
    assert api.get("/templates/welcome", query="version=2")[1]["subject"] == "Other"
    assert api.get("/templates/welcome")[1]["subject"] == WELCOME["subject"]


def test_a_save_that_keeps_losing_the_race_is_a_409(api):
    api.request("PUT", "/templates/welcome", WELCOME)
    racing_saves(api, times=100)

    status, answer = api.request("PUT", "/templates/welcome", WELCOME)

    assert status == 409
    assert_error_shape(answer, "template_conflict")
