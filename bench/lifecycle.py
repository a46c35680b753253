"""Emails through the local stack (moto in server mode), every AWS call counted where it is made.

The handlers run as ``make dev`` runs them (:class:`mailqueue_dev.local.LocalStack`). botocore event
hooks on the clients they share (``mailqueue.aws.client``) and on the SQS client that plays the event
source mapping see every call: the parameters before it, the answer after it. From those the
:class:`Recorder` counts calls by service and operation and turns each into what AWS bills for it:
DynamoDB capacity units from the measured item sizes and the indexes of ``template.yaml`` (it keeps
the last image of every item, so an update's before and after are both known), SQS request chunks,
S3 requests. Each invocation is timed (the hooks' own time taken out) and its log output counted
(Powertools' JSON lines and the EMF metric lines it prints).

Phases, each waited on until every email in it is ``sent``:

- ``single``: emails posted one by one (``POST /emails``);
- ``idempotent``: the same with an ``Idempotency-Key``;
- ``batch``: one ``POST /emails/batch`` of 100;
- ``templated``: the same 100 emails rendered from a stored template (saved in ``template-save``),
  each item giving only its recipient and data;
- ``retry``: a batch whose first SES attempt fails (a 503, transient: a throttle is tried again under
  the claim instead): retrying, requeued, sent;
- ``delivery``: SES's Send and Delivery events for each email of the batch, through the events handler;
- ``throughput``: batches of 100, timed from the first request to the last email sent.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from botocore.awsrequest import AWSResponse
from mailqueue import aws
from mailqueue_dev import emulator as emulator_module
from mailqueue_dev.local import Function, LocalStack

from bench import units
from bench.emails import BENCH_TEMPLATE, templated_email, typical_email, typical_template

ROOT = Path(__file__).resolve().parents[1]
SERVICE_NAME = "mailqueue"
RETRY_TAG = {"name": "bench", "value": "fail-once"}
ESM = "EventSourceMapping"
EVENTS = "EventsFunction"
# The status events' publisher: with the template's default PublishStatuses, each delivery is one event.
NOTIFY = "NotifyFunction"

# Locally: no waiting on the send rate (pacing is costed apart, from the template's settings), and a
# backoff short enough for the retried emails to come back within the run.
BENCH_ENVIRONMENT = {"SEND_RATE": "100000", "BACKOFF_BASE_SECONDS": "1", "BACKOFF_MAX_SECONDS": "2"}

# --- what was recorded --------------------------------------------------------------------------------------


@dataclass
class Call:
    """One AWS API call and what AWS bills for it."""

    phase: str
    scope: str  # the function that made it, or the event source mapping
    service: str
    operation: str
    invocation: int | None = None  # the number of the invocation that made it (Invocation.number)
    error: str | None = None
    wru: float = 0.0
    rru: float = 0.0
    wru_by: dict[str, float] = field(default_factory=dict)  # "table" or "table/index" -> units
    # (table/index, partition key value) -> units: how the index writes spread over partitions
    wru_by_partition: dict[tuple[str, str], float] = field(default_factory=dict)
    sqs_requests: int = 0
    s3_puts: int = 0
    s3_gets: int = 0
    empty: bool = False  # a ReceiveMessage that found nothing: local polling, not per-email work


@dataclass
class Invocation:
    number: int
    phase: str
    function: str
    duration_ms: float
    records: int
    log_bytes: int
    emf_bytes: int
    result: Any = None


@dataclass
class LogLines:
    """Bytes of log output by function and kind of line (a message, or EMF metrics)."""

    bytes_by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    samples: dict[tuple[str, str], str] = field(default_factory=dict)


class _CountingStream(io.TextIOBase):
    """A stream that keeps nothing but the size of what was written, line by line."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self.bytes = 0
        self._pending = ""
        self._on_line = on_line

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8"))
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line.strip():
                self._on_line(line)
        return len(text)

    def flush(self) -> None:
        pass


# --- the recorder -------------------------------------------------------------------------------------------


