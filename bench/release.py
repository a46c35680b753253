"""`make bench-release`: what releasing scheduled email costs, and how fast one requeue run releases it.

    .venv/bin/python -m bench.release [--emails N] [--json PATH]

In a fresh emulator (moto server mode, in this process) with the template's resources, ``N`` emails are
enqueued scheduled for each of four moments a minute apart. A requeue run (the function's domain code,
:class:`mailqueue.requeue.Requeuer`) at the first moment releases the first ones one at a time
(``REQUEUE_CONCURRENCY`` 1); a run at the second moment releases the others at the default concurrency.
At the third moment, the template's groups of shards (one schedule each, see
:mod:`mailqueue.shardgroups`) each release theirs in a run of their own, one group after the other and
one email at a time, so that each group's CPU per email is measured; at the fourth, the groups' runs go
side by side (threads), as the schedules start them on AWS, to show that they release every email once
between them: each at a quarter of the default concurrency here, so that no more writes are in flight
than in the run at the default concurrency, on clients that wait up to a minute for an answer (moto
applies one DynamoDB request at a time and reads the whole table for an index query: four runs' queries
at once outwait the functions' 5-second read timeout on a loaded machine). For each: the wall time, the
release rate, the AWS calls per email (counted on the clients), and for the one-at-a-time runs the CPU
the function's own thread spent per email (``time.thread_time``: moto's work, in its own threads, is not
counted).

The sweep (:mod:`mailqueue.sweeping`) is held back (``SWEEP_LAG_SECONDS`` far ahead): it examines each
email once, whatever its path, and is measured by ``make bench``; here only the release from
``by-deadline`` is.

Locally moto answers a write in a few milliseconds of this machine's CPU, shared with the function's
threads (and, side by side, with the other groups' runs: here they share one interpreter, on AWS each
has its own invocation and vCPU), so the local rate is a floor; docs/capacity.md works out the rate on
AWS from these figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from mailqueue import aws, clock
from mailqueue.blobs import BlobStore
from mailqueue.queue import SendQueue
from mailqueue.requeue import Requeuer
from mailqueue.service import Mailqueue
from mailqueue.settings import Settings, get_settings
from mailqueue.shardgroups import EVERY_SHARD, ShardGroup, shard_group_of
from mailqueue.store import EmailStore, SuppressionList
from mailqueue_dev import emulator as emulator_module
from mailqueue_dev.template import load_template

from bench.send_rate import _environment, deploy

EMAILS = 400
# Far enough that no email of the bench reaches its sweep point (see the module's docstring).
SWEEP_LAG_SECONDS = 86_400


def _email(index: int, send_at: str) -> dict[str, Any]:
    return {
        "from": "Shop <app@example.com>",
        "to": [f"customer{index}@example.org"],
        "subject": f"Your receipt {index}",
        "text": "Thanks for your order.",
        "send_at": send_at,
    }


class Calls:
    """AWS calls made through the clients, by operation."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1


def template_groups() -> list[ShardGroup]:
    """The groups of shards of the template's requeue schedules (each schedule's Input)."""
    events = load_template()["Resources"]["RequeueFunction"]["Properties"]["Events"]
    inputs = [event["Properties"]["Input"] for event in events.values() if event["Type"] == "ScheduleV2"]
    return sorted((shard_group_of(json.loads(text)) for text in inputs), key=lambda group: group.index)


def _release(
    settings: Settings, calls: Calls, at: Any, cpu: Callable[[], float], group: ShardGroup = EVERY_SHARD
) -> dict[str, Any]:
    dynamodb, sqs = aws.client("dynamodb"), aws.client("sqs")
    requeuer = Requeuer(settings, EmailStore(settings, dynamodb), SendQueue(settings, sqs))
    calls.counts.clear()
    began, began_cpu = time.perf_counter(), cpu()
    summary = requeuer.run(lambda: 3_600_000, now=at, group=group)
    seconds, cpu_seconds = time.perf_counter() - began, cpu() - began_cpu
    released = summary.requeued_total
    return {
        "shards": summary.shards,
        "concurrency": settings.requeue_concurrency,
        "released": released,
        "publish_failures": summary.publish_failures,
        "seconds": round(seconds, 2),
        "emails_per_second": round(released / seconds, 1),
        "cpu_ms_per_email_main_thread": round(1000 * cpu_seconds / max(released, 1), 2),
        "calls_per_email": {name: round(count / max(released, 1), 3) for name, count in sorted(calls.counts.items())},
    }


