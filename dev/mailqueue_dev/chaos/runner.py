"""One run: start the local stack, enqueue under faults, wait for the drain, count."""

from __future__ import annotations

import contextlib
import importlib
import logging
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailqueue_dev.chaos.count import Count, _moto_sends
from mailqueue_dev.chaos.event_bus import EventBus, ses_event
from mailqueue_dev.chaos.faults import Injector, OverlappingRequeues, SenderDied
from mailqueue_dev.chaos.ledger import Acceptance, Ledger
from mailqueue_dev.chaos.plan import ChaosConfig, EmailPlan, enqueue_units, plan_emails
from mailqueue_dev.chaos.report import ChaosReport
from mailqueue_dev.local import LocalStack

if TYPE_CHECKING:
    from mailqueue.records import StatusRecord

REPOSITORY = Path(__file__).resolve().parents[2]


# --- the run --------------------------------------------------------------------------------------------------


class ChaosRun:
    """One run: start the stack, enqueue under faults, wait for the drain, count."""

    def __init__(self, config: ChaosConfig, workdir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda _: None)
        self.workdir = workdir
        self.plans = plan_emails(config)
        self.ledger = Ledger()
        self._plain_clients: dict[str, Any] = {}
        self._timers: list[threading.Timer] = []
        self.local = LocalStack(
            api_port=0,
            emulator_port=0,
            outbox_dir=workdir / "outbox",
            requeue_seconds=config.timings.requeue_every,
            poll_interval=0.05,
            identities=("example.com",),
            # The pace of SES is not what this run measures.
            parameters={"SendRate": "10000", "LogLevel": "ERROR"},
            environment={**config.timings.environment(), "POWERTOOLS_LOG_LEVEL": config.log_level},
            metrics_file=workdir / "metrics.log",
        )

    def run(self) -> ChaosReport:
        started = time.monotonic()
        report = ChaosReport(emails=self.config.emails, seed=self.config.seed)
        quiet = _quiet_loggers()
        try:
            with quiet, self.local:
                self._run(report)
        finally:
            report.seconds_total = time.monotonic() - started
        return report

    def _run(self, report: ChaosReport) -> None:
        local = self.local
        plain_sqs = self._plain("sqs")
        self._crash_like_a_runtime()
        bus = EventBus(self._events_invoker(), self.config.timings.event_retry_delays, self.ledger)
        injector = Injector(
            self.config,
            self.plans,
            self.ledger,
            on_accepted=lambda email_id, index, acceptance: self._emit_events(bus, email_id, index, acceptance),
            duplicate=lambda queue_url, message: plain_sqs.send_message(QueueUrl=queue_url, **message),
        )
        requeue = sys.modules[local.functions["RequeueFunction"].module_name]
        overlaps = OverlappingRequeues(
            lambda: requeue.requeuer.run(lambda: 60_000), self.config.timings.overlap_every, self.ledger
        )
        # The module the API function's enqueue runs in: its limit on SQS's delay, shortened for the run.
        service: Any = importlib.import_module("mailqueue.service")
        longest_delay = service.MAX_DELAY_SECONDS
        service.MAX_DELAY_SECONDS = self.config.timings.sqs_max_delay_seconds
        injector.install()
        bus.start()
        overlaps.start()
        try:
            enqueue_started = time.monotonic()
            self._enqueue_all()
            last_enqueue = time.monotonic()
            for timer in self._timers:
                timer.join()
            drained = self._wait_for_drain()
            if drained:
                # Failed emails retried by request, once the first drain is over.
                self._retry_failed()
                drained = self._wait_for_drain()
            finished = time.monotonic()
        finally:
            overlaps.stop()
            waiting = bus.stop()
            injector.uninstall()
            service.MAX_DELAY_SECONDS = longest_delay
        if waiting:
            self.ledger.events["still on their way when the run ended"] = waiting
        report.seconds_to_drain = finished - enqueue_started
        report.event_latest_seconds = bus.latest
        report.seconds_after_last_enqueue = finished - last_enqueue
        if not drained:
            report.problems.append(f"the queue did not drain in {self.config.drain_timeout:.0f} s")
        records = self._status_records()
        moto_sends = _moto_sends()
        self._count(report, records, moto_sends)

    # --- the pieces --------------------------------------------------------------------------------------------

    def _crash_like_a_runtime(self) -> None:
        """A sender that dies ends its invocation with an error: Lambda returns the whole batch to the queue."""
        function = self.local.functions["SenderFunction"]
        handler = function.handler
        assert handler is not None

        def runtime(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            except SenderDied:
                raise RuntimeError("the sender's runtime exited mid-batch") from None

        function.handler = runtime

    def _events_invoker(self) -> Callable[[dict[str, Any]], Any]:
        """What the events function does with one event, beside the other functions rather than in turn.

        On AWS the events function runs concurrently with the senders; the local stack's invocations
        take turns (Powertools keeps metrics per process), which would hold SES's events back behind
        every sender batch. So the event goes to the handler module's domain object, ``events``, with
        the handler's clients (faults included), and its Powertools wrapping is left out.
        """
        function = self.local.functions.get("EventsFunction") or getattr(self.local, "events_function", None)
        if function is not None and function.module_name in sys.modules:
            module = sys.modules[function.module_name]
        else:
            folder = REPOSITORY / "functions" / "events"
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            # Afresh, as a new container would: its clients are the ones the faults are hooked on.
            if "ses_events" in sys.modules:
                module = importlib.reload(sys.modules["ses_events"])
            else:
                module = importlib.import_module("ses_events")
        events = module.events
        handle: Callable[[dict[str, Any]], Any] = events.handle
        return handle

    def _emit_events(self, bus: EventBus, email_id: str, index: int, acceptance: Acceptance) -> None:
        draw = random.Random(f"{self.config.seed}:events:{index}:{acceptance.sequence}")
        faults = self.config.faults
        recipient = f"r{index}@example.org"
        send_delay = draw.uniform(0.05, 0.6)
        delivery_delay = draw.uniform(0.3, 1.5)
        if draw.random() < faults.delivery_before_send:
            send_delay, delivery_delay = delivery_delay + 0.2, min(send_delay, delivery_delay)
        due: list[tuple[dict[str, Any], float]] = []
        if draw.random() < faults.send_event_lost:
            self.ledger.event("Send lost")
        else:
            due.append((ses_event("Send", email_id, acceptance.message_id, recipient), send_delay))
        if draw.random() < faults.delivery_event:
            due.append((ses_event("Delivery", email_id, acceptance.message_id, recipient), delivery_delay))
            if len(due) == 2 and delivery_delay < send_delay:
                self.ledger.fault("delivery_before_send")
        for event, delay in due:
            bus.publish(event, delay)
            if draw.random() < faults.event_delivered_twice:
                # EventBridge delivers at least once: the same event again, a little later.
                self.ledger.fault("event_delivered_twice")
                bus.publish(event, delay + draw.uniform(0.05, 2.0))
        if due:
            with self.ledger.lock:
                self.ledger.with_events.add(acceptance.message_id)

    def _enqueue_all(self) -> None:
        import requests  # noqa: PLC0415

        step = max(1, self.config.emails // 10)
        reported = 0
        with requests.Session() as http:
            for unit in enqueue_units(self.plans, self.config.seed):
                if len(self.ledger.accepted) >= reported + step:
                    reported = len(self.ledger.accepted) // step * step
                    self.progress(f"accepted {len(self.ledger.accepted)} of {self.config.emails}")
                if len(unit) == 1:
                    email_id = self._enqueue_one(http, unit[0])
                    if email_id and unit[0].cancel == "racing":
                        delay = random.Random(f"{self.config.seed}:cancel:{unit[0].index}").uniform(0.0, 3.0)
                        timer = threading.Timer(delay, self._cancel, (None, email_id))
                        timer.start()
                        self._timers.append(timer)
                    elif email_id and unit[0].cancel:
                        self._cancel(http, email_id)
                else:
                    self._enqueue_batch(http, unit)

    def _post(self, http: Any, path: str, body: Any, plans: list[EmailPlan]) -> tuple[int, Any]:
        """POST, trying again while the API answers 503 (it stored nothing), as a client should.

        An answer that never comes (the client's timeout: a very busy machine), or a `503`
        ``unconfirmed`` (storage could not tell whether the email was stored), is not sent again: the
        emails may be stored, and the count adopts those it finds (status 0 here).
        """
        import requests  # noqa: PLC0415

        for attempt in range(10):
            try:
                answer = http.post(f"{self.local.api_url}{path}", json=body, timeout=60)
            except requests.RequestException:
                self._unanswered("API answer lost at the client (not sent again)", plans)
                return 0, None
            if answer.status_code != 503:
                return answer.status_code, answer.json() if answer.content else None
            if (answer.json() if answer.content else {}).get("error", {}).get("code") == "unconfirmed":
                self._unanswered("API answered 503 unconfirmed (may be stored; not sent again)", plans)
                return 0, None
            self.ledger.event("API answered 503 (nothing stored; sent again)")
            time.sleep(0.05 * (attempt + 1))
        return answer.status_code, answer.json() if answer.content else None

    def _unanswered(self, why: str, plans: list[EmailPlan]) -> None:
        self.ledger.event(why)
        with self.ledger.lock:
            self.ledger.unanswered.update(plan.index for plan in plans)

    def _enqueue_one(self, http: Any, plan: EmailPlan) -> str | None:
        status, body = self._post(http, "/emails", plan.request(datetime.now(UTC)), [plan])
        if status == 202 and body and body.get("id"):
            self._accepted(body["id"], plan)
            return str(body["id"])
        if status == 0:
            return None
        self.ledger.api_errors.append(f"POST /emails for email {plan.index}: {status} {body}")
        return None

    def _enqueue_batch(self, http: Any, plans: list[EmailPlan]) -> None:
        pending = plans
        for _ in range(10):
            now = datetime.now(UTC)
            emails = [plan.request(now) for plan in pending]
            status, body = self._post(http, "/emails/batch", {"emails": emails}, pending)
            if status == 0:
                return
            if status != 202 or not body:
                self.ledger.api_errors.append(f"POST /emails/batch of {len(pending)}: {status} {body}")
                return
            again = []
            for result in body["results"]:
                plan = pending[result["index"]]
                if result.get("id"):
                    self._accepted(result["id"], plan)
                elif (result.get("error") or {}).get("code") == "unconfirmed":
                    self._unanswered("batch item unconfirmed (may be stored; not sent again)", [plan])
                elif (result.get("error") or {}).get("code") == "not_stored":
                    again.append(plan)
                else:
                    self.ledger.api_errors.append(f"batch item {plan.index}: {result.get('error')}")
            if not again:
                return
            self.ledger.event("batch items not stored (sent again)")
            pending = again
        self.ledger.api_errors.append(f"{len(pending)} batch items could not be stored in ten tries")

    def _accepted(self, email_id: str, plan: EmailPlan) -> None:
        with self.ledger.lock:
            self.ledger.accepted[email_id] = plan.index
            self.ledger.accepted_at[email_id] = time.monotonic()

    def _cancel(self, http: Any, email_id: str) -> None:
        import requests  # noqa: PLC0415

        for attempt in range(10):
            answer = (http or requests).delete(f"{self.local.api_url}/emails/{email_id}", timeout=60)
            if answer.status_code != 503:
                break
            time.sleep(0.05 * (attempt + 1))
        with self.ledger.lock:
            self.ledger.cancel_answers[email_id] = answer.status_code

    def _retry_failed(self) -> None:
        """Retry every failed email by request, as an operator would once a fault has passed."""
        import requests  # noqa: PLC0415

        failed = [email_id for email_id, record in self._status_records().items() if record.status == "failed"]
        with requests.Session() as http:
            for email_id in failed:
                for attempt in range(10):
                    answer = http.post(f"{self.local.api_url}/emails/{email_id}/retry", timeout=60)
                    if answer.status_code != 503:
                        break
                    time.sleep(0.05 * (attempt + 1))
                with self.ledger.lock:
                    self.ledger.retried[email_id] = answer.status_code

    def _plain(self, service: str) -> Any:
        """A client of the emulator that no fault reaches: what an operator looking at the stack sees."""
        if service not in self._plain_clients:
            assert self.local.emulator is not None
            self._plain_clients[service] = self.local.emulator.client(service)
        return self._plain_clients[service]

    def _table(self) -> str:
        assert self.local.stack is not None
        return str(self.local.stack.names["EmailsTable"])

    def _live_count(self) -> int:
        dynamodb = self._plain("dynamodb")
        table = self._table()
        count, start = 0, None
        while True:
            # Live emails, and only they, carry a deadline (most of them are in no index: see mailqueue.store).
            params: dict[str, Any] = {
                "TableName": table,
                "Select": "COUNT",
                "FilterExpression": "sk = :status AND attribute_exists(deadline)",
                "ExpressionAttributeValues": {":status": {"S": "status"}},
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = dynamodb.scan(**params)
            count += int(answer.get("Count", 0))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return count

    def _wait_for_drain(self) -> bool:
        deadline = time.monotonic() + self.config.drain_timeout
        told = time.monotonic()
        while time.monotonic() < deadline:
            live = self._live_count()
            if live == 0:
                return True
            if time.monotonic() - told >= 5:
                self.progress(f"{live} emails still live")
                told = time.monotonic()
            time.sleep(0.25)
        return False

    def _status_records(self) -> dict[str, StatusRecord]:
        """Every status record, read past the faults: what an operator looking at the table sees."""
        from mailqueue.records import STATUS_KIND, StatusRecord  # noqa: PLC0415
        from mailqueue.store import decoded  # noqa: PLC0415

        dynamodb = self._plain("dynamodb")
        table = self._table()
        records: dict[str, StatusRecord] = {}
        start = None
        while True:
            params: dict[str, Any] = {
                "TableName": table,
                "FilterExpression": "sk = :status",
                "ExpressionAttributeValues": {":status": {"S": STATUS_KIND}},
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = dynamodb.scan(**params)
            for item in answer.get("Items", []):
                record = StatusRecord.from_item(decoded(item))
                records[record.email_id] = record
            start = answer.get("LastEvaluatedKey")
            if not start:
                return records

    # --- counting ----------------------------------------------------------------------------------------------

    def _count(self, report: ChaosReport, records: dict[str, StatusRecord], moto_sends: dict[str, list[str]]) -> None:
        Count(self.config, self.plans, self.ledger).count(report, records, moto_sends)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The local stack logs each failed batch with its trace: here they are the point, and counted."""
    logger = logging.getLogger("mailqueue_dev.local")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(config: ChaosConfig, workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> ChaosReport:
    """Run the chaos run of ``config``; its outbox and metrics go to ``workdir`` (a temporary folder if None)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return ChaosRun(config, workdir, progress).run()
    with tempfile.TemporaryDirectory(prefix="mailqueue-chaos-") as folder:
        return ChaosRun(config, Path(folder), progress).run()
