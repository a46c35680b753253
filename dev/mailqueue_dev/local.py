"""The whole queue on one machine: ``python -m mailqueue_dev.local`` (what ``make dev`` runs).

One process, a few threads, no Docker and no AWS account:

- moto in server mode on loopback, the AWS that every handler talks to (``AWS_ENDPOINT_URL``);
- the tables, queues and bucket of ``template.yaml``, built by :mod:`mailqueue_dev.template`;
- the API on http://127.0.0.1:3000, each request handed to the API function as an HTTP API v2 event;
- a poller per SQS event source, feeding batches to its function as the event source mapping does;
- each scheduled function on a short local schedule;
- an outbox: every email SES accepted, written as ``<email id>.eml``;
- SES's events for each accepted email (Send, then Delivery, Bounce or Complaint, see
  :mod:`mailqueue_dev.ses_simulator`), handed to the events function as EventBridge would;
- a poller per DynamoDB stream event source (the emails table's, for the status events), feeding the
  records that pass its ``FilterCriteria`` to its function in order, with partial batch failures.

Everything is read from the template (functions, handlers, environments, event sources), so the
local stack runs the same handler code, with the same settings, as Lambda does.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

from mailqueue_dev import emulator, lambda_events, running, ses_simulator, snapshot
from mailqueue_dev.template import TEMPLATE, Stack, build

log = logging.getLogger("mailqueue_dev.local")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 3000
DEFAULT_EMULATOR_PORT = 4566
DEFAULT_OUTBOX = Path(".mailqueue") / "outbox"
DEFAULT_REQUEUE_SECONDS = 5.0
# A message its function reported as failed is visible again after this long, not after the queue's
# visibility timeout (minutes): locally, a retry should be seen at once.
LOCAL_RETRY_VISIBILITY_SECONDS = 1
# The events function, where the template does not define it: SES events go to this handler.
EVENTS_FOLDER = TEMPLATE.parent / "functions" / "events"
EVENTS_HANDLER = "ses_events.handler"
# An SES event for an email whose send the sender has not recorded yet is handed over again this soon,
# for this long (on AWS, the function raises and Lambda retries the asynchronous invocation).
SES_EVENT_RETRY_SECONDS = 0.1
SES_EVENT_GIVE_UP_SECONDS = 60.0
# Lambda retries a failed asynchronous invocation twice, then drops the event.
ASYNC_RETRIES = 2
# A stream batch that failed is handed over again this soon (on AWS, Lambda retries it with backoff) ...
STREAM_RETRY_SECONDS = 0.5
# ... at most this many times, when the event source does not say (its MaximumRetryAttempts).
STREAM_RETRIES = 10

# What differs locally from Lambda, beyond AWS_ENDPOINT_URL:
LOCAL_ENVIRONMENT = {
    # No X-Ray daemon here.
    "POWERTOOLS_TRACE_DISABLED": "1",
    # One sender invocation runs at a time, whatever queue fed it (see LocalStack.invoke), so it may use
    # the whole send rate; on Lambda it is shared by MaximumConcurrency invocations on each send queue.
    "SENDER_CONCURRENCY": "1",
    # and a normal-priority invocation waiting for the high-priority queue to empty would hold the turn
    # the high-priority invocation needs to empty it. (`make bench` measures priority with invocations
    # that run at once, as on Lambda: bench/send_rate.py.)
    "HIGH_PRIORITY_FIRST": "0",
}


class PortInUse(RuntimeError):
    pass


@dataclass
class Function:
    """One function of the template, and its handler once imported."""

    logical_id: str
    folder: Path
    module_name: str
    attribute: str
    timeout: float
    handler: Callable[[dict[str, Any], Any], Any] | None = None
    missing: str | None = None


@dataclass
class Route:
    """An HttpApi event of a function: a method and a path template such as /emails/{email_id} or /{proxy+}."""

    method: str
    pattern: re.Pattern[str]
    function: Function
    path: str = ""

    @classmethod
    def of(cls, method: str, path: str, function: Function) -> Route:
        # {name+} takes the rest of the path, {name} one segment; each is a named group for pathParameters
        regex = re.sub(r"\\\{([^/]+?)\\\+\\\}", r"(?P<\1>.+)", re.escape(path))
        regex = re.sub(r"\\\{([^/]+?)\\\}", r"(?P<\1>[^/]+)", regex)
        return cls(method.upper(), re.compile(f"^{regex}$"), function, path)

    @property
    def key(self) -> str:
        """API Gateway's route key, as the function's event carries it: ``POST /emails``, ``ANY /{proxy+}``."""
        return f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[bool, bool, int]:
        """API Gateway's precedence, lowest first: a greedy path last, then ANY after a method, then variables."""
        return ("+}" in self.path, self.method == "ANY", self.path.count("{"))

    def matches(self, method: str, path: str) -> bool:
        return self.method in {"ANY", method.upper()} and bool(self.pattern.match(path))

    def parameters(self, path: str) -> dict[str, str]:
        """The path's values for the route's variables (API Gateway's pathParameters)."""
        match = self.pattern.match(path)
        return dict(match.groupdict()) if match else {}


@dataclass
class Poller:
    """An SQS event source mapping: receive a batch, invoke, delete what succeeded."""

    function: Function
    queue_url: str
    queue_arn: str
    batch_size: int
    reports_item_failures: bool
    # The function is given its queue's URL: it sets a failed message's visibility itself (its backoff), so a
    # failure it reports is left as it is, as Lambda does, not made visible again at once.
    sets_visibility: bool = False


@dataclass
class StreamPoller:
    """A DynamoDB stream event source mapping: read the stream in order, keep what its filter passes, invoke."""

    function: Function
    stream_arn: str
    batch_size: int
    passes: Callable[[dict[str, Any]], bool]
    reports_item_failures: bool
    # Lambda's MaximumRetryAttempts: a batch that still fails then is dropped (on AWS, described in the
    # on-failure destination).
    retries: int = STREAM_RETRIES
    delivered: int = 0
    dropped: int = 0


