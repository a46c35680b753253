"""`make bench`: how much of the account's send rate the senders achieve, against an SES that enforces it.

    .venv/bin/python -m bench.send_rate [--seconds N] [--json PATH]

Each scenario builds the template's resources in a fresh emulator whose SES answers
``TooManyRequestsException`` beyond the account's send rate
(:class:`mailqueue_dev.ses_simulator.SendRate`, ``BENCH_SEND_RATE``, the senders' ``SEND_RATE`` the
same), fills the send queues, then runs the sender as Lambda would with the template's default
concurrency: ``SenderMaxConcurrency`` containers per send queue, all at once, each with its own pace
(:class:`mailqueue.sender.Pacer`) and its own view of the high-priority queue, receiving batches of 10
and deleting what it handled, as the event source mapping does. The handlers' domain code runs unchanged
(:class:`mailqueue.sender.Sender`); only the event source mapping is played here, since the local stack
runs one invocation at a time.

After a warm-up, SES's acceptances are counted over a window while every queue that had mail still has
some: achieved / allowed is that rate over ``SendRate``, per priority. Three scenarios, each with the
design in use and with the static split it replaced (each queue's invocations paced at half the rate):

- normal only: the normal-priority queue has mail, the high-priority queue none;
- high only: the reverse;
- both: both queues have mail (high priority should take the rate, normal wait);

and, with the design in use only, normal only with ``SEND_RATE`` set at twice the rate SES enforces, so
that SES throttles.

Beside the rates: SES throttles, DynamoDB writes per email sent (the claim and the outcome: a throttle
should add none), and GetQueueAttributes calls per email (the high-priority backlog, asked at most once a
second per container).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from mailqueue import aws
from mailqueue.blobs import BlobStore
from mailqueue.mailer import Mailer, SendResult
from mailqueue.queue import Backlog, SendQueue
from mailqueue.render import Rendered
from mailqueue.sender import NoTimeLeft, Pacer, Sender, invocation_rate
from mailqueue.service import Mailqueue
from mailqueue.settings import Settings, get_settings
from mailqueue.store import EmailStore, SuppressionList
from mailqueue_dev import emulator as emulator_module
from mailqueue_dev.ses_simulator import SendRate
from mailqueue_dev.template import build, load_template

log = logging.getLogger("bench.send_rate")

SCENARIOS: dict[str, tuple[str, ...]] = {
    "normal only": ("normal",),
    "high only": ("high",),
    "both": ("normal", "high"),
}
DESIGNS = ("adaptive", "static split")
WARM_UP_SECONDS = 3.0
# The account's send rate SES enforces here. Locally every email's work (the sender's and moto's) shares one
# process on a shared machine, at 150 to 350 ms an email under load: at the template's default (14 a second,
# 7 per container) the machine, not the pacing, would bound the rate. At 4 a second (2 per container) it does
# not, so achieved / allowed measures the design. On AWS an email takes about 60 ms of a container's time.
BENCH_SEND_RATE = 4.0
# The scenario that shows throttles: SEND_RATE configured at twice the account's rate.
OVERSTATED = "normal only, SendRate twice the account's"
# Lambda's timeout for the sender (template.yaml): what each batch's time_left counts down from.
SENDER_TIMEOUT_SECONDS = 30.0
GOAL = 0.9


class _Uncounted(Metrics):
    """Metrics that keep nothing: the bench counts for itself, and Powertools' store is shared by threads."""

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Tally:
    """What the containers saw, with the monotonic time of each SES answer."""

    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (when, priority, outcome)
    writes: list[float] = field(default_factory=list)
    queue_asks: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, priority: str, result: SendResult) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), priority, result.outcome.value))


class _CountingMailer(Mailer):
    def __init__(self, settings: Settings, client: Any, tally: Tally, priority: str) -> None:
        super().__init__(settings, client)
        self._tally = tally
        self._priority = priority

    def send(self, email_id: str, rendered: Rendered) -> SendResult:
        result = super().send(email_id, rendered)
        self._tally.answer(self._priority, result)
        return result


