"""Measurements that need a fresh interpreter: ``python -m bench.probe MODE MODULE [SAMPLES]``.

``bench.run`` starts this with the function's environment (what Lambda gives it, from template.yaml)
and reads one JSON line from its output.

- ``init MODULE``: import the handler module, which builds its settings and AWS clients, as Lambda's
  init phase does. Reports the milliseconds (wall clock and CPU) and the AWS clients it created.
- ``floor MODULE``: the least any Python function reaching the same services pays: ``import boto3``
  and one client per service.
- ``warm MODULE SAMPLES``: invoke the handler again and again with every AWS call answered by a stub
  (a before-call hook returning a canned answer, so no network and no emulator), and report the CPU
  time (``time.process_time``) per email, and where it goes by package (one profiled pass).

This module imports nothing but a few small standard modules at its top, so that what ``init`` and
``floor`` time is the module under test: everything else is imported where it is used.
"""
# ruff: noqa: PLC0415

from __future__ import annotations

import importlib
import json
import re
import sys
import time
from typing import Any

SERVICES = ("dynamodb", "sqs", "sesv2", "s3", "events", "secretsmanager")


def init(module: str) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    importlib.import_module(module)
    cpu, elapsed = time.process_time() - cpu_started, time.perf_counter() - started
    return {"ms": elapsed * 1000, "cpu_ms": cpu * 1000, "services": _created_services(), "modules": len(sys.modules)}


def _created_services() -> list[str]:
    """The services whose client the import created: asking for them again hits mailqueue.aws's cache."""
    from mailqueue import aws

    created = []
    for service in SERVICES:
        hits = aws.client.cache_info().hits
        aws.client(service)
        if aws.client.cache_info().hits > hits:
            created.append(service)
    return created


def floor(services: list[str]) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    import boto3

    for service in services:
        boto3.client(service)
    cpu, elapsed = time.process_time() - cpu_started, time.perf_counter() - started
    return {"ms": elapsed * 1000, "cpu_ms": cpu * 1000, "services": services, "modules": len(sys.modules)}


# --- warm CPU with AWS stubbed -------------------------------------------------------------------------------


def _stub(samples: dict[str, Any]) -> None:
    """Answer every call of mailqueue's clients from ``samples`` (items the lifecycle run recorded)."""
    from botocore.awsrequest import AWSResponse
    from mailqueue import aws

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["stub_params"] = params

    def answer(model: Any, context: dict[str, Any], **_: Any) -> Any:
        params = context.get("stub_params") or {}
        return AWSResponse("https://stub.local", 200, {}, None), _canned(model.name, params, samples)

    for service in SERVICES:
        events = aws.client(service).meta.events
        events.register("before-parameter-build", remember, unique_id="stub-params")
        events.register("before-call", answer, unique_id="stub-answer")


def _revive(value: Any) -> Any:
    """Binary values come back from the samples file as base64 text; botocore parses them to bytes."""
    import base64

    if isinstance(value, dict):
        if set(value) == {"B"} and isinstance(value["B"], str):
            return {"B": base64.b64decode(value["B"])}
        return {key: _revive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_revive(item) for item in value]
    return value


