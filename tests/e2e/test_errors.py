"""Error answers over HTTP that say what to fix: one code per kind of mistake, the field named, a hint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import Http, an_email, wait_for_status

pytestmark = pytest.mark.e2e


def refused(http: Http, method: str, path: str, body: object = None, **kwargs: object) -> tuple[int, dict[str, str]]:
    code, answer = http.request(method, path, body, **kwargs)
    assert set(answer) == {"error"}, answer
    return code, answer["error"]


@pytest.mark.parametrize(
    ("query", "field"), [({"status": "done"}, "status"), ({"status": "queued", "cursor": "garbage"}, "cursor")]
)
def test_a_bad_list_parameter_is_a_400_naming_it(http: Http, query: dict[str, str], field: str) -> None:
    code, error = refused(http, "GET", "/emails", params=query)

    assert (code, error["code"]) == (400, "invalid_parameter")
    assert [(d["field"], d["code"]) for d in error["details"]] == [(field, "invalid_parameter")]


@pytest.mark.parametrize(
    "send_at", ["next tuesday", (datetime.now(UTC) + timedelta(days=30)).isoformat()], ids=["malformed", "too-far"]
)
def test_a_bad_send_at_is_one_kind_of_mistake_whatever_is_wrong_with_it(http: Http, send_at: str) -> None:
    code, error = refused(http, "POST", "/emails", an_email(send_at=send_at))

    assert (code, error["code"]) == (422, "invalid_field")
    assert [(d["field"], d["code"]) for d in error["details"]] == [("send_at", "invalid_field")]


def test_an_unknown_field_is_named_with_the_field_it_likely_meant(http: Http) -> None:
    code, error = refused(http, "POST", "/emails", an_email(**{"reply-to": ["help@example.com"]}))

    assert (code, error["code"]) == (422, "unknown_field")
    assert error["details"] == [
        {
            "field": "reply-to",
            "message": "is not a field this API knows: did you mean reply_to?",
            "code": "unknown_field",
        }
    ]
    # in an attachment too
    attachment = {"filename": "a.txt", "content_type": "text/plain", "contents": "eA=="}
    code, error = refused(http, "POST", "/emails", an_email(attachments=[attachment]))
    assert (code, error["code"]) == (422, "unknown_field")
    assert "did you mean content?" in error["details"][0]["message"]


def test_a_missing_field_is_named(http: Http) -> None:
    email = an_email()
    del email["subject"]

    code, error = refused(http, "POST", "/emails", email)

    assert (code, error["code"]) == (422, "missing_field")
    assert error["details"] == [{"field": "subject", "message": "is required", "code": "missing_field"}]


def test_a_wrong_method_is_a_405_with_the_methods_that_work(http: Http) -> None:
    response = http.session.put(f"{http.url}/emails", json=an_email(), timeout=30)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.json()["error"]["message"] == "PUT is not allowed on /emails: use GET or POST"


def test_retrying_an_email_that_did_not_fail_says_only_failed_emails_can_be(http: Http) -> None:
    code, answer = http.post("/emails", an_email())
    assert code == 202, answer
    wait_for_status(http, answer["id"], "delivered")

    code, error = refused(http, "POST", f"/emails/{answer['id']}/retry")

    assert (code, error["code"]) == (409, "status_conflict")
    assert error["message"] == f"email {answer['id']} is delivered: only failed emails can be retried"


def test_the_openapi_document_lists_every_error_code(http: Http) -> None:
    code, document = http.get("/openapi.json")
    assert code == 200
    codes = document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["description"]
    responses = document["paths"]["/emails"]["post"]["responses"]
    for kind in ("invalid_field", "unknown_field", "missing_field", "invalid_parameter", "suppressed_recipient"):
        assert kind in codes
    assert "method_not_allowed" in responses["405"]["description"]
    assert "unknown_field" in responses["422"]["description"]