def deploy(emulator: Any, environment: dict[str, str]) -> Any:
    """The template's stack on a fresh ``emulator``, this process set up as its functions are (their
    environment, then ``environment`` over it); call inside ``_environment()``, which undoes it."""
    # moto keeps its state per process: start from nothing, as a fresh deployment would.
    emulator.reset()
    os.environ.update({**emulator_module.FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": emulator.endpoint_url})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    session = emulator.session()
    stack = build(session, overrides={"LogLevel": "WARNING"})
    session.client("sesv2", endpoint_url=emulator.endpoint_url).create_email_identity(EmailIdentity="example.com")
    for logical_id in stack.resources("AWS::Serverless::Function"):
        os.environ.update(stack.function_environment(logical_id))
    os.environ.update(environment)
    get_settings.cache_clear()
    aws.forget()
    return stack


@contextmanager
def _environment() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        aws.forget()


def _email(index: int, priority: str) -> dict[str, Any]:
    return {
        "from": "Shop <app@example.com>",
        "to": [f"customer{index}@example.org"],
        "subject": f"Your receipt {index}",
        "text": "Thanks for your order.",
        "priority": priority,
    }


def run_scenario(
    queues: tuple[str, ...],
    design: str,
    send_rate: float,
    concurrency: int,
    seconds: float,
    configured_rate: float | None = None,
) -> dict[str, Any]:
    """One scenario in a fresh emulator: fill ``queues``, run the senders, measure the window. SES enforces
    ``send_rate``; the senders are configured with ``configured_rate`` (``SEND_RATE``), the same by default."""
    limit = SendRate(send_rate)
    with _environment(), emulator_module.running(send_rate=limit) as emulator:
        deploy(emulator, {"SEND_RATE": str(configured_rate or send_rate), "SENDER_CONCURRENCY": str(concurrency)})
        settings = get_settings()

        service = Mailqueue(
            settings=settings,
            store=EmailStore(settings, aws.client("dynamodb")),
            queue=SendQueue(settings, aws.client("sqs")),
            blobs=BlobStore(settings, aws.client("s3")),
            suppressions=SuppressionList(settings, aws.client("dynamodb")),
        )
        # Enough mail that every queue that has some still has some when the window ends.
        per_queue = int(send_rate * (WARM_UP_SECONDS + seconds) * 1.3) + 20
        for priority in queues:
            for start in range(0, per_queue, 100):
                items = [_email(index, priority) for index in range(start, min(per_queue, start + 100))]
                result = service.enqueue_batch(items)
                assert all(item.id for item in result.results), "the bench's emails must all be accepted"

        tally = Tally()
        dynamodb = aws.client("dynamodb")
        for operation in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"):
            dynamodb.meta.events.register(
                f"before-call.dynamodb.{operation}", lambda **_: tally.writes.append(time.monotonic())
            )
        sqs = aws.client("sqs")
        sqs.meta.events.register(
            "before-call.sqs.GetQueueAttributes", lambda **_: tally.queue_asks.append(time.monotonic())
        )

        stop = threading.Event()
        logger = Logger(service="mailqueue-bench", level="ERROR")
        metrics = _Uncounted(namespace="mailqueue-bench")
        threads = []
        adaptive = design == "adaptive"
        for priority in ("normal", "high"):
            for _ in range(concurrency):
                sender = Sender(
                    settings=settings,
                    store=EmailStore(settings, dynamodb),
                    blobs=BlobStore(settings, aws.client("s3")),
                    mailer=_CountingMailer(settings, aws.client("sesv2"), tally, priority),
                    pacer=Pacer(invocation_rate(settings) if adaptive else invocation_rate(settings) / 2),
                    logger=logger,
                    metrics=metrics,
                    high_priority=Backlog(lambda: sqs, settings.high_priority_queue_url).has_mail if adaptive else None,
                )
                thread = threading.Thread(
                    target=_container, args=(sender, sqs, settings.queue_url(priority), priority, stop), daemon=True
                )
                threads.append(thread)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_SECONDS + seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=SENDER_TIMEOUT_SECONDS)
        window = (started + WARM_UP_SECONDS, started + WARM_UP_SECONDS + seconds)
        figures = _figures(tally, window, send_rate, queues)
        figures["configured_send_rate"] = configured_rate or send_rate
        return figures


def _container(sender: Sender, sqs: Any, queue_url: str, priority: str, stop: threading.Event) -> None:
    """One sender container: batches of 10 from its queue, each handled as the handler does, the
    handled messages deleted (the event source mapping's part), the others left to come back."""
    while not stop.is_set():
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            stop.wait(0.2)
            continue
        began = time.monotonic()

        def time_left(began: float = began) -> float:
            return SENDER_TIMEOUT_SECONDS - (time.monotonic() - began)

        done = []
        for message in messages:
            if stop.is_set():
                break
            try:
                sender.handle_message(message["Body"], time_left, message["MessageId"], priority)
            except NoTimeLeft:
                continue
            except Exception:
                log.exception("a message failed")
                continue
            done.append(message)
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )


