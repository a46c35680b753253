"""What S3 enforces on a browser-style upload (a presigned POST) and moto does not: the local stack's S3
takes a POST form only as S3 would.

moto (5.2.5, and its main branch as of this writing) stores any POSTed file under any key: it checks
neither the policy's signature, nor its expiration, nor its conditions (the key, the content type, the
``content-length-range``). This WSGI middleware, in front of moto's server, checks them as S3 documents
(Signature Version 4 POST policy): a refused upload gets S3's error code and status, and never reaches
moto.

https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.formparser import parse_form_data

# Form fields that no condition has to name (S3: the signature, the file, the policy, x-ignore-*).
UNCONDITIONED = frozenset({"policy", "x-amz-signature", "file"})
ALGORITHM = "AWS4-HMAC-SHA256"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str

    def body(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message></Error>"
        ).encode()


def _denied(message: str) -> Refusal:
    return Refusal(403, "AccessDenied", message)


def check(
    bucket: str,
    fields: dict[str, str],
    file_size: int,
    secret_of: Callable[[str], str | None],
    now: datetime,
) -> Refusal | None:
    """Why S3 would refuse this POST upload (None if it would take it). ``fields`` are the form's fields
    but the file, names lowercased; ``secret_of`` gives the secret key of an access key id."""
    policy_text = fields.get("policy")
    if not policy_text:
        return _denied("Bucket POST must contain a field named 'policy'.")
    if fields.get("x-amz-algorithm") != ALGORITHM:
        return Refusal(400, "InvalidRequest", f"The form must have x-amz-algorithm {ALGORITHM}.")
    for required in ("x-amz-credential", "x-amz-date", "x-amz-signature"):
        if not fields.get(required):
            return _denied(f"Bucket POST must contain a field named '{required}'.")
    refusal = _check_signature(policy_text, fields, secret_of)
    if refusal is not None:
        return refusal
    try:
        policy = json.loads(base64.b64decode(policy_text, validate=True))
        expiration = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
        conditions = list(policy["conditions"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=UTC)
    if expiration <= now:
        return _denied("Invalid according to Policy: Policy expired.")
    return _check_conditions(bucket, fields, file_size, conditions)


def _check_signature(
    policy_text: str, fields: dict[str, str], secret_of: Callable[[str], str | None]
) -> Refusal | None:
    parts = fields["x-amz-credential"].split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        return Refusal(400, "AuthorizationQueryParametersError", "Invalid x-amz-credential.")
    access_key, day, region, service, terminal = parts
    secret = secret_of(access_key)
    if secret is None:
        return _denied("The AWS Access Key Id you provided does not exist in our records.")
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, policy_text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["x-amz-signature"]):
        return Refusal(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return None


def _check_conditions(bucket: str, fields: dict[str, str], file_size: int, conditions: list[Any]) -> Refusal | None:
    values = {**fields, "bucket": bucket}
    named: set[str] = set()
    for written in conditions:
        condition = written
        if isinstance(written, dict) and len(written) == 1:
            ((name, wanted),) = written.items()
            condition = ["eq", f"${name}", wanted]
        if not isinstance(condition, list) or len(condition) != 3:
            return Refusal(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid condition {written!r}.")
        operator = str(condition[0]).lower()
        if operator == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if file_size > high:
                return Refusal(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            if file_size < low:
                return Refusal(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
            continue
        if operator not in {"eq", "starts-with"}:
            return Refusal(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid condition {written!r}.")
        name = str(condition[1]).lower().removeprefix("$")
        named.add(name)
        value, wanted = values.get(name, ""), str(condition[2])
        if not (value == wanted if operator == "eq" else value.startswith(wanted)):
            return _denied(
                f'Invalid according to Policy: Policy Condition failed: ["{operator}", "${name}", "{wanted}"]'
            )
    extra = sorted(
        name for name in fields if name not in named and name not in UNCONDITIONED and not name.startswith("x-ignore-")
    )
    if extra:
        return _denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    return None


class PostPolicy:
    """WSGI middleware: a POST form upload that S3 would refuse is answered with S3's error; others pass."""

    def __init__(self, app: WsgiApp, secret_of: Callable[[str], str | None]) -> None:
        self.app = app
        self.secret_of = secret_of

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Of the services moto serves, only S3 takes a multipart form: every such POST is an upload.
        is_form = str(environ.get("CONTENT_TYPE", "")).lower().startswith("multipart/form-data")
        if environ.get("REQUEST_METHOD") != "POST" or not is_form:
            return self.app(environ, start_response)
        # Path style (http://127.0.0.1:port/bucket), or virtual-hosted style (http://bucket.localhost:port/).
        bucket = str(environ.get("PATH_INFO", "")).strip("/").split("/", 1)[0]
        bucket = bucket or str(environ.get("HTTP_HOST", "")).split(".", 1)[0]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        _, form, files = parse_form_data({**environ, "wsgi.input": io.BytesIO(body)})
        fields = {str(name).lower(): str(value) for name, value in form.items()}
        upload = files.get("file")
        size = len(upload.read()) if upload is not None else 0
        refusal = check(bucket, fields, size, self.secret_of, datetime.now(UTC))
        if refusal is not None:
            payload = refusal.body()
            start_response(
                f"{refusal.status} {_REASONS.get(refusal.status, 'Error')}",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))],
            )
            return [payload]
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


_REASONS = {400: "Bad Request", 403: "Forbidden"}