class Recorder:
    """Counts every call the hooked clients make, and what each costs."""

    def __init__(self, tables: dict[str, units.Table], peek: Any) -> None:
        self.tables = tables  # by physical name
        self.peek = peek  # an unhooked DynamoDB client, to read an image an answer did not return
        self.phase = "setup"
        self.calls: list[Call] = []
        self.invocations: list[Invocation] = []
        self.logs = LogLines()
        self.images: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.item_sizes: dict[str, list[int]] = defaultdict(list)
        self.samples: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self.changed = threading.Condition()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._invocations_started = 0

    # --- hooks ------------------------------------------------------------------------------------------

    def attach(self, client: Any, scope: str | None = None) -> None:
        """Count the calls of ``client``: made by the function being invoked, or by ``scope``."""
        events = client.meta.events
        unique = f"bench-{id(self)}-{id(client)}"
        events.register("before-parameter-build", self._before, unique_id=f"{unique}-before")

        def after(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            self._after(http_response, parsed, model, context, scope)

        events.register("after-call", after, unique_id=f"{unique}-after")

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        started = time.perf_counter()
        context["bench_params"] = copy.deepcopy(params)
        self._add_overhead(time.perf_counter() - started)

    def _after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], scope: str | None
    ) -> None:
        started = time.perf_counter()
        params = context.get("bench_params") or {}
        status = getattr(http_response, "status_code", 200)
        error = parsed.get("Error", {}).get("Code") if status >= 300 else None
        call = Call(
            phase=self.phase,
            scope=scope or getattr(self._local, "function", None) or "unscoped",
            service=model.service_model.service_name,
            operation=model.name,
            invocation=None if scope else getattr(self._local, "invocation", None),
            error=error,
        )
        with self._lock:
            if call.service == "dynamodb":
                self._dynamodb(call, params, parsed)
            elif call.service == "sqs":
                self._sqs(call, params, parsed)
            elif call.service == "s3":
                call.s3_puts = int(call.operation in {"PutObject", "CopyObject", "ListObjectsV2"})
                call.s3_gets = int(call.operation in {"GetObject", "HeadObject"})
            self.calls.append(call)
        self._add_overhead(time.perf_counter() - started)

    def _add_overhead(self, seconds: float) -> None:
        self._local.overhead = getattr(self._local, "overhead", 0.0) + seconds

    # --- DynamoDB ---------------------------------------------------------------------------------------

    def _key(self, table: units.Table, item: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        return table.name, tuple(json.dumps(item[key], sort_keys=True, default=str) for key in table.keys)

    def _dynamodb(self, call: Call, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        operation = call.operation
        if operation in {"PutItem", "UpdateItem", "DeleteItem"}:
            table = self.tables[params["TableName"]]
            key = self._key(table, params.get("Item") or params["Key"])
            old = self.images.get(key)
            if call.error:
                current = old or parsed.get("Item")
                self._charge(call, table, units.failed_write_cost(current))
                return
            if operation == "PutItem":
                new: dict[str, Any] | None = params["Item"]
            elif operation == "DeleteItem":
                old = old or parsed.get("Attributes")
                new = None
            else:
                new = parsed.get("Attributes") if params.get("ReturnValues") == "ALL_NEW" else None
                if new is None:
                    # Not in the answer: read it (unhooked, uncounted, its time taken out of the invocation).
                    new = self.peek.get_item(TableName=table.name, Key=params["Key"], ConsistentRead=True).get("Item")
            self._charge(call, table, units.write_cost(table, old, new))
            self._remember(table, key, new)
        elif operation == "BatchWriteItem":
            unprocessed = parsed.get("UnprocessedItems") or {}
            for name, requests in params["RequestItems"].items():
                table = self.tables[name]
                skipped = [json.dumps(r, sort_keys=True, default=str) for r in unprocessed.get(name, [])]
                for request in requests:
                    if json.dumps(request, sort_keys=True, default=str) in skipped:
                        continue
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        key = self._key(table, item)
                        self._charge(call, table, units.write_cost(table, self.images.get(key), item))
                        self._remember(table, key, item)
                    else:
                        key = self._key(table, request["DeleteRequest"]["Key"])
                        self._charge(call, table, units.write_cost(table, self.images.get(key), None))
                        self._remember(table, key, None)
        elif operation == "TransactWriteItems":
            # A transaction bills each write twice (prepare and commit).
            for entry in params["TransactItems"]:
                ((kind, request),) = entry.items()
                table = self.tables[request["TableName"]]
                if kind not in {"Put", "Update"}:
                    continue
                target = request["Item"] if kind == "Put" else request["Key"]
                key = self._key(table, target)
                new = request["Item"] if kind == "Put" else None
                if new is None and not call.error:
                    new = self.peek.get_item(TableName=table.name, Key=target, ConsistentRead=True).get("Item")
                cost = units.write_cost(table, self.images.get(key), new)
                self._charge(call, table, cost)
                self._charge(call, table, cost)
                if not call.error:
                    self._remember(table, key, new)
        elif operation == "GetItem":
            item = parsed.get("Item")
            call.rru = units.read_units(units.item_size(item) if item else 0, bool(params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for name, request in params["RequestItems"].items():
                consistent = bool(request.get("ConsistentRead"))
                found = parsed.get("Responses", {}).get(name, [])
                missing = len(request["Keys"]) - len(found) - len((parsed.get("UnprocessedKeys") or {}).get(name, {}))
                call.rru += sum(units.read_units(units.item_size(item), consistent) for item in found)
                call.rru += max(0, missing) * units.read_units(0, consistent)
        elif operation in {"Query", "Scan"}:
            sizes = [units.item_size(item) for item in parsed.get("Items", [])]
            call.rru = units.query_read_units(sizes, bool(params.get("ConsistentRead")))

    def _charge(self, call: Call, table: units.Table, cost: units.WriteCost) -> None:
        call.wru += cost.total
        call.wru_by[table.name] = call.wru_by.get(table.name, 0) + cost.table
        for index, value in cost.indexes.items():
            name = f"{table.name}/{index}"
            call.wru_by[name] = call.wru_by.get(name, 0) + value
        for index, spread in cost.partitions.items():
            for partition, value in spread.items():
                key = (f"{table.name}/{index}", partition)
                call.wru_by_partition[key] = call.wru_by_partition.get(key, 0) + value

    def _remember(self, table: units.Table, key: tuple[str, tuple[Any, ...]], item: dict[str, Any] | None) -> None:
        if item is None:
            self.images.pop(key, None)
            return
        self.images[key] = item
        kind = item.get("sk", {}).get("S", "item")
        status = item.get("status", {}).get("S")
        label = f"{table.name}:{kind}" + (f":{status}" if status else "")
        self.item_sizes[label].append(units.item_size(item))
        self.samples.setdefault(label, copy.deepcopy(item))
        if kind == "status" and status:
            with self.changed:
                self.status[item["pk"]["S"]] = status
                self.changed.notify_all()

    # --- SQS --------------------------------------------------------------------------------------------

    def _sqs(self, call: Call, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        operation = call.operation
        if operation == "SendMessage":
            call.sqs_requests = units.sqs_requests(len(params.get("MessageBody", "").encode()))
        elif operation == "SendMessageBatch":
            payload = sum(len(entry.get("MessageBody", "").encode()) for entry in params.get("Entries", []))
            call.sqs_requests = units.sqs_requests(payload)
        elif operation == "ReceiveMessage":
            messages = parsed.get("Messages", [])
            call.empty = not messages
            call.sqs_requests = units.sqs_requests(sum(len(m.get("Body", "").encode()) for m in messages))
        else:
            call.sqs_requests = 1

    # --- invocations ------------------------------------------------------------------------------------

    def wrap(self, function: str, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``handler``, timed and its output counted, its calls attributed to ``function``."""

        def invoke(event: Any, context: Any) -> Any:
            logs = _CountingStream(lambda line: self._log_line(function, line))
            emf = _CountingStream(lambda line: self._log_line(function, line))
            with self._lock:
                number = self._invocations_started
                self._invocations_started += 1
            self._local.function = function
            self._local.invocation = number
            self._local.overhead = 0.0
            started = time.perf_counter()
            result: Any = None
            try:
                with _logger_stream(logs), contextlib.redirect_stdout(emf):
                    result = handler(event, context)
                return result
            finally:
                elapsed = time.perf_counter() - started - self._local.overhead
                self._local.function = None
                self._local.invocation = None
                records = len(event.get("Records", [])) if isinstance(event, dict) else 0
                with self._lock:
                    self.invocations.append(
                        Invocation(number, self.phase, function, elapsed * 1000, records, logs.bytes, emf.bytes, result)
                    )

        return invoke

    def _log_line(self, function: str, line: str) -> None:
        try:
            parsed = json.loads(line)
        except ValueError:
            kind = "text"
        else:
            kind = "EMF metrics" if isinstance(parsed, dict) and "_aws" in parsed else str(parsed.get("message", "?"))
        with self._lock:
            self.logs.bytes_by_kind[(function, kind)] += len(line.encode("utf-8")) + 1
            self.logs.samples.setdefault((function, kind), line)

    # --- waiting ----------------------------------------------------------------------------------------

    def wait_for(self, ids: list[str], status: str, timeout: float) -> None:
        with self.changed:
            done = self.changed.wait_for(lambda: all(self.status.get(i) == status for i in ids), timeout)
        if not done:
            behind = Counter(self.status.get(i, "?") for i in ids if self.status.get(i) != status)
            raise TimeoutError(f"{len(ids)} emails not all {status} after {timeout:.0f}s: {dict(behind)}")

    def wait_for_records(self, function: str, phase: str, count: int, timeout: float) -> None:
        """Wait until ``function``'s invocations of ``phase`` have been handed ``count`` records in all."""
        deadline = time.monotonic() + timeout
        while sum(i.records for i in self.invocations if i.function == function and i.phase == phase) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{function} was not handed {count} records in {phase} after {timeout:.0f}s")
            time.sleep(0.1)

    def quiet(self, seconds: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until no call has been made for ``seconds`` (the event source has deleted what it ran)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            count = len([c for c in self.calls if not c.empty])
            if count == seen:
                return
            seen = count
            time.sleep(seconds)


@contextlib.contextmanager
def _logger_stream(stream: io.TextIOBase) -> Iterator[None]:
    """Point Powertools' log handler (one per service name, shared by every handler) at ``stream``."""
    handlers = [h for h in logging.getLogger(SERVICE_NAME).handlers if isinstance(h, logging.StreamHandler)]
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)


# --- the run ------------------------------------------------------------------------------------------------


def _tables(template: dict[str, Any], names: dict[str, str]) -> dict[str, units.Table]:
    tables: dict[str, units.Table] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        properties = resource["Properties"]
        indexes = tuple(
            units.Index(
                name=index["IndexName"],
                keys=tuple(key["AttributeName"] for key in index["KeySchema"]),
                projection=index["Projection"]["ProjectionType"],
                non_key=tuple(index["Projection"].get("NonKeyAttributes", [])),
            )
            for index in properties.get("GlobalSecondaryIndexes", [])
        )
        name = names[logical_id]
        tables[name] = units.Table(name, tuple(key["AttributeName"] for key in properties["KeySchema"]), indexes)
    return tables


def _fail_once(seen: set[str]) -> Callable[..., Any]:
    """A before-call hook: SES answers 503 to the first attempt of each email tagged for it."""

    def hook(context: dict[str, Any], **_: Any) -> Any:
        params = context.get("bench_params") or {}
        tags = {tag["Name"]: tag["Value"] for tag in params.get("EmailTags", [])}
        email_id = tags.get("email_id")
        if tags.get(RETRY_TAG["name"]) != RETRY_TAG["value"] or not email_id or email_id in seen:
            return None
        seen.add(email_id)
        error = {"Code": "ServiceUnavailable", "Message": "Service is unavailable."}
        return AWSResponse("https://email.local", 503, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 503},
        }

    return hook


def _ses_event(kind: str, email_id: str) -> dict[str, Any]:
    """SES's event of ``kind`` (a sample in events/events/) for one email, as EventBridge delivers it."""
    event: dict[str, Any] = json.loads((ROOT / "events" / "events" / f"{kind}.json").read_text())
    event["id"] = str(uuid.uuid4())
    event["detail"]["mail"]["tags"]["email_id"] = [email_id]
    return event


@dataclass
class LifecycleResult:
    recorder: Recorder
    emails: dict[str, list[str]]  # phase -> email ids
    api_requests: dict[str, int]  # phase -> HTTP requests made
    memory_mb: dict[str, int]
    throughput: dict[str, float]
    requeued: int
    environment: dict[str, str]
    # Emails the sweep phase examined.
    swept: int = 0


def run(
    singles: int = 20, idempotent: int = 10, retried: int = 10, throughput_emails: int = 300, timeout: float = 60.0
) -> LifecycleResult:
    """Run every phase on a fresh local stack; returns what was recorded."""
    # Powertools warns of every invocation that adds no metric (an ignored Send event); Lambda's logs would hide it.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    recorder = Recorder(tables={}, peek=None)
    original_client = emulator_module.Emulator.client

    def esm_client(self: Any, service: str) -> Any:
        # The local stack's SQS pollers play the event source mapping: their calls are billed too.
        client = original_client(self, service)
        if service == "sqs":
            recorder.attach(client, scope=ESM)
        return client

    local = LocalStack(
        api_port=0,
        emulator_port=0,
        outbox_dir=Path(tempfile.mkdtemp(prefix="mailqueue-bench-")) / "outbox",
        requeue_seconds=1.0,
        # The template's own log level, so the log volume is what a deployment writes.
        parameters={"LogLevel": "INFO"},
        environment=dict(BENCH_ENVIRONMENT),
    )
    emulator_module.Emulator.client = esm_client  # type: ignore[method-assign]
    try:
        local.start()
        assert local.stack is not None
        assert local.emulator is not None
        recorder.tables = _tables(local.stack.template, local.stack.names)
        recorder.peek = original_client(local.emulator, "dynamodb")
        for service in ("dynamodb", "sqs", "sesv2", "s3"):
            recorder.attach(aws.client(service))
        aws.client("sesv2").meta.events.register(
            "before-call.sesv2.SendEmail", _fail_once(set()), unique_id="bench-fail-once"
        )
        for function in local.functions.values():
            if function.handler is not None:
                function.handler = recorder.wrap(function.logical_id, function.handler)
        return _phases(local, recorder, singles, idempotent, retried, throughput_emails, timeout)
    finally:
        emulator_module.Emulator.client = original_client  # type: ignore[method-assign]
        local.stop()


def _phases(
    local: Any,
    recorder: Recorder,
    singles: int,
    idempotent: int,
    retried: int,
    throughput_emails: int,
    timeout: float,
) -> LifecycleResult:
    http = requests.Session()
    api = local.api_url
    emails: dict[str, list[str]] = {}
    api_requests: dict[str, int] = {}
    counter = iter(range(1_000_000))

    def post(path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        answer = http.post(f"{api}{path}", json=body, headers=headers or {}, timeout=30)
        if answer.status_code != 202:
            raise RuntimeError(f"POST {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def batch(count: int, templated: bool = False, **overrides: Any) -> list[str]:
        make = templated_email if templated else typical_email
        answer = post("/emails/batch", {"emails": [make(next(counter), **overrides) for _ in range(count)]})
        ids = [result["id"] for result in answer["results"] if result.get("id")]
        if len(ids) != count:
            raise RuntimeError(f"the batch accepted {len(ids)} of {count}: {answer}")
        return ids

    # Warm every function once, so that no phase pays an import or a first connection.
    recorder.phase = "warmup"
    warm = [post("/emails", typical_email(next(counter)))["id"]]
    recorder.wait_for(warm, "sent", timeout)
    recorder.quiet()

    recorder.phase = "single"
    emails["single"] = [post("/emails", typical_email(next(counter)))["id"] for _ in range(singles)]
    api_requests["single"] = singles
    recorder.wait_for(emails["single"], "sent", timeout)
    recorder.quiet()

    recorder.phase = "idempotent"
    emails["idempotent"] = [
        post("/emails", typical_email(next(counter)), {"Idempotency-Key": str(uuid.uuid4())})["id"]
        for _ in range(idempotent)
    ]
    api_requests["idempotent"] = idempotent
    recorder.wait_for(emails["idempotent"], "sent", timeout)
    recorder.quiet()

    recorder.phase = "batch"
    emails["batch"] = batch(100)
    api_requests["batch"] = 1
    recorder.wait_for(emails["batch"], "sent", timeout)
    recorder.quiet()

    recorder.phase = "template-save"
    saved = http.put(f"{api}/templates/{BENCH_TEMPLATE}", json=typical_template(), timeout=30)
    if saved.status_code != 201:
        raise RuntimeError(f"PUT /templates/{BENCH_TEMPLATE} answered {saved.status_code}: {saved.text[:300]}")
    recorder.phase = "templated"
    emails["templated"] = batch(100, templated=True)
    api_requests["templated"] = 1
    recorder.wait_for(emails["templated"], "sent", timeout)
    recorder.quiet()

    recorder.phase = "retry"
    emails["retry"] = batch(retried, tags=[{"name": "kind", "value": "shipping"}, RETRY_TAG])
    api_requests["retry"] = 1
    recorder.wait_for(emails["retry"], "sent", timeout)
    recorder.quiet()
    requeued = sum(
        int((invocation.result or {}).get("requeued_total", 0))
        for invocation in recorder.invocations
        if invocation.phase == "retry" and invocation.function == "RequeueFunction"
    )

    recorder.phase = "delivery"
    events_function = local.functions.get(EVENTS)
    if events_function is None or events_function.handler is None:
        events_function = _events_function(recorder)
    # SES publishes a Send and a Delivery event for every email the configuration set sees.
    for email_id in emails["batch"]:
        local.invoke(events_function, _ses_event("send", email_id))
        local.invoke(events_function, _ses_event("delivery", email_id))
    recorder.wait_for(emails["batch"], "delivered", timeout)
    emails["delivery"] = emails["batch"]
    # The stream's records of those deliveries reach the notify function (the status events) a poll later.
    recorder.wait_for_records(NOTIFY, "delivery", len(emails["batch"]), timeout)
    recorder.quiet()

    recorder.phase = "sweep"
    swept = _sweep(local, recorder, [email_id for ids in emails.values() for email_id in ids] + warm)
    recorder.quiet()

    recorder.phase = "throughput"
    started = time.perf_counter()
    ids: list[str] = []
    for _ in range(max(1, throughput_emails // 100)):
        ids += batch(100)
    recorder.wait_for(ids, "sent", timeout * 3)
    elapsed = time.perf_counter() - started
    emails["throughput"] = ids
    recorder.quiet()

    assert local.stack is not None
    return LifecycleResult(
        recorder=recorder,
        emails=emails,
        api_requests=api_requests,
        memory_mb=_memory(local.stack.template),
        throughput={"emails": len(ids), "seconds": elapsed, "emails_per_second": len(ids) / elapsed},
        requeued=requeued,
        environment=dict(BENCH_ENVIRONMENT),
        swept=swept,
    )


def _sweep(local: Any, recorder: Recorder, ids: list[str]) -> int:
    """One requeue run past the sweep point of every email so far (mailqueue.sweeping): what examining
    an email once costs. The clock is moved forward for the run, as the sweep waits for the queued grace."""
    from mailqueue import clock  # noqa: PLC0415
    from mailqueue.settings import get_settings  # noqa: PLC0415
    from mailqueue.store import EmailStore  # noqa: PLC0415

    store = EmailStore(get_settings(), None)
    later = clock.after(max(store.sweep_point(email_id) for email_id in ids), 1)
    requeue = local.functions["RequeueFunction"]
    event = json.loads((ROOT / "events" / "requeue" / "scheduled.json").read_text())
    real_now = clock.now
    clock.now = lambda: later
    try:
        local.invoke(requeue, event)
    finally:
        clock.now = real_now
    return sum(
        int((invocation.result or {}).get("swept", 0))
        for invocation in recorder.invocations
        if invocation.phase == "sweep" and invocation.function == "RequeueFunction"
    )


def _events_function(recorder: Recorder) -> Any:
    """The events handler, loaded as the local stack loads the template's functions; its clients are the shared ones."""
    folder = ROOT / "functions" / "events"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module("ses_events")
    return Function(EVENTS, folder, "ses_events", "handler", 30.0, recorder.wrap(EVENTS, module.handler))


def _memory(template: dict[str, Any]) -> dict[str, int]:
    default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    memory = {
        logical_id: int(resource["Properties"].get("MemorySize", default))
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    memory.setdefault(EVENTS, default)
    return memory