def measure(emails: int, progress: Callable[[str], None]) -> dict[str, Any]:
    load_at_start = [round(load, 2) for load in os.getloadavg()]
    with _environment(), emulator_module.running() as emulator:
        deploy(emulator, {"SWEEP_LAG_SECONDS": str(SWEEP_LAG_SECONDS)})
        settings = get_settings()
        service = Mailqueue(
            settings=settings,
            store=EmailStore(settings, aws.client("dynamodb")),
            queue=SendQueue(settings, aws.client("sqs")),
            blobs=BlobStore(settings, aws.client("s3")),
            suppressions=SuppressionList(settings, aws.client("dynamodb")),
        )
        first = clock.now().replace(microsecond=0) + timedelta(hours=1)
        second, third, fourth = (first + timedelta(minutes=minutes) for minutes in (1, 2, 3))
        for moment in (first, second, third, fourth):
            progress(f"enqueueing {emails} emails scheduled for {clock.iso(moment)}")
            for start in range(0, emails, 100):
                batch = [_email(index, clock.iso(moment)) for index in range(start, min(emails, start + 100))]
                result = service.enqueue_batch(batch)
                assert all(item.id for item in result.results), "the bench's emails must all be accepted"

        calls = Calls()
        calls.watch(aws.client("dynamodb"))
        calls.watch(aws.client("sqs"))
        progress("releasing the first moment's emails one at a time")
        one = _release(settings.model_copy({"requeue_concurrency": 1}), calls, first, time.thread_time)
        progress(f"releasing the second moment's emails {settings.requeue_concurrency} at a time")
        many = _release(settings, calls, second, time.thread_time)
        # The main thread only waits while the pool works: its CPU says nothing here.
        many.pop("cpu_ms_per_email_main_thread")
        groups = template_groups()
        progress(f"releasing the third moment's emails by {len(groups)} groups of shards in turn, one at a time")
        alone = settings.model_copy({"requeue_concurrency": 1})
        per_group = [_release(alone, calls, third, time.thread_time, group) for group in groups]
        progress(f"releasing the fourth moment's emails by {len(groups)} groups side by side")
        shared = settings.model_copy({"requeue_concurrency": max(1, settings.requeue_concurrency // len(groups))})
        side_by_side = _side_by_side(shared, calls, fourth, groups)
        return {
            "emails_per_moment": emails,
            "deadline_shards": settings.deadline_shards,
            # The machine's load (1, 5 and 15 minutes) as the bench began and ended: the CPU figures rise with it.
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
            "one_at_a_time": one,
            "concurrent": many,
            "speed_up": round(many["emails_per_second"] / one["emails_per_second"], 2),
            "groups": len(groups),
            "per_group": per_group,
            "cpu_ms_per_email_per_group": _cpu_per_email(per_group),
            "groups_side_by_side": side_by_side,
        }


def _cpu_per_email(runs: list[dict[str, Any]]) -> float:
    """The groups' CPU per released email, all their runs together."""
    released = sum(int(run["released"]) for run in runs)
    cpu_ms = sum(float(run["cpu_ms_per_email_main_thread"]) * int(run["released"]) for run in runs)
    return round(cpu_ms / max(released, 1), 2)


def _side_by_side(settings: Settings, calls: Calls, at: Any, groups: list[ShardGroup]) -> dict[str, Any]:
    """One run per group at once, as the schedules start them: every due email released once between them."""
    patient = Config(read_timeout=60, max_pool_connections=64, retries={"total_max_attempts": 1})
    dynamodb, sqs = boto3.client("dynamodb", config=patient), boto3.client("sqs", config=patient)
    calls.watch(dynamodb)
    calls.watch(sqs)
    requeuer = Requeuer(settings, EmailStore(settings, dynamodb), SendQueue(settings, sqs))
    calls.counts.clear()
    began = time.perf_counter()
    with ThreadPoolExecutor(len(groups), thread_name_prefix="group") as pool:
        summaries = list(pool.map(lambda group: requeuer.run(lambda: 3_600_000, now=at, group=group), groups))
    seconds = time.perf_counter() - began
    released = sum(summary.requeued_total for summary in summaries)
    return {
        "concurrency_per_group": settings.requeue_concurrency,
        "released": released,
        "released_per_group": [summary.requeued_total for summary in summaries],
        # emails one group's run found taken by another: none, as no two groups share a shard
        "skipped": sum(summary.skipped for summary in summaries),
        "publish_failures": sum(summary.publish_failures for summary in summaries),
        "seconds": round(seconds, 2),
        "emails_per_second": round(released / seconds, 1),
        "calls_per_email": {name: round(count / max(released, 1), 3) for name, count in sorted(calls.counts.items())},
    }


def report(results: dict[str, Any]) -> str:
    lines = [f"release of {results['emails_per_moment']} scheduled emails due at one moment (local, moto):"]
    for name in ("one_at_a_time", "concurrent"):
        figures = results[name]
        calls = ", ".join(f"{op} {count}" for op, count in figures["calls_per_email"].items())
        cpu = figures.get("cpu_ms_per_email_main_thread")
        lines.append(
            f"  {name:<14} concurrency {figures['concurrency']:>2}: {figures['emails_per_second']:>7.1f} emails/s"
            f" ({figures['seconds']} s)"
            + (f", CPU {cpu} ms/email" if cpu is not None else "")
            + f"; calls/email: {calls}"
        )
    lines.append(f"  speed-up: {results['speed_up']}x")
    for run in results["per_group"]:
        lines.append(
            f"  group of shards {run['shards']}, one at a time: {run['released']} released,"
            f" CPU {run['cpu_ms_per_email_main_thread']} ms/email, {run['emails_per_second']} emails/s"
        )
    together = results["groups_side_by_side"]
    lines.append(
        f"  {results['groups']} groups side by side: {together['released']} released"
        f" ({together['released_per_group']}), {together['skipped']} skipped, {together['emails_per_second']} emails/s"
        f" locally; CPU per email over the groups {results['cpu_ms_per_email_per_group']} ms"
    )
    lines.append(
        f"  load average (1, 5, 15 min): {results['load_average_at_start']} at the start,"
        f" {results['load_average_at_end']} at the end"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=EMAILS, help="emails scheduled for each moment")
    parser.add_argument("--json", type=Path, default=Path("bench/release.json"), help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    results = measure(args.emails, progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
