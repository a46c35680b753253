"""The API's one error shape, and the checks every request passes before its route runs."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mailqueue.errors import FieldError, MailqueueError

# HTTP API refuses larger payloads itself; the local runner and tests enforce the same limit.
MAX_BODY_BYTES = 10 * 1024 * 1024


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
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the body is larger than {MAX_BODY_BYTES} bytes; upload attachments with POST /attachments"
        )
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
