"""The faults: botocore hooks on the functions' AWS calls, and requeue runs that overlap."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mailqueue_dev.chaos.ledger import Acceptance, Ledger
from mailqueue_dev.chaos.plan import INDEX_TAG, ChaosConfig, EmailPlan, ses_fault

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


class SenderDied(BaseException):
    """The sender's runtime ends between SES's answer and the ``sent`` write.

    A BaseException, so that no ``except Exception`` in the handler or Powertools catches it: it
    leaves the invocation as a crash would, the claim stays, and the batch returns to the queue.
    """


# --- faults ---------------------------------------------------------------------------------------------------


class _Body:
    """The raw stream of a made-up HTTP response."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def failed_call(status: int, code: str, message: str) -> tuple[Any, dict[str, Any]]:
    """What a before-call hook returns to end the call with an AWS error, as after botocore's retries."""
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    http = AWSResponse("https://chaos.invalid/", status, {}, _Body(b""))
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    return http, parsed


def _body_of(params: dict[str, Any]) -> dict[str, Any]:
    body = params.get("body") or b"{}"
    decoded: dict[str, Any] = json.loads(body.decode() if isinstance(body, bytes) else body)
    return decoded


def _retry_header(request: Any) -> dict[str, str]:
    """botocore's ``amz-sdk-request`` header: which attempt of how many this request is."""
    parts = str(request.headers.get("amz-sdk-request", "")).split(";")
    return dict(part.strip().split("=", 1) for part in parts if "=" in part)


def _attempt(request: Any) -> int:
    return int(_retry_header(request).get("attempt", "1"))


def _raw_body(request: Any) -> bytes:
    body = request.body or b""
    return body if isinstance(body, bytes) else str(body).encode()


