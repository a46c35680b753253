"""What a webhook costs: the webhook function's invocations measured against moto and a receiver on 127.0.0.1.

``make bench`` runs :func:`run`; ``python -m bench.webhooks`` alone prints its figures. For batches of 1 and of
10 events (one URL), and for a failed attempt (a receiver answering 500), it measures each invocation's wall
clock, the SQS and Secrets Manager calls the function makes and the bytes it logs, and prices one event's
delivery from bench/prices.json:

- SQS: EventBridge's SendMessage onto the webhook queue, the event source's ReceiveMessage and
  DeleteMessageBatch (one of each per batch), and the function's own calls (ChangeMessageVisibility per
  failed attempt);
- Lambda: one request per batch, and the measured duration at the template's memory;
- CloudWatch Logs: what the function prints (its EMF metric line per invocation);
- Secrets Manager: GetSecretValue once per container per hour (``SECRET_MAX_AGE_SECONDS``), whatever the
  volume: a fixed cost, with the secret's own monthly fee.

The status event itself (PutEvents on the bus) is the events' cost, not counted here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import units

ROOT = Path(__file__).resolve().parents[1]
PRICES = ROOT / "bench" / "prices.json"
SECRET = "bench-webhook-secret"
# Containers at most (the event source's MaximumConcurrency), each reading the secret once an hour.
HOURS_A_MONTH = 730


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _bus_message(n: int) -> dict[str, Any]:
    detail = {
        "schema_version": "1",
        "event_id": f"01BENCH{n:019d}-4",
        "email_id": f"01BENCH{n:019d}",
        "sequence": 4,
        "status": "delivered",
        "previous_status": "sent",
        "reason": None,
        "metadata": {"order": f"A-{n}"},
        "tags": [{"name": "kind", "value": "receipt"}],
        "idempotency_key": None,
        "time": "2026-11-30T19:20:00.123Z",
    }
    return {"version": "0", "source": "mailqueue", "detail-type": "Email Status Changed", "detail": detail}


def measure(batches: int = 30) -> dict[str, Any]:
    """Invoke the webhook handler ``batches`` times per case; per-invocation figures."""
    import boto3  # noqa: PLC0415
    from mailqueue import aws  # noqa: PLC0415
    from mailqueue_dev.lambda_events import LambdaContext, sqs_event  # noqa: PLC0415
    from mailqueue_dev.listen import WebhookReceiver  # noqa: PLC0415
    from mailqueue_dev.template import build, load_template  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    template = load_template()
    function = template["Resources"]["WebhookFunction"]["Properties"]
    memory_mb = int(function.get("MemorySize", template["Globals"]["Function"]["MemorySize"]))
    fake = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    answers = {"status": 204}
    receiver = WebhookReceiver(secret=SECRET, answer=lambda _event: answers["status"])
    with _environment(fake), receiver, mock_aws():
        os.environ.pop("AWS_ENDPOINT_URL", None)
        session = boto3.session.Session(region_name="us-east-1")
        stack = build(
            session, overrides={"WebhookUrls": receiver.url("/hooks")}, secret_strings={"WebhookSecret": SECRET}
        )
        with _environment(stack.function_environment("WebhookFunction")):
            aws.forget()
            folder = str(ROOT / "functions" / "webhook")
            sys.path.insert(0, folder)
            try:
                import importlib  # noqa: PLC0415

                module = (
                    importlib.reload(sys.modules["webhook"])
                    if "webhook" in sys.modules
                    else importlib.import_module("webhook")
                )
                calls: Counter[str] = Counter()

                def count(event_name: str, **_: Any) -> None:
                    calls[event_name.split(".", 2)[-1]] += 1

                aws.client("sqs").meta.events.register("before-call.sqs.*", count)
                aws.client("secretsmanager").meta.events.register("before-call.secrets-manager.*", count)
                sqs = session.client("sqs")
                queue_url, queue_arn = stack.names["WebhookQueue"], stack.arns["WebhookQueue"]
                cases: dict[str, Any] = {}
                for label, size, status in (
                    ("batches of 1", 1, 204),
                    ("batches of 10", 10, 204),
                    ("failed attempt, batches of 10", 10, 500),
                ):
                    answers["status"] = status
                    durations: list[float] = []
                    logged = 0
                    calls.clear()
                    for batch in range(batches):
                        for n in range(size):
                            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(_bus_message(batch * 100 + n)))
                        messages: list[dict[str, Any]] = []
                        while len(messages) < size:
                            messages += sqs.receive_message(
                                QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
                            )["Messages"]
                        event = sqs_event(messages, queue_arn)
                        out = io.StringIO()
                        started = time.perf_counter()
                        with contextlib.redirect_stdout(out):
                            module.handler(event, LambdaContext(function_name="mailqueue-WebhookFunction"))
                        durations.append((time.perf_counter() - started) * 1000)
                        logged += len(out.getvalue().encode())
                        # as the event source does with what succeeded; a failed attempt's message goes too
                        sqs.delete_message_batch(
                            QueueUrl=queue_url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                            ],
                        )
                    cases[label] = {
                        "events_per_invocation": size,
                        "duration_ms_median": statistics.median(durations),
                        "duration_ms_p90": sorted(durations)[int(0.9 * (len(durations) - 1))],
                        "function_calls_per_invocation": {name: count / batches for name, count in calls.items()},
                        "log_bytes_per_invocation": logged / batches,
                    }
            finally:
                sys.path.remove(folder)
                aws.forget()
    return {"memory_mb": memory_mb, "invocations_per_case": batches, "cases": cases}


def usage_per_event(case: dict[str, Any], memory_mb: int, failed: bool = False) -> units.Usage:
    """One event's (or one failed attempt's) use of each billed dimension, for a case of :func:`measure`."""
    size = case["events_per_invocation"]
    own_calls = sum(count for name, count in case["function_calls_per_invocation"].items() if name != "GetSecretValue")
    # EventBridge's SendMessage (the first attempt only), then per batch: ReceiveMessage and DeleteMessageBatch
    # (a failed attempt's message is not deleted), and the function's own SQS calls.
    per_batch = 1 + (0 if failed else 1) + own_calls
    return units.Usage(
        lambda_requests=1 / size,
        lambda_gb_seconds=units.gb_seconds(memory_mb, case["duration_ms_median"]) / size,
        sqs_requests=(0 if failed else 1) + per_batch / size,
        log_bytes=case["log_bytes_per_invocation"] / size,
    )


def costs(measured: dict[str, Any], prices: dict[str, Any]) -> dict[str, Any]:
    """Dollars per million events per URL, by case; the fixed monthly cost of the secret."""
    memory = measured["memory_mb"]
    table: dict[str, dict[str, float]] = {}
    for label, case in measured["cases"].items():
        usage = usage_per_event(case, memory, failed=label.startswith("failed"))
        by_service = {
            name: value
            for name, value in units.cost_per_million(usage, prices).items()
            if name in {"Lambda requests", "Lambda duration", "SQS", "CloudWatch Logs"}
        }
        table[label] = {
            **{name: round(value, 4) for name, value in by_service.items()},
            "total": round(sum(by_service.values()), 4),
        }
    reads = 5 * HOURS_A_MONTH  # MaximumConcurrency containers, one read an hour each, at the most
    fixed = units.price(prices, "secretsmanager_per_secret_month") + reads / 10_000 * units.price(
        prices, "secretsmanager_per_ten_thousand_calls"
    )
    return {"usd_per_million_events_per_url": table, "secrets_manager_usd_per_month_at_most": round(fixed, 3)}


def run(prices: dict[str, Any], batches: int = 30) -> dict[str, Any]:
    measured = measure(batches)
    return {**measured, **costs(measured, prices)}


def report(results: dict[str, Any]) -> str:
    lines = ["Webhooks: USD per million events per URL (the event's PutEvents not included)"]
    for label, by_service in results["usd_per_million_events_per_url"].items():
        case = results["cases"][label]
        parts = ", ".join(f"{name} {value:.3f}" for name, value in by_service.items() if name != "total")
        lines.append(
            f"  {label:<31} {by_service['total']:.3f}  ({parts}; {case['duration_ms_median']:.1f} ms an invocation)"
        )
    lines.append(f"  Secrets Manager, fixed: at most ${results['secrets_manager_usd_per_month_at_most']:.2f} a month")
    return "\n".join(lines)


def main() -> int:
    print(report(run(json.loads(PRICES.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