def _figures(tally: Tally, window: tuple[float, float], send_rate: float, queues: tuple[str, ...]) -> dict[str, Any]:
    start, end = window
    seconds = end - start

    def inside(moment: float) -> bool:
        return start <= moment < end

    answers = [(priority, outcome) for moment, priority, outcome in tally.answers if inside(moment)]
    accepted = {p: sum(1 for q, o in answers if q == p and o == "accepted") for p in ("normal", "high")}
    throttled = sum(1 for _, outcome in answers if outcome == "throttled")
    sent = sum(accepted.values())
    achieved = {p: round(count / seconds, 2) for p, count in accepted.items()}
    total = sum(achieved.values())
    return {
        "queues_with_mail": list(queues),
        "window_seconds": round(seconds, 1),
        "allowed_emails_per_second": send_rate,
        "achieved_emails_per_second": {**achieved, "total": round(total, 2)},
        "achieved_over_allowed": {
            **{p: round(rate / send_rate, 3) for p, rate in achieved.items()},
            "total": round(total / send_rate, 3),
        },
        "high_priority_share_of_sends": round(accepted["high"] / sent, 3) if sent else None,
        "ses_throttles": throttled,
        "ses_throttles_per_email_sent": round(throttled / sent, 3) if sent else None,
        "dynamodb_writes_per_email_sent": round(sum(1 for m in tally.writes if inside(m)) / sent, 2) if sent else None,
        "get_queue_attributes_per_email_sent": (
            round(sum(1 for m in tally.queue_asks if inside(m)) / sent, 3) if sent else None
        ),
    }


def measure(
    seconds: float = 15.0, send_rate: float = BENCH_SEND_RATE, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every scenario, with the design in use and with the static split, at the template's default
    concurrency; and the design in use with SEND_RATE set at twice what SES allows."""
    parameters = load_template()["Parameters"]
    concurrency = int(parameters["SenderMaxConcurrency"]["Default"])
    results: dict[str, Any] = {
        "send_rate": send_rate,
        "sender_max_concurrency": concurrency,
        "goal_achieved_over_allowed": GOAL,
        "scenarios": {},
    }
    for design in DESIGNS:
        for name, queues in SCENARIOS.items():
            if progress is not None:
                progress(f"send rate: {name}, {design} …")
            results["scenarios"][f"{name}, {design}"] = run_scenario(queues, design, send_rate, concurrency, seconds)
    if progress is not None:
        progress(f"send rate: {OVERSTATED} …")
    results["scenarios"][OVERSTATED] = run_scenario(
        ("normal",), "adaptive", send_rate, concurrency, seconds, configured_rate=2 * send_rate
    )
    results["goals"] = goals(results)
    return results


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The send-rate targets, from the design in use: each queue alone gets at least GOAL of the rate;
    with both, high priority gets at least GOAL of it, and all of them together no more than the rate."""
    scenarios = results["scenarios"]
    normal = scenarios["normal only, adaptive"]["achieved_over_allowed"]["normal"]
    high = scenarios["high only, adaptive"]["achieved_over_allowed"]["high"]
    both = scenarios["both, adaptive"]["achieved_over_allowed"]
    checks = [
        ("send rate, normal only: achieved / allowed", normal),
        ("send rate, high only: achieved / allowed", high),
        ("send rate, both: high priority's achieved / allowed", both["high"]),
    ]
    return [{"name": name, "measured": value, "goal": f">= {GOAL}", "met": value >= GOAL} for name, value in checks]


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Send rate against an SES that enforces {results['send_rate']:g} emails/s, "
        f"{results['sender_max_concurrency']} containers per queue (achieved / allowed):",
        f"  {'scenario':<42} {'normal':>7} {'high':>7} {'total':>7} {'throttles':>9} "
        f"{'writes/email':>12} {'GQA/email':>9}",
    ]
    for name, figures in results["scenarios"].items():
        ratio = figures["achieved_over_allowed"]
        lines.append(
            f"  {name:<42} {ratio['normal']:>7.2f} {ratio['high']:>7.2f} {ratio['total']:>7.2f} "
            f"{figures['ses_throttles']:>9} {figures['dynamodb_writes_per_email_sent'] or 0:>12.2f} "
            f"{figures['get_queue_attributes_per_email_sent'] or 0:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="the measured window of each scenario")
    parser.add_argument("--send-rate", type=float, default=BENCH_SEND_RATE, help="the rate SES enforces")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    results = measure(
        args.seconds, args.send_rate, progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True)
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
