"""The API's one error shape, and the checks every request passes before its route runs."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mailqueue.errors import FieldError, MailqueueError

# What can reach the API function, deployed (the local stack enforces the same, see mailqueue_dev.local):
# - API Gateway's HTTP API takes a request payload of at most 10 MB;
HTTP_API_MAX_BODY_BYTES = 10 * 1024 * 1024
# - but Lambda takes a synchronous invocation's request (the whole event, as JSON) of at most 6 MB, and
#   the event carries the body as a JSON string (text as it is, its quotes and backslashes escaped; a
#   body that is not text, base64-encoded: a third larger).
LAMBDA_MAX_EVENT_BYTES = 6 * 1024 * 1024
# So the API takes a body of at most 6 MB less room for the rest of the event (headers, request context).
EVENT_ENVELOPE_BYTES = 32 * 1024
MAX_BODY_BYTES = LAMBDA_MAX_EVENT_BYTES - EVENT_ENVELOPE_BYTES
TOO_LARGE_HINT = "send attachments larger than a few MB through POST /attachments and name them by s3_key"


class UnsupportedMediaType(MailqueueError):
    code = "unsupported_media_type"
    http_status = 415


class PayloadTooLarge(MailqueueError):
    code = "payload_too_large"
    http_status = 413


class BadRequest(MailqueueError):
    code = "bad_request"
    http_status = 400


def error_payload(code: str, message: str, details: list[FieldError] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [
                {"field": detail.field, "message": detail.message, "code": detail.code} for detail in details or []
            ],
        }
    }


def error_json(error: MailqueueError) -> str:
    return json.dumps(error_payload(error.code, error.message, error.details))


def check_body(method: str, content_type: str | None, body: str | None) -> None:
    """Refuse what no route should see: non-JSON and oversize bodies."""
    if method not in {"POST", "PUT", "PATCH"} or not body:
        return
    size = len(body.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {size} bytes; the API takes at most {MAX_BODY_BYTES}: {TOO_LARGE_HINT}")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"send the body as application/json, not {media_type or 'no content type'}")


def parse_json(body: str) -> Any:
    """The body as JSON, or a 400 that says where it broke."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            [FieldError("body", error.msg, BadRequest.code)],
        ) from None
    except RecursionError:
        raise BadRequest(
            "the JSON body is nested too deeply", [FieldError("body", "nested too deeply", BadRequest.code)]
        ) from None


def refusal(event: dict[str, Any]) -> dict[str, Any] | None:
    """An HTTP API v2 answer refusing the request before routing, or None to let it through.

    Runs before the resolver so that a form-encoded or oversize body is refused as such rather
    than parsed, and malformed JSON gets a 400 that says where it broke.
    """
    method = event.get("requestContext", {}).get("http", {}).get("method", "")
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    body = event.get("body")
    try:
        if body and event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(body).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise BadRequest(
                    "the body is not UTF-8 text", [FieldError("body", "not UTF-8", BadRequest.code)]
                ) from None
        check_body(method, headers.get("content-type"), body)
        if body and method in {"POST", "PUT", "PATCH"}:
            parse_json(body)
    except MailqueueError as error:
        return {
            "statusCode": error.http_status,
            "headers": {"Content-Type": "application/json"},
            "body": error_json(error),
            "isBase64Encoded": False,
        }
    return None