def _canned(operation: str, params: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    if operation == "BatchGetItem":
        return {"Responses": {name: [] for name in params["RequestItems"]}, "UnprocessedKeys": {}}
    if operation == "BatchWriteItem":
        return {"UnprocessedItems": {}}
    if operation == "GetItem":
        item = dict(samples["content"])
        item["pk"] = params["Key"]["pk"]
        return {"Item": item}
    if operation == "UpdateItem":
        # The value the update sets the status to: "#status = :v0, ..." (see EmailStore.apply).
        placeholder = re.search(r"#status = (:\w+)", params["UpdateExpression"])
        assert placeholder is not None, params["UpdateExpression"]
        status = params["ExpressionAttributeValues"][placeholder.group(1)]["S"]
        item = dict(samples[status])
        item["pk"] = params["Key"]["pk"]
        return {"Attributes": item}
    if operation == "SendMessage":
        return {"MessageId": "00000000-0000-0000-0000-000000000000", "MD5OfMessageBody": "0" * 32}
    if operation == "SendMessageBatch":
        return {
            "Successful": [
                {"Id": entry["Id"], "MessageId": f"m-{entry['Id']}", "MD5OfMessageBody": "0" * 32}
                for entry in params["Entries"]
            ],
            "Failed": [],
        }
    if operation == "SendEmail":
        return {"MessageId": "0100019a-stub"}
    if operation == "GetQueueAttributes":
        # The high-priority queue's backlog, asked by normal-priority senders: empty.
        return {"Attributes": {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}}
    raise RuntimeError(f"no stub for {operation}")


def _events(module: str, emails: int) -> tuple[dict[str, Any], int]:
    """One invocation's event for ``module`` and how many emails it carries."""
    from mailqueue.ids import new_email_id
    from mailqueue_dev.lambda_events import http_api_event

    from bench.emails import typical_email

    headers = {"content-type": "application/json"}
    if module == "api" and emails == 1:
        return http_api_event("POST", "/emails", json.dumps(typical_email(1)), headers), 1
    if module == "api":
        body = {"emails": [typical_email(index) for index in range(emails)]}
        return http_api_event("POST", "/emails/batch", json.dumps(body), headers), emails
    records = [
        {
            "messageId": f"m-{index}",
            "receiptHandle": f"r-{index}",
            "body": json.dumps({"id": new_email_id()}),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:send",
            "awsRegion": "us-east-1",
        }
        for index in range(emails)
    ]
    return {"Records": records}, emails


def _category(filename: str) -> str:
    path = filename.replace("\\", "/")
    for marker, name in (
        ("/layers/shared/mailqueue/", "mailqueue (layer)"),
        ("/functions/", "handler module"),
        ("aws_lambda_powertools/", "Powertools"),
        ("botocore/", "botocore/boto3"),
        ("boto3/", "botocore/boto3"),
        ("pydantic", "pydantic"),
        ("email_validator/", "email_validator"),
        ("/email/", "stdlib email (MIME)"),
        ("ulid/", "python-ulid"),
    ):
        if marker in path:
            return name
    if path.startswith("~") or "<" in path:
        return "builtins"
    return "other stdlib"


def warm(module: str, samples_path: str, emails: int, invocations: int) -> dict[str, Any]:
    import cProfile
    import pstats

    from mailqueue_dev.lambda_events import LambdaContext

    with open(samples_path, encoding="utf-8") as handle:
        samples = _revive(json.load(handle))
    handler_module = importlib.import_module(module)
    _stub(samples)
    handler = handler_module.handler
    # A fresh context per invocation (context.invocation()): one shared context would run out of time
    # after 30 s, and the sender would then leave every message to SQS unsent (NoTimeLeft).
    context = LambdaContext(function_name=f"bench-{module}", timeout_seconds=30)
    events = [_events(module, emails) for _ in range(invocations)]

    # First invocation: what a cold container pays after its init, for work the import left to it.
    started = time.perf_counter()
    first = handler(events[0][0], context.invocation())
    first_ms = (time.perf_counter() - started) * 1000
    _check(module, first)
    for event, _ in events[: max(3, invocations // 5)]:
        handler(event, context.invocation())

    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for event, _ in events:
        handler(event, context.invocation())
    cpu = time.process_time() - cpu_started
    wall = time.perf_counter() - wall_started
    total_emails = sum(count for _, count in events)

    profile = cProfile.Profile()
    profile.enable()
    for event, _ in events:
        handler(event, context.invocation())
    profile.disable()
    by_category: dict[str, float] = {}
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, _, _) in stats.items():
        name = _category(filename)
        by_category[name] = by_category.get(name, 0.0) + own
    profiled = sum(by_category.values()) or 1.0
    floor_parts = {}
    if module == "sender":
        floor_parts = _warm_floor(handler, events[0][0], context, events[0][1], invocations)
    return {
        **floor_parts,
        "cpu_ms_per_email": cpu * 1000 / total_emails,
        "wall_ms_per_email": wall * 1000 / total_emails,
        "emails_per_invocation": emails,
        "invocations": invocations,
        "first_invocation_ms": first_ms,
        "cpu_share_by_package": {name: own / profiled for name, own in sorted(by_category.items())},
    }


def _warm_floor(handler: Any, event: Any, context: Any, emails: int, rounds: int) -> dict[str, Any]:
    """The least CPU any sender doing the same work pays per email, measured beside the handler.

    Two parts, each timed alone: the AWS calls the handler made, with the very parameters it sent,
    replayed on the same (stubbed) clients, so the cost is botocore's own (serialising a request,
    signing it, parsing the answer); and the bench email built as MIME with nothing but the standard
    library's ``email`` package (headers, a text and an HTML part, ``as_bytes``). What the handler
    spends beyond their sum is mailqueue's and Powertools'.
    """
    from botocore import xform_name
    from mailqueue import aws

    from bench.emails import typical_email

    calls: list[tuple[Any, str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.service_model.service_name, model.name, dict(params)))

    clients = {service: aws.client(service) for service in SERVICES}
    for client in clients.values():
        client.meta.events.register("before-parameter-build", record, unique_id="floor-record")
    handler(event, context.invocation())
    for client in clients.values():
        client.meta.events.unregister("before-parameter-build", unique_id="floor-record")
    replays = [(getattr(clients[service], xform_name(operation)), params) for service, operation, params in calls]

    cpu_started = time.process_time()
    for _ in range(rounds):
        for method, params in replays:
            method(**params)
    calls_ms = (time.process_time() - cpu_started) * 1000 / (rounds * emails)

    messages = [typical_email(index) for index in range(emails)]
    cpu_started = time.process_time()
    for _ in range(rounds):
        for email in messages:
            _stdlib_mime(email)
    mime_ms = (time.process_time() - cpu_started) * 1000 / (rounds * emails)
    operations: dict[str, float] = {}
    for service, operation, _ in calls:
        name = f"{service} {operation}"
        operations[name] = operations.get(name, 0.0) + 1 / emails
    return {
        "floor_aws_calls_cpu_ms_per_email": calls_ms,
        "floor_aws_calls_per_email": operations,
        "floor_stdlib_mime_cpu_ms_per_email": mime_ms,
        "floor_cpu_ms_per_email": calls_ms + mime_ms,
    }


def _stdlib_mime(email: dict[str, Any]) -> bytes:
    """The email as the cheapest MIME the standard library builds: its legacy ``email.mime`` classes
    under the default ``compat32`` policy, which skip the modern policy's header parsing and folding
    (under ``EmailMessage`` and the SMTP policy the same message costs about three times as much)."""
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    message = MIMEMultipart("alternative")
    message["From"] = email["from"]
    message["To"] = ", ".join(email["to"])
    message["Subject"] = email["subject"]
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain="example.com")
    message.attach(MIMEText(email["text"], "plain", "utf-8"))
    message.attach(MIMEText(email["html"], "html", "utf-8"))
    return message.as_bytes()


def _check(module: str, answer: Any) -> None:
    """The stubbed handler must do the real work: an accepted email, a batch without failures."""
    if module == "api" and answer.get("statusCode") != 202:
        raise RuntimeError(f"the api answered {answer.get('statusCode')}: {answer.get('body')}")
    if module == "sender" and answer.get("batchItemFailures"):
        raise RuntimeError(f"the sender failed records: {answer}")


def main(argv: list[str]) -> int:
    mode, module, *rest = argv
    if mode == "init":
        result = init(module)
    elif mode == "floor":
        result = floor(rest)
    elif mode == "warm":
        samples_path, emails, invocations = rest[0], int(rest[1]), int(rest[2])
        result = warm(module, samples_path, emails, invocations)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