def _request_body(request: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(_raw_body(request) or b"{}")
    return decoded


def _json_response(url: str, status: int, error: dict[str, str]) -> Any:
    """A made-up HTTP answer of a JSON-protocol AWS service."""
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": str(uuid.uuid4())}
    return AWSResponse(url, status, headers, _Body(json.dumps(error).encode()))


def _write_of(body: dict[str, Any]) -> str:
    """What a DynamoDB write request is, in the email's life."""
    if "RequestItems" in body:
        keys = {
            request.get("PutRequest", {}).get("Item", {}).get("sk", {}).get("S")
            for requests in body["RequestItems"].values()
            for request in requests
        }
        return "enqueue status" if "status" in keys else "enqueue content"
    values = body.get("ExpressionAttributeValues", {})
    target = values.get(":to", {}).get("S")
    if target == "sending":
        return "claim"
    if ":claim_token" in values:
        return "outcome"
    if ":seen_deadline" in values:
        return "requeue"
    if target in {"queued", "cancelled"}:
        return "cancel or retry"
    if target is not None:
        return "event"
    return "other"


def claim_of(body: dict[str, Any]) -> str | None:
    """The email id, if this UpdateItem request claims an email (moves it to ``sending``)."""
    if body.get("ExpressionAttributeValues", {}).get(":to", {}).get("S") != "sending":
        return None
    email_id = body.get("Key", {}).get("pk", {}).get("S")
    return str(email_id) if email_id else None


def _sent_write_of(body: dict[str, Any]) -> str | None:
    """The email id, if this UpdateItem request records ``sent``."""
    target = body.get("ExpressionAttributeValues", {}).get(":to", {}).get("S")
    if target != "sent":
        return None
    email_id = body.get("Key", {}).get("pk", {}).get("S")
    return str(email_id) if email_id else None


@dataclass
class Injector:
    """The botocore hooks that break the functions' AWS calls, and record what SES accepted."""

    config: ChaosConfig
    plans: list[EmailPlan]
    ledger: Ledger
    on_accepted: Callable[[str, int, Acceptance], None]
    duplicate: Callable[[str, dict[str, Any]], None]
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _ses_attempts: Counter[int] = field(default_factory=Counter, init=False)
    _registered: list[tuple[Any, str, str]] = field(default_factory=list, init=False)
    _clients: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.config.seed}:calls")

    def chance(self, probability: float) -> bool:
        with self._lock:
            return self._rng.random() < probability

    def install(self) -> None:
        from mailqueue import aws  # noqa: PLC0415 - the clients the loaded handlers share

        ses, sqs, dynamodb = aws.client("sesv2"), aws.client("sqs"), aws.client("dynamodb")
        self._clients = {"sqs": sqs, "dynamodb": dynamodb}
        self._register(ses, "before-parameter-build.sesv2.SendEmail", self._ses_params)
        self._register(ses, "before-call.sesv2.SendEmail", self._ses_before)
        # After the local stack's outbox hook: the outbox shows what SES accepted, then the answer is lost.
        self._register(ses, "after-call.sesv2.SendEmail", self._ses_after)
        for operation in ("SendMessage", "SendMessageBatch"):
            self._register(sqs, f"before-parameter-build.sqs.{operation}", self._remember_params)
            self._register(sqs, f"before-call.sqs.{operation}", self._sqs_before)
            self._register(sqs, f"before-send.sqs.{operation}", self._sqs_before_send)
            self._register(sqs, f"after-call.sqs.{operation}", self._sqs_after)
        for operation in DYNAMODB_WRITES:
            self._register(dynamodb, f"before-call.dynamodb.{operation}", self._dynamodb_before_call)
            self._register(dynamodb, f"before-send.dynamodb.{operation}", self._dynamodb_before_send)
            self._register(dynamodb, f"after-call.dynamodb.{operation}", self._dynamodb_after_call)

    def uninstall(self) -> None:
        for client, event, unique_id in self._registered:
            client.meta.events.unregister(event, unique_id=unique_id)
        self._registered.clear()

    def _register(self, client: Any, event: str, handler: Callable[..., Any]) -> None:
        unique_id = f"mailqueue-chaos-{event}"
        client.meta.events.register(event, handler, unique_id=unique_id)
        self._registered.append((client, event, unique_id))

    # --- SES ----------------------------------------------------------------------------------------------

    def _ses_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        tags = {tag.get("Name"): tag.get("Value") for tag in params.get("EmailTags", [])}
        index = tags.get(INDEX_TAG)
        context["chaos_email_id"] = tags.get("email_id")
        context["chaos_index"] = int(index) if index is not None and str(index).isdigit() else None

    def _ses_before(self, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        # When the call started: the claim that led to it was written before this.
        context["chaos_call_sequence"] = self.ledger.next_sequence()
        index = context.get("chaos_index")
        if index is None or not 0 <= index < len(self.plans):
            return None
        with self._lock:
            self._ses_attempts[index] += 1
            attempt = self._ses_attempts[index]
        fault = ses_fault(self.config, self.plans[index], attempt)
        context["chaos_fault"] = fault
        if fault is None:
            return None
        self.ledger.fault(fault)
        if fault == "ses_throttled":
            return failed_call(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if fault == "ses_server_error":
            if attempt % 2:
                return failed_call(500, "InternalFailure", "The request processing has failed.")
            return failed_call(503, "ServiceUnavailable", "Service is unavailable.")
        if fault == "ses_account_paused":
            return failed_call(400, "SendingPausedException", "Email sending is disabled for your account.")
        if fault == "ses_identity_unverified":
            return failed_call(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in region US-EAST-1: "
                "app@example.com",
            )
        if fault == "ses_rejected":
            return failed_call(400, "MessageRejected", "Email address is on the account-level suppression list.")
        if fault == "ses_timeout_before_send":
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        # Timing out after SES accepted, or dying then: the call goes through first.
        return None

    def _ses_after(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 500) >= 300:
            return
        email_id = context.get("chaos_email_id")
        index = context.get("chaos_index")
        if not email_id or index is None:
            return
        fault = context.get("chaos_fault")
        kind = fault if fault in {"ses_timeout_after_accept", "sender_died_after_accept"} else "clean"
        acceptance = self.ledger.ses_accepted(
            str(email_id), str(kind), str(parsed.get("MessageId", "")), context.get("chaos_call_sequence")
        )
        self.on_accepted(str(email_id), int(index), acceptance)
        if fault == "ses_timeout_after_accept":
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        if fault == "sender_died_after_accept":
            raise SenderDied(email_id)

    # --- SQS ----------------------------------------------------------------------------------------------

    def _remember_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["chaos_params"] = dict(params)

    def _sqs_before(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if not self.chance(self.config.faults.sqs_publish_fails):
            return None
        entries = len(_body_of(params).get("Entries", [None]))
        self.ledger.fault("sqs_publish_failed")
        self.ledger.fault("sqs_publish_failed_messages", entries)
        return failed_call(500, "InternalError", "We encountered an internal error. Please try again.")

    def _sqs_before_send(self, request: Any, **_: Any) -> Any:
        """SQS took the messages, but its answer is an error: botocore publishes them again, or the call fails."""
        if not self.chance(self.config.faults.sqs_delivered_then_error):
            return None
        self._clients["sqs"]._endpoint.http_session.send(request)
        self.ledger.fault("sqs_delivered_then_error")
        error = {"__type": "com.amazonaws.sqs#InternalError", "message": "We encountered an internal error."}
        return _json_response(request.url, 500, error)

    def _sqs_after(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 500) >= 300:
            return
        params = context.get("chaos_params") or {}
        queue_url = str(params.get("QueueUrl", ""))
        if "Entries" in params:
            succeeded = {entry.get("Id") for entry in parsed.get("Successful", [])}
            messages = [entry for entry in params["Entries"] if entry.get("Id") in succeeded]
        else:
            messages = [params]
        for message in messages:
            if self.chance(self.config.faults.sqs_delivers_twice):
                self.ledger.fault("sqs_delivered_twice")
                self.duplicate(
                    queue_url,
                    {"MessageBody": message["MessageBody"], "DelaySeconds": int(message.get("DelaySeconds", 0))},
                )

    # --- DynamoDB -----------------------------------------------------------------------------------------

    def _dynamodb_before_call(
        self, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> tuple[Any, dict[str, Any]] | None:
        # When the write was requested: a claim counts from here (it may land any time after).
        context["chaos_requested"] = self.ledger.next_sequence()
        context["chaos_claim"] = claim_of(_body_of(params))
        if not self.chance(self.config.faults.dynamodb_write_fails):
            return None
        self.ledger.fault("dynamodb_write_failed")
        email_id = _sent_write_of(_body_of(params))
        if email_id:
            self.ledger.fault("dynamodb_sent_write_failed")
            self.ledger.sent_write_failed(email_id)
        return failed_call(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        )

    def _dynamodb_after_call(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 500) >= 300:
            return
        claim = context.get("chaos_claim")
        if claim is not None:
            self.ledger.claimed(claim, int(context["chaos_requested"]))

    def _dynamodb_before_send(self, request: Any, **_: Any) -> Any:
        body = _request_body(request)
        lost = self._answer_lost(request, body)
        if lost is not None:
            raise lost
        if not self.chance(self.config.faults.dynamodb_throttled_once):
            return None

        retry = _retry_header(request)
        if retry.get("attempt") and retry.get("attempt") == retry.get("max"):
            # The last attempt throttled too: the call fails, as a throttled write that botocore gave up on.
            self.ledger.fault("dynamodb_write_failed")
            email_id = _sent_write_of(body)
            if email_id:
                self.ledger.fault("dynamodb_sent_write_failed")
                self.ledger.sent_write_failed(email_id)
        else:
            self.ledger.fault("dynamodb_throttled_then_retried")
        error = {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded.",
        }
        return _json_response(request.url, 400, error)

    def _answer_lost(self, request: Any, body: dict[str, Any]) -> Exception | None:
        """The write reaches DynamoDB and lands, but its answer is lost: a read timeout or a reset connection.

        Per attempt (botocore tries again: a put lands again, a conditional write finds its own
        write), or for every attempt of one request (the call fails after the write landed).
        """
        what = _write_of(body)
        faults = self.config.faults
        digest = hashlib.sha256(_raw_body(request)).hexdigest()
        every_attempt = faults.dynamodb_call_answer_lost
        if what.startswith("enqueue"):
            every_attempt = faults.enqueue_answer_lost
        if random.Random(f"{self.config.seed}:lost:{digest}").random() < every_attempt:
            kind = "dynamodb_call_answer_lost"
        elif self.chance(faults.dynamodb_answer_lost_once):
            kind = "dynamodb_answer_lost_once"
        else:
            return None
        from botocore.exceptions import ConnectionClosedError, ReadTimeoutError  # noqa: PLC0415

        requested = self.ledger.next_sequence()
        response = self._clients["dynamodb"]._endpoint.http_session.send(request)
        claim = claim_of(body)
        if claim is not None and 200 <= int(response.status_code) < 300:
            self.ledger.claimed(claim, requested)
        if kind != "dynamodb_call_answer_lost" or _attempt(request) == 1:
            # A request whose every answer is lost counts once, at its first attempt.
            self.ledger.fault(kind)
            self.ledger.fault(f"{kind}: {what}")
        lost: Exception = ReadTimeoutError(endpoint_url=request.url)
        if int(digest[0], 16) % 2:  # either way, by the request
            lost = ConnectionClosedError(endpoint_url=request.url)
        return lost


# --- overlapping requeue runs -----------------------------------------------------------------------------------


@dataclass
class OverlappingRequeues:
    """Every ``every`` seconds, two requeue runs at once (as two containers would), beside the schedule."""

    run: Callable[[], Any]
    every: float
    ledger: Ledger
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaos-requeue-pairs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            pair = [threading.Thread(target=self._one, name=f"chaos-requeue-{n}", daemon=True) for n in (1, 2)]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join()
            self.ledger.fault("requeue_runs_overlapped")

    def _one(self) -> None:
        try:
            self.run()
        except Exception as error:  # a fault struck the run: the next one picks up what it left
            with self.ledger.lock:
                self.ledger.requeue_runs[f"failed: {type(error).__name__}"] += 1
        else:
            with self.ledger.lock:
                self.ledger.requeue_runs["finished"] += 1