@dataclass
class Schedule:
    """One of a function's schedules (its event's name in the template), played every ``every`` seconds."""

    function: Function
    every: float
    name: str = "Schedule"
    # The schedule's Input: EventBridge Scheduler hands it to the function as the event (None: its default event).
    input: str | None = None

    def event(self) -> Any:
        return lambda_events.scheduler_event(self.input)


@dataclass
class _PendingEvents:
    """The SES events of one accepted send, still to be handed over, in order."""

    email_id: str
    events: list[dict[str, Any]]
    since: float
    due: float = 0.0
    errors: int = 0


def _not_yet_recorded(error: BaseException) -> bool:
    # By name: a test or a new container may have imported mailqueue.ses_events afresh since.
    return any(kind.__name__ == "NotYetRecorded" for kind in type(error).__mro__)


class SesEventPublisher:
    """Hands SES's events to the events function, one invocation at a time, as EventBridge would.

    ``put`` may be called from inside the sender's invocation (the SendEmail hook); the events are
    handed over from ``run``'s thread once that invocation ended, so the sender has recorded ``sent``.
    An event the function cannot apply yet (``NotYetRecorded``: the email is still ``sending``) is
    handed over again shortly, with the events after it, so one email's events keep their order.
    """

    IDLE_SECONDS = 0.2

    def __init__(
        self,
        invoke: Callable[[dict[str, Any]], Any],
        retry_seconds: float = SES_EVENT_RETRY_SECONDS,
        give_up_seconds: float = SES_EVENT_GIVE_UP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._invoke = invoke
        self._retry_seconds = retry_seconds
        self._give_up_seconds = give_up_seconds
        self._clock = clock
        self._incoming: queue.SimpleQueue[_PendingEvents] = queue.SimpleQueue()
        self._waiting: list[_PendingEvents] = []
        self.published = 0
        self.dropped = 0

    def put(self, email_id: str, events: list[dict[str, Any]]) -> None:
        self._incoming.put(_PendingEvents(email_id, list(events), since=self._clock()))

    @property
    def pending(self) -> int:
        """Sends whose events are not all handed over yet."""
        return len(self._waiting) + self._incoming.qsize()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.step()
            if delay > 0:
                with contextlib.suppress(queue.Empty):
                    self._waiting.append(self._incoming.get(timeout=delay))

    def step(self) -> float:
        """Hand over every event that is due; the seconds until the next one is."""
        while True:
            try:
                self._waiting.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        now = self._clock()
        due = [pending for pending in self._waiting if pending.due <= now]
        self._waiting = [pending for pending in self._waiting if pending.due > now]
        for pending in due:
            if not self._hand_over(pending):
                self._waiting.append(pending)
        if not self._waiting:
            return self.IDLE_SECONDS
        return min(self.IDLE_SECONDS, max(0.0, min(p.due for p in self._waiting) - self._clock()))

    def _hand_over(self, pending: _PendingEvents) -> bool:
        """Invoke the function with each event in turn; False when the rest must wait."""
        while pending.events:
            event = pending.events[0]
            try:
                self._invoke(event)
            except Exception as error:
                now = self._clock()
                if _not_yet_recorded(error):
                    if now - pending.since < self._give_up_seconds:
                        pending.due = now + self._retry_seconds
                        return False
                    log.warning(
                        "%s is still sending after %.0fs: %d SES events dropped",
                        pending.email_id,
                        now - pending.since,
                        len(pending.events),
                    )
                    self.dropped += len(pending.events)
                    return True
                pending.errors += 1
                if pending.errors <= ASYNC_RETRIES:
                    pending.due = now + self._retry_seconds
                    return False
                log.error(
                    "the events function failed %s for %s %d times; event dropped:\n%s",
                    event.get("detail", {}).get("eventType"),
                    pending.email_id,
                    pending.errors,
                    _short_trace(),
                )
                self.dropped += 1
            else:
                self.published += 1
            pending.events.pop(0)
            pending.errors = 0
        return True


@dataclass
class LocalStack:
    """The template's resources in moto, its functions behind a local API, pollers and schedules.

    ``start()`` and ``stop()``, or use it as a context manager. Ports of 0 pick free ones.
    ``parameters`` override the template's parameters; ``environment`` overrides the functions'
    environment after the template's (e.g. ``{"BACKOFF_BASE_SECONDS": "1"}``).
    ``ses_events`` makes SES's events of each accepted send reach the events function (``make dev`` turns it
    on, see :func:`from_environment`); off, emails stay ``sent``, for runs that hand over events themselves.
    """

    api_port: int = DEFAULT_API_PORT
    emulator_port: int = DEFAULT_EMULATOR_PORT
    outbox_dir: Path = DEFAULT_OUTBOX
    requeue_seconds: float = DEFAULT_REQUEUE_SECONDS
    poll_interval: float = 0.2
    identities: tuple[str, ...] = ("example.com",)
    parameters: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    host: str = DEFAULT_HOST
    # Where the functions' EMF metric lines go (CloudWatch reads them on Lambda); None leaves them on stdout.
    metrics_file: Path | None = None
    ses_events: bool = False
    # The SES account's maximum send rate (recipients a second) that the emulated SES enforces, answering
    # TooManyRequestsException beyond it as SES does; None takes every send.
    ses_max_send_rate: float | None = None
    # Where the running stack says where it is (stack.json, for the CLI and `invoke`); None writes nothing.
    state_dir: Path | None = None
    # Keep the tables and buckets in state_dir/data across restarts (see mailqueue_dev.snapshot); `clean`
    # starts from nothing instead (and empties the outbox), as a fresh `sam deploy` would.
    persist: bool = False
    clean: bool = False
    # Where every published status event is POSTed, signed with webhook_secret (the WebhookUrls parameter);
    # None: no webhooks (see docs/webhooks.md).
    webhook_url: str | None = None
    webhook_secret: str = ""

    stack: Stack | None = field(default=None, init=False)
    functions: dict[str, Function] = field(default_factory=dict, init=False)
    routes: list[Route] = field(default_factory=list, init=False)
    pollers: list[Poller] = field(default_factory=list, init=False)
    stream_pollers: list[StreamPoller] = field(default_factory=list, init=False)
    schedules: list[Schedule] = field(default_factory=list, init=False)
    emulator: emulator.Emulator | None = field(default=None, init=False)
    # Runs of each schedule, by function and schedule name.
    runs: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    # The function SES events go to: the template's, or the events handler itself until the template has one.
    events_function: Function | None = field(default=None, init=False)
    ses_publisher: SesEventPublisher | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._exit = ExitStack()
        self._saved_environment: dict[str, str | None] = {}
        self._added_paths: list[str] = []
        self._http: ThreadingHTTPServer | None = None
        # Powertools keeps metrics and log keys per process, as Lambda runs one invocation per
        # container at a time: handlers here take turns, so no invocation sees another's state.
        self._invoke_lock = threading.Lock()
        self._runs_changed = threading.Condition()
        self._metrics_sink: IO[str] | None = None
        # The API answers IDENTITY_PATH with it: a client tells this stack from another on the same port.
        self.token = secrets.token_hex(16)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.emulator_port}"

    def start(self) -> LocalStack:
        self.api_port = self.api_port or emulator.free_port(self.host)
        self.emulator_port = self.emulator_port or emulator.free_port(self.host)
        _check_free(self.host, self.emulator_port, "MAILQUEUE_EMULATOR_PORT")
        _check_free(self.host, self.api_port, "MAILQUEUE_API_PORT")
        self.outbox_dir = self.outbox_dir.resolve()
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # moto's web server logs every AWS call at INFO: far too much to read next to the handlers' logs.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        send_rate = ses_simulator.SendRate(self.ses_max_send_rate) if self.ses_max_send_rate else None
        self.emulator = self._exit.enter_context(emulator.running(self.host, self.emulator_port, send_rate))
        # The emulator's state lives in this process: start from nothing, as a fresh `sam deploy` would.
        self.emulator.reset()
        self._set_environment({**emulator.FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url})
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            self._set_environment({name: None})

        session = self.emulator.session()
        overrides = {"SendingIdentities": ",".join(self.identities), **self.parameters}
        overrides.setdefault("LogLevel", "WARNING")
        if self.webhook_url:
            overrides["WebhookUrls"] = self.webhook_url
        secret = self.webhook_secret or _local_webhook_secret()
        self.stack = build(session, overrides=overrides, secret_strings={"WebhookSecret": secret})
        self._verify_identities(session)

        function_ids = list(self.stack.resources("AWS::Serverless::Function"))
        for logical_id in function_ids:
            self._set_environment(self.stack.function_environment(logical_id))
        self._set_environment({**LOCAL_ENVIRONMENT, **self.environment})
        _forget_cached_configuration()
        if self.metrics_file is not None:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            self._metrics_sink = self.metrics_file.open("a", encoding="utf-8")

        self._load_data(session)

        for logical_id in function_ids:
            self.functions[logical_id] = self._load(logical_id)
        self.events_function = self._find_events_function()
        self._install_outbox()
        self._wire_events()
        if self.ses_events and self.events_function is not None and self.events_function.handler is not None:
            self._install_ses_events(self.events_function)

        self._start_api()
        for poller in self.pollers:
            if poller.function.handler is not None:
                self._spawn(f"poll-{poller.queue_arn.rsplit(':', 1)[-1]}", self._poll, poller)
        for schedule in self.schedules:
            if schedule.function.handler is not None:
                self._spawn(f"schedule-{schedule.function.logical_id}", self._tick, schedule)
        for stream_poller in self.stream_pollers:
            if stream_poller.function.handler is not None:
                # From the stream's end: the items restored above are not changes (as a new mapping starts).
                iterator = self._stream_iterator(stream_poller.stream_arn)
                self._spawn(f"stream-{stream_poller.function.logical_id}", self._poll_stream, stream_poller, iterator)
        if self.state_dir is not None:
            self.running().write(self.state_dir)

    def running(self) -> running.RunningStack:
        """What stack.json says about this stack."""
        root = self.state_dir.resolve().parent if self.state_dir is not None else Path.cwd()
        functions = {
            logical_id: {
                "folder": str(function.folder),
                "module": function.module_name,
                "attribute": function.attribute,
                "timeout": function.timeout,
            }
            for logical_id, function in {
                **self.functions,
                **({self.events_function.logical_id: self.events_function} if self.events_function else {}),
            }.items()
            if function.handler is not None
        }
        environment = {name: os.environ[name] for name in self._saved_environment if name in os.environ}
        return running.RunningStack(
            url=self.api_url,
            endpoint_url=self.endpoint_url,
            outbox=str(self.outbox_dir),
            token=self.token,
            pid=os.getpid(),
            root=str(root),
            functions=functions,
            environment=environment,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.state_dir is not None:
            running.remove(self.state_dir, self.token)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self._save_data()
        self._exit.close()
        if self._metrics_sink is not None:
            self._metrics_sink.close()
            self._metrics_sink = None
        for path in self._added_paths:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
        self._added_paths.clear()
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment.clear()
        _forget_cached_configuration()

    def wait(self) -> None:
        """Block until ``stop()`` is called (from a signal handler, say)."""
        while not self._stop.wait(0.5):
            pass

    # --- data kept across restarts -----------------------------------------------------------------------

    @property
    def data_dir(self) -> Path | None:
        return self.state_dir / "data" if self.persist and self.state_dir is not None else None

    def _load_data(self, session: Any) -> None:
        data_dir = self.data_dir
        if data_dir is None or self.stack is None:
            return
        if self.clean:
            shutil.rmtree(data_dir, ignore_errors=True)
            for path in self.outbox_dir.glob("*.eml"):
                path.unlink()
            log.info("starting clean: no data kept from earlier runs")
            return
        counts = snapshot.restore(session, self.endpoint_url, self.stack, data_dir)
        if counts.items or counts.objects:
            log.info("restored   %s from %s", counts, _relative(data_dir))
        # Their SQS messages went with the emulator: publish them again now, rather than after their deadline.
        emails = list(snapshot.queued_emails(session, self.endpoint_url, self.stack.names["EmailsTable"]))
        if emails:
            from mailqueue import aws  # noqa: PLC0415 - after the environment is set
            from mailqueue.queue import Publication, SendQueue  # noqa: PLC0415
            from mailqueue.settings import get_settings  # noqa: PLC0415

            _forget_cached_configuration()
            queue = SendQueue(get_settings(), aws.client("sqs"))
            queue.publish([Publication(e["id"], e["priority"], snapshot.delay_until(e["send_at"])) for e in emails])

    def _save_data(self) -> None:
        data_dir = self.data_dir
        if data_dir is None or self.stack is None or self.emulator is None:
            return
        try:
            counts = snapshot.save(self.emulator.session(), self.endpoint_url, self.stack, data_dir)
        except Exception:
            log.error("could not save the local data:\n%s", _short_trace())
            return
        log.info("saved      %s to %s", counts, _relative(data_dir))

    # --- building -----------------------------------------------------------------------------------------

    def _set_environment(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _verify_identities(self, session: Any) -> None:
        sesv2, ses = session.client("sesv2"), session.client("ses")
        for identity in self.identities:
            sesv2.create_email_identity(EmailIdentity=identity)
            if "@" in identity:
                ses.verify_email_identity(EmailAddress=identity)
            else:
                ses.verify_domain_identity(Domain=identity)

    def _load(self, logical_id: str) -> Function:
        assert self.stack is not None
        folder, module_name, attribute = self.stack.function_handler(logical_id)
        properties = self.stack.template["Resources"][logical_id]["Properties"]
        timeout = properties.get("Timeout", self.stack.template.get("Globals", {}).get("Function", {}).get("Timeout"))
        return self._import(Function(logical_id, folder, module_name, attribute, float(timeout or 3)))

    def _import(self, function: Function) -> Function:
        folder, module_name = function.folder, function.module_name
        if not (folder / f"{module_name}.py").exists():
            function.missing = f"{_relative(folder / f'{module_name}.py')} does not exist"
            return function
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
            self._added_paths.append(str(folder))
        # Import afresh, as a new container would: the module builds its settings and clients at import.
        if module_name in sys.modules:
            module = importlib.reload(sys.modules[module_name])
        else:
            module = importlib.import_module(module_name)
        function.handler = getattr(module, function.attribute)
        return function

    def _find_events_function(self) -> Function | None:
        """The function the template subscribes to SES's events, or the events handler when it has none."""
        assert self.stack is not None
        resources = self.stack.template["Resources"]
        for logical_id, function in self.functions.items():
            for event in resources[logical_id]["Properties"].get("Events", {}).values():
                if event.get("Type") in {"EventBridgeRule", "CloudWatchEvent"} and _matches_ses(
                    event.get("Properties", {}).get("Pattern")
                ):
                    return function
        for rule in self.stack.resources("AWS::Events::Rule").values():
            if not _matches_ses(rule.get("Properties", {}).get("EventPattern")):
                continue
            for target in rule["Properties"].get("Targets", []):
                arn = target.get("Arn")
                if isinstance(arn, dict) and arn.get("Fn::GetAtt", [None])[0] in self.functions:
                    return self.functions[arn["Fn::GetAtt"][0]]
        module_name, attribute = EVENTS_HANDLER.rsplit(".", 1)
        for function in self.functions.values():
            if (function.module_name, function.attribute) == (module_name, attribute):
                return function
        if not self.ses_events:
            return None
        return self._import(Function("EventsFunction", EVENTS_FOLDER, module_name, attribute, 30.0))

    def _wire_events(self) -> None:
        assert self.stack is not None
        queue_ids = {arn: logical_id for logical_id, arn in self.stack.arns.items()}
        for logical_id, function in self.functions.items():
            events = self.stack.template["Resources"][logical_id]["Properties"].get("Events", {})
            for name, event in events.items():
                kind = event["Type"]
                if kind in {"Schedule", "ScheduleV2"}:
                    # Only its Input matters here: the Scheduler's role and group exist on AWS alone.
                    schedule_input = self.stack.resolve(event.get("Properties", {}).get("Input"))
                    self.schedules.append(Schedule(function, self.requeue_seconds, name, schedule_input))
                    continue
                properties = self.stack.resolve(event.get("Properties", {}))
                if kind == "HttpApi":
                    self.routes.append(
                        Route.of(properties.get("Method", "ANY"), properties.get("Path", "/{proxy+}"), function)
                    )
                elif kind == "SQS":
                    arn = properties["Queue"]
                    self.pollers.append(
                        Poller(
                            function=function,
                            queue_url=self.stack.names[queue_ids[arn]],
                            queue_arn=arn,
                            batch_size=min(10, int(properties.get("BatchSize", 10))),
                            reports_item_failures="ReportBatchItemFailures"
                            in properties.get("FunctionResponseTypes", []),
                            sets_visibility=self.stack.names[queue_ids[arn]]
                            in self.stack.function_environment(logical_id).values(),
                        )
                    )
                elif kind == "DynamoDB":
                    self.stream_pollers.append(
                        StreamPoller(
                            function=function,
                            stream_arn=properties["Stream"],
                            batch_size=int(properties.get("BatchSize", 100)),
                            passes=lambda_events.stream_filter(properties.get("FilterCriteria")),
                            reports_item_failures="ReportBatchItemFailures"
                            in properties.get("FunctionResponseTypes", []),
                            retries=int(properties.get("MaximumRetryAttempts", STREAM_RETRIES)),
                        )
                    )

    # --- invoking -----------------------------------------------------------------------------------------

    def invoke(self, function: Function, event: dict[str, Any]) -> Any:
        """Call a handler in-process with a Lambda context, one invocation at a time."""
        if function.handler is None:
            raise RuntimeError(f"{function.logical_id} has no handler: {function.missing}")
        with self._invoke_lock:
            # The invocation starts once the one before it ended: its timeout counts from here, as on
            # Lambda, not from when it began waiting for its turn.
            context = lambda_events.LambdaContext(
                function_name=f"mailqueue-{function.logical_id}", timeout_seconds=function.timeout
            )
            sink = self._metrics_sink
            redirect = contextlib.redirect_stdout(sink) if sink is not None else contextlib.nullcontext()
            with redirect:
                try:
                    return function.handler(event, context)
                finally:
                    if sink is not None:
                        sink.flush()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, poller: Poller) -> None:
        assert self.emulator is not None
        sqs = self.emulator.client("sqs")
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=poller.queue_url,
                    MaxNumberOfMessages=poller.batch_size,
                    AttributeNames=["All"],
                    WaitTimeSeconds=0,
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("could not receive from %s", poller.queue_url)
                self._stop.wait(1)
                continue
            if not messages:
                self._stop.wait(self.poll_interval)
                continue
            self._deliver(sqs, poller, messages)

    def _deliver(self, sqs: Any, poller: Poller, messages: list[dict[str, Any]]) -> None:
        by_id = {message["MessageId"]: message for message in messages}
        try:
            answer = self.invoke(poller.function, lambda_events.sqs_event(messages, poller.queue_arn))
        except Exception:
            # A function error fails the whole batch, as Lambda does.
            log.error("%s failed a batch of %d:\n%s", poller.function.logical_id, len(messages), _short_trace())
            failed = set(by_id)
            answered = False
        else:
            answered = True
            failed = set()
            if poller.reports_item_failures and isinstance(answer, dict):
                failed = {item.get("itemIdentifier") for item in answer.get("batchItemFailures") or []}
                # An unknown or empty identifier makes Lambda treat the whole batch as failed.
                if not failed <= set(by_id):
                    failed = set(by_id)
        done = [by_id[message_id] for message_id in by_id if message_id not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=poller.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        retry = [by_id[message_id] for message_id in failed]
        if retry and not (poller.sets_visibility and answered):
            sqs.change_message_visibility_batch(
                QueueUrl=poller.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": LOCAL_RETRY_VISIBILITY_SECONDS,
                    }
                    for i, m in enumerate(retry)
                ],
            )

    # --- DynamoDB streams -----------------------------------------------------------------------------------

    def _stream_iterator(self, stream_arn: str) -> str:
        assert self.emulator is not None
        streams = self.emulator.client("dynamodbstreams")
        [shard] = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        iterator: str = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
        )["ShardIterator"]
        return iterator

    def _poll_stream(self, poller: StreamPoller, iterator: str) -> None:
        """Read the stream as Lambda's event source does: records in order, filtered, in batches; a batch whose
        records failed is handed over again from the first that failed, until it succeeds or its retries run out."""
        assert self.emulator is not None
        streams = self.emulator.client("dynamodbstreams")
        pending: list[dict[str, Any]] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    answer = streams.get_records(ShardIterator=iterator)
                except Exception:
                    if self._stop.is_set():
                        return
                    log.exception("could not read the stream %s", poller.stream_arn)
                    self._stop.wait(1)
                    continue
                _forget_stream_iterator(iterator)
                iterator = answer["NextShardIterator"]
                records = lambda_events.dynamodb_stream_event(answer["Records"], poller.stream_arn)["Records"]
                # Filtered records never reach the function (and are not billed).
                try:
                    pending = [record for record in records if poller.passes(record)]
                except Exception:
                    log.error("could not filter %d stream records; skipped:\n%s", len(records), _short_trace())
                    continue
                if not pending:
                    self._stop.wait(self.poll_interval)
                    continue
            batch, rest = pending[: poller.batch_size], pending[poller.batch_size :]
            pending = self._deliver_stream(poller, batch) + rest

    def _deliver_stream(self, poller: StreamPoller, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Invoke with ``batch`` (retrying what failed); the records still to hand over: none, or those of the batch
        from the first that failed when the stop came first."""
        for attempt in range(poller.retries + 1):
            failed_from = self._invoke_stream(poller, batch)
            if failed_from is None:
                poller.delivered += len(batch)
                return []
            batch = batch[failed_from:]
            if self._stop.wait(STREAM_RETRY_SECONDS * (attempt + 1)):
                return batch
        log.error(
            "%s failed %d stream records %d times; dropped (deployed, the on-failure destination describes them)",
            poller.function.logical_id,
            len(batch),
            poller.retries + 1,
        )
        poller.dropped += len(batch)
        return []

    def _invoke_stream(self, poller: StreamPoller, batch: list[dict[str, Any]]) -> int | None:
        """One invocation; the index of the first record to hand over again (Lambda's checkpoint), or None."""
        try:
            answer = self.invoke(poller.function, {"Records": batch})
        except Exception:
            log.error("%s failed a stream batch of %d:\n%s", poller.function.logical_id, len(batch), _short_trace())
            return 0
        if not poller.reports_item_failures or not isinstance(answer, dict):
            return None
        numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
        failed = [item.get("itemIdentifier") for item in answer.get("batchItemFailures") or []]
        if not failed:
            return None
        # An identifier that names no record of the batch fails the whole batch, as on Lambda.
        if not set(failed) <= set(numbers):
            return 0
        return min(numbers.index(number) for number in failed)

    def _tick(self, schedule: Schedule) -> None:
        while not self._stop.wait(schedule.every):
            self.run_schedule(schedule)

    def run_schedule(self, schedule: Schedule) -> None:
        """One run of ``schedule``: its function invoked with its event (its Input), as the Scheduler would."""
        try:
            self.invoke(schedule.function, schedule.event())
        except Exception:
            log.error("%s (%s) failed:\n%s", schedule.function.logical_id, schedule.name, _short_trace())
        key = (schedule.function.logical_id, schedule.name)
        with self._runs_changed:
            self.runs[key] = self.runs.get(key, 0) + 1
            self._runs_changed.notify_all()

    def wait_for_runs(self, logical_id: str, count: int, timeout: float = 30.0) -> bool:
        """Wait until every schedule of the function ``logical_id`` has run ``count`` more times (each of the
        requeue function's schedules runs one group of shards: a run over every shard takes one of each)."""
        keys = [
            (each.function.logical_id, each.name) for each in self.schedules if each.function.logical_id == logical_id
        ]
        with self._runs_changed:
            targets = {key: self.runs.get(key, 0) + count for key in keys}
            return self._runs_changed.wait_for(
                lambda: bool(targets) and all(self.runs.get(key, 0) >= target for key, target in targets.items()),
                timeout,
            )

    # --- the outbox ---------------------------------------------------------------------------------------

    def _install_outbox(self) -> None:
        """Write what SES accepted to the outbox, from the SES client the sender shares (mailqueue.aws)."""
        from mailqueue import aws  # noqa: PLC0415 - after the environment is set

        events = aws.client("sesv2").meta.events
        events.register("before-parameter-build.sesv2.SendEmail", _remember_params, unique_id="mailqueue-outbox-params")
        events.register("before-call.sesv2.SendEmail", _simulated_failure, unique_id="mailqueue-send-failures")
        events.register("after-call.sesv2.SendEmail", self._write_outbox, unique_id="mailqueue-outbox-write")

    def _write_outbox(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        params = context.get(_PARAMS_KEY) or {}
        if getattr(http_response, "status_code", 500) >= 300:
            return
        raw = params.get("Content", {}).get("Raw", {}).get("Data")
        if raw is None:
            return
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        tags = {tag.get("Name"): tag.get("Value") for tag in params.get("EmailTags", [])}
        name = _safe_name(tags.get("email_id") or parsed.get("MessageId") or str(time.time_ns()))
        target = self.outbox_dir / f"{name}.eml"
        partial = target.with_suffix(".eml.partial")
        partial.write_bytes(data)
        partial.replace(target)  # readers never see half a message
        log.info("sent      %s -> %s", name, _relative(target))

    # --- SES events ---------------------------------------------------------------------------------------

    def _install_ses_events(self, function: Function) -> None:
        """After each send SES accepted, its events go to ``function`` (from a thread of their own)."""
        from mailqueue import aws  # noqa: PLC0415 - after the environment is set

        publisher = SesEventPublisher(lambda event: self.invoke(function, event))
        self.ses_publisher = publisher
        client = aws.client("sesv2")
        region = client.meta.region_name or "us-east-1"

        def emit(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            params = context.get(_PARAMS_KEY) or {}
            if getattr(http_response, "status_code", 500) >= 300 or not parsed.get("MessageId"):
                return
            tags = {tag.get("Name"): tag.get("Value") for tag in params.get("EmailTags", [])}
            events = ses_simulator.events_for_send(params, str(parsed["MessageId"]), region=region)
            publisher.put(str(tags.get("email_id") or parsed["MessageId"]), events)

        client.meta.events.register("after-call.sesv2.SendEmail", emit, unique_id="mailqueue-ses-events")
        self._spawn("ses-events", publisher.run, self._stop)

    # --- the API ------------------------------------------------------------------------------------------

    def _start_api(self) -> None:
        if not self.routes:
            return
        stack = self

        class Handler(_ApiRequestHandler):
            local = stack

        self._http = _QuietServer((self.host, self.api_port), Handler)
        self._http.daemon_threads = True
        server = self._http
        self._spawn("api", server.serve_forever)

    def handle_http(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request through the API function, as API Gateway's HTTP API would pass it."""
        parts = urlsplit(target)
        route = min(
            (route for route in self.routes if route.matches(method, parts.path)),
            key=lambda route: route.specificity,
            default=None,
        )
        if route is None or route.function.handler is None:
            return 404, {"content-type": "application/json"}, b'{"message":"Not Found"}'
        event = lambda_events.http_api_event(
            method,
            parts.path,
            body,
            headers,
            parts.query,
            route_key=route.key,
            path_parameters=route.parameters(parts.path),
        )
        refused = _too_large_for_lambda(event)
        if refused is not None:
            return refused
        try:
            answer = self.invoke(route.function, event)
        except Exception:
            log.error("%s failed:\n%s", route.function.logical_id, _short_trace())
            return 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
        return _http_answer(answer)

    # --- what to tell the user ----------------------------------------------------------------------------

    def describe(self) -> list[str]:
        assert self.stack is not None
        lines = [
            f"emulator   {self.endpoint_url}  (moto: DynamoDB and its streams, SQS, SES, S3, EventBridge)",
            f"api        {self.api_url}",
            f"outbox     {_relative(self.outbox_dir)}",
        ]
        lines += [f"table      {name}" for logical_id, name in self.stack.names.items() if logical_id.endswith("Table")]
        for poller in self.pollers:
            target = poller.function.logical_id
            lines.append(f"queue      {poller.queue_url}  -> {target} (batches of {poller.batch_size})")
        for schedule in self.schedules:
            given = f" with {schedule.input}" if schedule.input else ""
            lines.append(
                f"schedule   {schedule.function.logical_id} ({schedule.name}) every {schedule.every:g}s{given}"
            )
        for stream_poller in self.stream_pollers:
            lines.append(
                f"stream     {stream_poller.stream_arn.split('/')[1]}  -> {stream_poller.function.logical_id} "
                f"(filtered, batches of {stream_poller.batch_size})"
            )
        if "StatusEventBus" in self.stack.names:
            statuses = self.stack.parameters.get("PublishStatuses", "")
            lines.append(f"events     bus {self.stack.names['StatusEventBus']}: status changes ({statuses})")
        lines.append(f"identities {', '.join(self.identities)}")
        lines += self._describe_webhooks()
        lines += self._describe_ses_events()
        if self.environment:
            lines.append(
                "settings   " + " ".join(f"{name}={value}" for name, value in sorted(self.environment.items()))
            )
        if self.metrics_file is not None:
            lines.append(f"metrics    {_relative(self.metrics_file)}")
        if self.data_dir is not None:
            lines.append(
                f"data       {_relative(self.data_dir)}  (kept across restarts; `make dev CLEAN=1` starts empty)"
            )
        lines += [f"missing    {f.logical_id}: {f.missing}" for f in self.functions.values() if f.missing]
        return lines

    def _describe_webhooks(self) -> list[str]:
        if not self.webhook_url:
            return ["webhooks   off (MAILQUEUE_WEBHOOK_URL=http://127.0.0.1:<port>/<path> turns them on)"]
        function = self.functions.get("WebhookFunction")
        if function is None or function.handler is None:
            missing = function.missing if function else "no WebhookFunction (is PublishStatuses none?)"
            return [f"webhooks   off: {missing}"]
        secret = "the default (MAILQUEUE_WEBHOOK_SECRET)" if not self.webhook_secret else "MAILQUEUE_WEBHOOK_SECRET"
        return [f"webhooks   every status event -> {self.webhook_url}, signed with {secret}"]

    def _describe_ses_events(self) -> list[str]:
        function = self.events_function
        if not self.ses_events:
            return ["ses events off: emails stay sent"]
        if function is None or function.handler is None:
            return [f"ses events off: {function.missing if function else 'no events function'}"]
        target = function.logical_id if function.logical_id in self.functions else EVENTS_HANDLER
        width = max(len(addresses) for addresses, _ in ses_simulator.SPECIAL_ADDRESSES)
        return [
            f"ses events -> {target}: every email is delivered, except to",
            *(f"             {addresses.ljust(width)}  {fate}" for addresses, fate in ses_simulator.SPECIAL_ADDRESSES),
        ]

    def example_sender(self) -> str:
        identity = self.identities[0] if self.identities else "example.com"
        return identity if "@" in identity else f"app@{identity}"

    def first_curl(self) -> str:
        email = {
            "from": self.example_sender(),
            "to": ["you@example.org"],
            "subject": "Hello from mailqueue",
            "text": "It works.",
        }
        return f"curl -sS {self.api_url}/emails -H 'content-type: application/json' -d '{json.dumps(email)}'"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early (curl | head) is not an error of the API.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _ApiRequestHandler(BaseHTTPRequestHandler):
    local: LocalStack
    protocol_version = "HTTP/1.1"
    server_version = "mailqueue-local"

    def _serve(self) -> None:
        if self.command == "GET" and urlsplit(self.path).path == running.IDENTITY_PATH:
            identity = {"token": self.local.token, "url": self.local.api_url}
            self._answer(200, {"content-type": "application/json"}, json.dumps(identity).encode())
            return
        length = int(self.headers.get("content-length") or 0)
        from mailqueue.web import HTTP_API_MAX_BODY_BYTES, TOO_LARGE_HINT, error_payload  # noqa: PLC0415

        if length > HTTP_API_MAX_BODY_BYTES:
            # API Gateway's HTTP API refuses it before any function runs.
            message = f"the body is {length} bytes; HTTP APIs take at most {HTTP_API_MAX_BODY_BYTES}: {TOO_LARGE_HINT}"
            payload = error_payload("payload_too_large", message)
            self._answer(413, {"content-type": "application/json"}, json.dumps(payload).encode(), close=True)
            return
        body = self.rfile.read(length) if length else None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        status, answer_headers, answer = self.local.handle_http(self.command, self.path, headers, body)
        self._answer(status, answer_headers, answer)

    def _answer(self, status: int, headers: dict[str, str], body: bytes, close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:
        log.info("api       %s", format % args)


def _too_large_for_lambda(event: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
    """A 413 for an event larger than a synchronous Lambda invocation takes (6 MB), as deployed it never runs.

    Measured as the event's JSON with non-ASCII characters as UTF-8 (the smaller spelling Lambda may receive).
    Deployed, Lambda refuses such an invocation and API Gateway answers with an error of its own: the
    local stack answers in the API's error shape, saying what to do.
    """
    from mailqueue.web import LAMBDA_MAX_EVENT_BYTES, TOO_LARGE_HINT, error_payload  # noqa: PLC0415

    size = len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size <= LAMBDA_MAX_EVENT_BYTES:
        return None
    message = (
        f"the request makes a {size}-byte Lambda event; a function invoked through the API takes at most "
        f"{LAMBDA_MAX_EVENT_BYTES}: {TOO_LARGE_HINT}"
    )
    return 413, {"content-type": "application/json"}, json.dumps(error_payload("payload_too_large", message)).encode()


def _http_answer(answer: Any) -> tuple[int, dict[str, str], bytes]:
    """A Lambda proxy answer (payload format 2.0) as status, headers and bytes."""
    if not isinstance(answer, dict) or "statusCode" not in answer:
        # HTTP API treats any other value as a 200 with that value as the JSON body.
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
    headers = {str(name).lower(): str(value) for name, value in (answer.get("headers") or {}).items()}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers[str(name).lower()] = ",".join(str(value) for value in values)
    if answer.get("cookies"):
        headers["set-cookie"] = ", ".join(answer["cookies"])
    raw = answer.get("body") or ""
    body = base64.b64decode(raw) if answer.get("isBase64Encoded") else str(raw).encode()
    return int(answer["statusCode"]), headers, body


_PARAMS_KEY = "mailqueue_outbox_params"


def _remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    # after-call sees the response but not the request: keep the request in its (per-call) context.
    context[_PARAMS_KEY] = params


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _simulated_failure(context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
    """SES's refusal of a send to a failing domain (ses_simulator.SEND_FAILURES), as botocore would parse it."""
    failure = ses_simulator.send_failure(context.get(_PARAMS_KEY) or {})
    if failure is None:
        return None
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    status, code, message = failure
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    return AWSResponse("https://email.us-east-1.amazonaws.com/", status, {}, _Body(b"")), parsed


def _matches_ses(pattern: Any) -> bool:
    """An EventBridge pattern that takes SES's events (source aws.ses)."""
    return isinstance(pattern, dict) and "aws.ses" in json.dumps(pattern.get("source"))


def _forget_stream_iterator(iterator: str) -> None:
    """Drop a shard iterator that was read: moto's stream backend (in this process) keeps every one it handed out,
    and the stream is read a few times a second for as long as the stack runs."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends  # noqa: PLC0415 - dev tooling only

    for backends in dynamodbstreams_backends.values():
        for backend in backends.values():
            backend.shard_iterators.pop(iterator, None)


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:200] or "email"


def _forget_cached_configuration() -> None:
    """Settings and clients are cached per process; the next import builds them from the new environment."""
    from mailqueue import aws  # noqa: PLC0415
    from mailqueue.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    aws.forget()


def _check_free(host: str, port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: a port a stopped stack left in TIME_WAIT is free to start again at once.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(
                f"{host}:{port} is in use; stop what holds it or choose another port with {variable}"
            ) from None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _short_trace() -> str:
    return "".join(traceback.format_exc(limit=8)).rstrip()


# --- `python -m mailqueue_dev.local` --------------------------------------------------------------------------


def _local_webhook_secret() -> str:
    from mailqueue.webhooks import LOCAL_SECRET  # noqa: PLC0415 - the layer is on the path once the stack runs

    return LOCAL_SECRET


# The webhook function's timings, to shorten locally (WEBHOOK_BACKOFF_BASE_SECONDS=1 make dev).
_WEBHOOK_SETTINGS = (
    "WEBHOOK_BACKOFF_BASE_SECONDS",
    "WEBHOOK_BACKOFF_MAX_SECONDS",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_TIMEOUT_SECONDS",
)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


# Settings that name resources come from what the local stack built; the others may be tuned from the shell.
_BUILT_SETTINGS = frozenset(
    {
        "table_name",
        "idempotency_table_name",
        "send_queue_url",
        "high_priority_queue_url",
        "attachments_bucket",
        "sending_identities",  # MAILQUEUE_IDENTITIES: they are verified in the emulator too
        "status_event_bus",
        "publish_statuses",  # PUBLISH_STATUSES: the template's parameter, which its stream filter follows too
    }
)


def tuned_settings(env: Mapping[str, str]) -> dict[str, str]:
    """Settings given in the shell (``BACKOFF_BASE_SECONDS=2 make dev``): they win over the template's values."""
    from mailqueue.settings import Settings  # noqa: PLC0415

    names = [name.upper() for name in Settings.model_fields if name not in _BUILT_SETTINGS]
    return {name: env[name] for name in [*names, *_WEBHOOK_SETTINGS] if env.get(name)}


def from_environment() -> LocalStack:
    identities = tuple(
        part.strip() for part in os.environ.get("MAILQUEUE_IDENTITIES", "example.com").split(",") if part.strip()
    )
    return LocalStack(
        api_port=int(_env_float("MAILQUEUE_API_PORT", DEFAULT_API_PORT)),
        emulator_port=int(_env_float("MAILQUEUE_EMULATOR_PORT", DEFAULT_EMULATOR_PORT)),
        outbox_dir=Path(os.environ.get("MAILQUEUE_OUTBOX") or DEFAULT_OUTBOX),
        requeue_seconds=_env_float("MAILQUEUE_REQUEUE_SECONDS", DEFAULT_REQUEUE_SECONDS),
        identities=identities,
        parameters={
            "LogLevel": os.environ.get("MAILQUEUE_LOG_LEVEL", "WARNING").upper(),
            **({"PublishStatuses": os.environ["PUBLISH_STATUSES"]} if os.environ.get("PUBLISH_STATUSES") else {}),
        },
        environment=tuned_settings(os.environ),
        metrics_file=Path(".mailqueue") / "metrics.log",
        state_dir=Path(running.STATE_DIR_NAME),
        persist=True,
        clean=os.environ.get("MAILQUEUE_CLEAN", "").strip() not in {"", "0", "false", "no", "off"},
        ses_events=os.environ.get("MAILQUEUE_SES_EVENTS", "1").strip() not in {"0", "false", "no", "off"},
        webhook_url=os.environ.get("MAILQUEUE_WEBHOOK_URL", "").strip() or None,
        webhook_secret=os.environ.get("MAILQUEUE_WEBHOOK_SECRET", ""),
        ses_max_send_rate=_env_float("MAILQUEUE_SES_MAX_SEND_RATE", 0.0) or None,
    )


def cli_hint(root: Path | None = None) -> str:
    """How to run the CLI from ``root`` (where `make dev` was started): the installed one, relative when it can be."""
    installed = Path(sys.executable).parent / "mailqueue"
    if not installed.exists():
        return "mailqueue"
    try:
        return str(installed.relative_to((root or Path.cwd()).resolve()))
    except ValueError:
        return str(installed)


def banner(local: LocalStack) -> str:
    """What `make dev` prints once the stack is up: where everything is, and commands that work as printed."""
    root = local.state_dir.resolve().parent if local.state_dir is not None else Path.cwd()
    cli = cli_hint(root)
    lines = ["mailqueue is running locally. Ctrl-C stops it."]
    lines += [f"  {line}" for line in local.describe()]
    lines += [
        "",
        "Send a first email:",
        f"  {local.first_curl()}",
        f"Then follow it:  {cli} status <id>    and read it:  {cli} outbox",
    ]
    if local.ses_publisher is not None:
        lines.append(f"To see a bounce, send to bounce@{ses_simulator.SIMULATOR_DOMAIN}; then:  {cli} suppressions")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _stop_on_signals(local: LocalStack) -> Iterator[None]:
    def stop(signum: int, _frame: FrameType | None) -> None:
        local._stop.set()  # the main thread sees it in wait() and stops everything
        # A second Ctrl-C ends the process at once, should stopping hang.
        signal.signal(signum, signal.SIG_DFL)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> int:
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    log.setLevel(logging.INFO)
    # Powertools warns on every invocation that adds no metric; on Lambda that goes unseen.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    local = from_environment()
    try:
        local.start()
    except PortInUse as error:
        print(f"mailqueue: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    with _stop_on_signals(local):
        print(banner(local), flush=True)
        try:
            local.wait()
        finally:
            print("stopping…", file=sys.stderr, flush=True)
            local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
