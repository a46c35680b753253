"""Lambda events and contexts as AWS builds them: what the local stack and the tests hand to handlers."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class LambdaContext:
    """The context object Lambda passes to a handler."""

    function_name: str = "mailqueue-local"
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def invocation(self) -> LambdaContext:
        """The context of one invocation: its own request id, its time counted from now, as in Lambda."""
        return replace(self, aws_request_id=str(uuid.uuid4()), started=time.monotonic())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


def http_api_event(
    method: str,
    path: str,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    query: str = "",
    source_ip: str = "127.0.0.1",
    route_key: str = "ANY /{proxy+}",
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event for one request, matched to the route ``route_key``
    (by default the catch-all, whose one variable is the whole path)."""
    headers = {name.lower(): value for name, value in (headers or {}).items()}
    is_base64 = False
    if isinstance(body, bytes):
        # HTTP APIs pass a text body (text/*, application/json) as it is, and base64-encode any other.
        raw = body
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        text = _utf8(raw) if media_type.startswith("text/") or media_type == "application/json" else None
        if text is None:
            body, is_base64 = base64.b64encode(raw).decode(), True
        else:
            body = text
    now = datetime.now(UTC)
    query_parameters: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        query_parameters[name] = f"{query_parameters[name]},{value}" if name in query_parameters else value
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    parameters = {"proxy": path.lstrip("/")} if path_parameters is None else path_parameters
    if parameters:  # a route without variables has none
        event["pathParameters"] = parameters
    if query_parameters:
        event["queryStringParameters"] = query_parameters
    if body is not None:
        event["body"] = body
    return event


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An SQS event source mapping's batch, from ReceiveMessage's messages."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                    "SenderId": attributes.get("SenderId", "123456789012"),
                    "ApproximateFirstReceiveTimestamp": attributes.get(
                        "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                    ),
                },
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": queue_arn.split(":")[3] if queue_arn.count(":") >= 3 else "us-east-1",
            }
        )
    return {"Records": records}


def scheduled_event(
    rule_arn: str = "arn:aws:scheduler:us-east-1:123456789012:schedule/default/requeue",
) -> dict[str, Any]:
    """What an EventBridge schedule passes to its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [rule_arn],
        "detail": {},
    }


def scheduler_event(schedule_input: str | None) -> Any:
    """What an EventBridge Scheduler schedule hands its Lambda target: the schedule's Input, JSON, as it is (a
    templated Lambda target takes well-formed JSON only); without an Input, the Scheduler's own event."""
    if schedule_input is None:
        return scheduled_event()
    return json.loads(schedule_input)


def dynamodb_stream_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    """Records read from a DynamoDB stream (GetRecords) as Lambda hands them to a function: JSON, with binary
    attribute values in base64 and the creation time in epoch seconds."""
    converted = []
    for record in records:
        change = _as_json(record["dynamodb"])
        created = record["dynamodb"].get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            change["ApproximateCreationDateTime"] = created.timestamp()
        converted.append({**record, "dynamodb": change, "eventSourceARN": stream_arn})
    return {"Records": converted}


def _as_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value


def stream_filter(criteria: dict[str, Any] | None) -> Callable[[dict[str, Any]], bool]:
    """Lambda's event filtering for a stream event source (``FilterCriteria``): a test of one record, which passes
    when any of the filters' patterns matches it (all pass without filters). Patterns use EventBridge's syntax;
    moto's EventBridge evaluates them."""
    from moto.events.models import EventPattern, EventPatternParser  # noqa: PLC0415 - dev tooling only

    patterns = [
        EventPattern(str(item["Pattern"]), EventPatternParser(str(item["Pattern"])).parse())
        for item in (criteria or {}).get("Filters") or []
    ]

    def passes(record: dict[str, Any]) -> bool:
        return not patterns or any(pattern.matches_event(record) for pattern in patterns)  # type: ignore[arg-type]

    return passes
